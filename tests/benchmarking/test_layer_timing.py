"""esnet_jax.benchmarking.layer_timing: every block of both frameworks, timed on the input the network hands it."""

from __future__ import annotations

import json

import pytest


@pytest.mark.torch
def test_layer_timing_covers_every_block_of_both_frameworks(tmp_path, capsys):
  pytest.importorskip('torch')
  from esnet_jax import layer_timing as layer_timing_command

  assert (
      layer_timing_command.main(
          [
              '--height',
              '16',
              '--width',
              '32',
              '--runs',
              '1',
              '--warmup',
              '0',
              '--compare-torch',
              '--json',
              str(tmp_path / 'l.json'),
          ]
      )
      == 0
  )
  result = json.loads((tmp_path / 'l.json').read_text())
  names = [row['block'] for row in result['blocks']]
  assert names == (
      ['encoder/initial_block']
      + [f'encoder/layers_{i}' for i in range(10)]
      + [f'decoder/layers_{i}' for i in range(6)]
      + ['decoder/output_conv']
  )
  shapes = {row['block']: tuple(row['input_shape']) for row in result['blocks']}
  assert shapes['encoder/initial_block'] == (1, 16, 32, 3)
  assert shapes['encoder/layers_9'] == (1, 2, 4, 128)  # the last PFCU, at 1/8
  assert shapes['decoder/output_conv'] == (1, 8, 16, 16)
  for row in result['blocks']:
    assert row['jax_ms'] > 0 and row['torch_channels_last_ms'] > 0
    assert row['ratio'] == pytest.approx(row['jax_ms'] / row['torch_channels_last_ms'])
  assert result['sum_of_blocks_jax_ms'] == pytest.approx(
      sum(row['jax_ms'] for row in result['blocks'])
  )
  assert 'decoder/output_conv' in capsys.readouterr().out
  assert layer_timing_command.main(['--height', '12']) == 2
  assert 'multiples of 8' in capsys.readouterr().err
