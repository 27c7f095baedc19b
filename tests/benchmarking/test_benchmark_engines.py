"""`python -m esnet_jax.benchmark --engines`: every engine side by side, its JSON and table.

Only the shape of the results is checked, never which engine is faster: that depends on
the machine and on whatever else it runs.
"""

from __future__ import annotations

import json
import math

import pytest

from conftest import CPU_ISAS, random_variables
from esnet_jax import benchmark
from esnet_jax.benchmarking import suite
from esnet_jax.deploy import engines
from esnet_jax.weights import resolver
from esnet_jax.deploy.engines import artifacts


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / 'cache'))


def _runnable() -> set[tuple[str, str]]:
  return {
      (name, precision)
      for precision in engines.PRECISIONS
      for name in engines.ENGINES
      if engines.unavailable(name, precision) is None
  }


def test_every_runnable_engine_and_precision_is_timed_with_the_machine(tmp_path, capsys):
  path = tmp_path / 'engines.json'
  result = benchmark.main(
      ['--engines', '--sizes', '64x96', '--runs', '3', '--warmup', '1', '--json', str(path)]
  )
  out = capsys.readouterr().out
  assert json.loads(path.read_text()) == json.loads(json.dumps(result))
  assert result['mode'] == 'engines' and result['checkpoint'] == 'pretrained:camvid'
  assert result['sizes'] == [[64, 96]] and result['num_classes'] == 11
  rows = result['rows']
  assert {(row['engine'], row['precision']) for row in rows} == _runnable()
  for row in rows:
    assert (row['height'], row['width']) == (64, 96)
    for key in ('ms_p50', 'ms_p90', 'ms_min', 'fps', 'first_call_s'):
      assert math.isfinite(row[key]) and row[key] > 0, (row, key)
    assert row['ms_min'] <= row['ms_p50'] <= row['ms_p90']
    assert row['fps'] == pytest.approx(1e3 / row['ms_p50'])
  assert [row['ms_p50'] for row in rows] == sorted(row['ms_p50'] for row in rows)
  assert [row['fastest'] for row in rows] == [True] + [False] * (len(rows) - 1)
  skipped = {(s['engine'], s['precision']) for s in result['skipped']}
  assert skipped == {(n, p) for n in engines.ENGINES for p in engines.PRECISIONS} - _runnable()
  assert all(s['reason'] for s in result['skipped'])
  assert {(b['engine'], b['precision']) for b in result['built']} == _runnable()
  assert all(b['build_s'] > 0 for b in result['built'])
  # `auto` per precision, and the tools' default (auto float32), as the registry picks them.
  for precision in engines.PRECISIONS:
    runs = any(engines.unavailable(name, precision) is None for name in engines.ENGINES)
    chosen = engines.resolve('auto', precision) if runs else None
    assert result['auto'][precision] == chosen
    for row in rows:
      if row['precision'] == precision:
        assert row['auto'] == (row['engine'] == chosen)
  default = [row for row in rows if row['default']]
  assert [(row['engine'], row['precision']) for row in default] == [
      (engines.resolve('auto', 'float32'), 'float32')
  ]
  assert result['default'] == {'engine': default[0]['engine'], 'precision': 'float32'}
  # The machine: CPU, ISA flags, cores and every runtime's version.
  assert result['cpu_model'] and result['cpu_isa'] in CPU_ISAS and result['cpu_count'] >= 1
  assert result['threads'] >= 1 and result['engine_threads'] is None
  assert {'avx512_vnni', 'avx512_bf16', 'amx_int8', 'amx_bf16'} <= set(result['cpu_flags'])
  assert all(isinstance(have, bool) for have in result['cpu_flags'].values())
  for name in ('jax', 'jaxlib', 'onnx', 'onnxruntime', 'openvino'):
    assert f'{name}_version' in result
  assert result['jax_version']
  # The table: one line per row, the marks, what was skipped and why.
  assert f"{result['cpu_model']}, {result['cpu_isa']}" in out
  table = [line for line in out.splitlines() if line.startswith('64x96 ')]
  assert len(table) == len(rows) and 'fastest' in table[0]
  assert sum('default' in line for line in table) == 1
  assert all(f"skipped {s['engine']} {s['precision']}: " in out for s in result['skipped'])


def test_weights_without_an_int8_file_skip_int8_and_say_why(tmp_path, capsys):
  path = tmp_path / 'random.npz'
  resolver.save_torch_weights(random_variables(11, seed=1), path)
  result = benchmark.main(
      ['--engines', '--checkpoint', str(path), '--sizes', '32x48', '--runs', '1', '--warmup', '0']
  )
  assert result['checkpoint'] == str(path)
  timed = {(row['engine'], row['precision']) for row in result['rows']}
  assert timed == {(name, p) for name, p in _runnable() if p != 'int8'}
  int8 = [s for s in result['skipped'] if s['precision'] == 'int8']
  assert {s['engine'] for s in int8} == set(engines.ENGINES)
  for s in int8:
    if engines.unavailable(s['engine'], 'int8') is None:
      assert 'no INT8 file of these weights' in s['reason']
  assert 'skipped openvino int8: ' in capsys.readouterr().out


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['--engines', '--sizes', '60x80'], "--sizes='60x80': expected HxW[,HxW...] with H and W"),
        (['--engines', '--sizes', '512by1024'], "--sizes='512by1024': expected HxW"),
        (['--engines', '--sizes', '64x96,'], "--sizes='64x96,': expected HxW"),
        (['--sizes', '64x96'], "--sizes='64x96': expected not given without --engines"),
        (['--threads', '2'], '--threads=2: expected not given without --engines'),
        (['--engines', '--threads', '0'], '--threads=0: expected a positive integer'),
        (['--engines', '--height', '360'], '--height=360: expected its default with --engines'),
        (['--engines', '--dtype', 'bfloat16'], "--dtype='bfloat16': expected float32 with"),
        (['--engines', '--compare-onnxruntime'], '--compare-onnxruntime=True: expected False'),
        (['--engines', '--train'], '--train=True: expected False with --engines'),
    ],
)
def test_engine_options_that_cannot_work_are_one_line(argv, expected, capsys):
  status = benchmark.main(argv)
  err = capsys.readouterr().err.strip().splitlines()
  assert status == 2 and len(err) == 1 and expected in err[0], err


def test_config_mode_times_the_engines_too(tmp_path):
  """`--config.mode=benchmark` with `config.benchmark.engines`: the same run, its JSON in the
  workdir; a bad size is a ConfigError naming its key."""
  from configs import benchmark as benchmark_config
  from esnet_jax.errors import ConfigError

  config = benchmark_config.get_config()
  config.benchmark.engines, config.benchmark.sizes = True, '64x96'
  config.benchmark.runs, config.benchmark.warmup = 2, 1
  result = suite.benchmark_from_config(config, tmp_path)
  assert result['mode'] == 'engines'
  assert json.loads((tmp_path / 'benchmark.json').read_text())['mode'] == 'engines'
  config.benchmark.sizes = '60x96'
  with pytest.raises(ConfigError, match=r"config.benchmark.sizes='60x96'"):
    suite.benchmark_from_config(config, tmp_path)
