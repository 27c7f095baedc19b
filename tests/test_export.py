"""Export: StableHLO round trip, ONNX under onnxruntime vs JAX (symbolic sizes, no torch),
CLI and bad settings."""

from __future__ import annotations

import importlib
import itertools
import json
import sys

import numpy as np
import pytest

from conftest import random_variables
from esnet_jax import checkpointing, convert, export, inference
from esnet_jax.errors import ExportError
from esnet_jax.models import ESNet

NUM_CLASSES = 6
H, W = 32, 48


@pytest.fixture(scope='module')
def variables():
  return random_variables(NUM_CLASSES)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, variables):
  path = tmp_path_factory.mktemp('ckpt')
  checkpointing.save_variables(
      path,
      variables,
      num_classes=NUM_CLASSES,
      meta={
          'class_names': [f'c{i}' for i in range(NUM_CLASSES)],
          'mean': [1.0, 2.0, 3.0],
          'std': [4.0, 5.0, 6.0],
      },
  )
  return path


def _images(n: int, seed: int = 0) -> np.ndarray:
  return np.random.default_rng(seed).normal(size=(n, H, W, 3)).astype(np.float32)


def test_stablehlo_round_trip_with_a_symbolic_batch(tmp_path, checkpoint, variables, capsys):
  out = tmp_path / 'esnet.stablehlo'
  assert (
      export.main(
          [
              '--checkpoint',
              str(checkpoint),
              '--format',
              'stablehlo',
              '--height',
              str(H),
              '--width',
              str(W),
              '--out',
              str(out),
          ]
      )
      == 0
  )
  assert 'Wrote' in capsys.readouterr().out
  exported = export.load_stablehlo(out)
  assert str(exported.in_avals[0].shape) == f'(batch, {H}, {W}, 3)'
  assert exported.out_avals[0].shape[1:] == (H, W, NUM_CLASSES)
  folded = export.inference_function(variables)
  unfolded = ESNet(NUM_CLASSES)
  for n in (1, 3):
    x = _images(n, seed=n)
    logits = np.asarray(exported.call(x))
    assert logits.shape == (n, H, W, NUM_CLASSES) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, folded(x), atol=1e-6)  # the same function, reloaded
    np.testing.assert_allclose(logits, unfolded.apply(variables, x), atol=1e-4)
  meta = json.loads(out.with_name(out.name + '.json').read_text())
  assert meta['mean'] == [1.0, 2.0, 3.0] and meta['class_names'][0] == 'c0'
  assert meta['input']['shape'] == ['batch', H, W, 3] and meta['bn_folded'] is True


def test_config_mode_exports_the_workdir_checkpoint_as_the_command_line_does(tmp_path, checkpoint):
  """`--config.mode=export` (`export.export_from_config`): the same file and metadata as
  `python -m esnet_jax.export` with the same settings."""
  from configs import default

  config = default.get_config()
  config.export.checkpoint = str(checkpoint)
  config.export.height, config.export.width, config.export.batch = H, W, 2
  path, meta_path = export.export_from_config(config, tmp_path)
  assert path == tmp_path / 'esnet.stablehlo' and meta_path.is_file()
  by_flags = tmp_path / 'flags.stablehlo'
  flags = ['--checkpoint', str(checkpoint), '--format', 'stablehlo', '--height', str(H)]
  assert export.main([*flags, '--width', str(W), '--batch', '2', '--out', str(by_flags)]) == 0
  x = _images(2)
  np.testing.assert_array_equal(
      export.load_stablehlo(path).call(x), export.load_stablehlo(by_flags).call(x)
  )
  meta = json.loads(meta_path.read_text())
  assert meta == json.loads(by_flags.with_name(by_flags.name + '.json').read_text())


def test_stablehlo_fixed_batch_and_unfolded_batch_norm(variables):
  exported = export.export_stablehlo(variables, H, W, batch=2, fold_bn=False)
  assert exported.in_avals[0].shape == (2, H, W, 3)
  x = _images(2)
  np.testing.assert_allclose(exported.call(x), ESNet(NUM_CLASSES).apply(variables, x), atol=1e-6)
  # Unfolded BatchNorm normalises with rsqrt(var + eps); the folded graph has none.
  assert 'rsqrt' in exported.mlir_module()
  assert 'rsqrt' not in export.export_stablehlo(variables, H, W, batch=2).mlir_module()


# Input sizes (H, W) and batches one ONNX file is checked at: H and W are symbolic in it.
ONNX_SIZES = ((64, 96), (128, 64), (96, 160))
ONNX_BATCHES = (1, 3)


def test_onnx_under_onnxruntime_matches_jax_at_any_size(tmp_path, variables, capsys):
  """One ONNX file, exported without --height/--width, against `inference.deployed_network`
  at three sizes and two batches."""
  onnx = pytest.importorskip('onnx')
  ort = pytest.importorskip('onnxruntime')
  weights = tmp_path / 'esnet.npz'  # the PyTorch state dict format, through convert
  np.savez(weights, **convert.flax_to_torch(variables))
  out = tmp_path / 'esnet.onnx'
  assert export.main(['--checkpoint', str(weights), '--format', 'onnx', '--out', str(out)]) == 0
  assert 'Wrote' in capsys.readouterr().out
  graph = onnx.load(out).graph
  assert [i.name for i in graph.input] == [export.INPUT_NAME]
  assert [o.name for o in graph.output] == [export.OUTPUT_NAME]
  assert not any(node.op_type == 'BatchNormalization' for node in graph.node)  # folded
  session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
  model, deployed = inference.deployed_network(variables, kernels='xla')
  for (h, w), n in itertools.product(ONNX_SIZES, ONNX_BATCHES):
    x = np.random.default_rng(h * n + w).normal(size=(n, h, w, 3)).astype(np.float32)
    logits = session.run([export.OUTPUT_NAME], {export.INPUT_NAME: x})[0]
    assert logits.shape == (n, h, w, NUM_CLASSES) and logits.dtype == np.float32
    expected = np.asarray(model.apply(deployed, x, train=False))
    assert np.abs(expected).max() > 0.5  # a scale at which 1e-4 is meaningful
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0, err_msg=f'{n}x{h}x{w}')
  meta = json.loads(out.with_name(out.name + '.json').read_text())
  assert meta['format'] == 'onnx' and meta['onnx_opset'] == 17
  assert meta['input']['shape'] == ['batch', 'height', 'width', 3]
  assert meta['output']['shape'] == ['batch', 'height', 'width', NUM_CLASSES]
  assert meta['input']['symbolic_dims'] == {
      'batch': 'any positive size',
      'height': 'any multiple of 8',
      'width': 'any multiple of 8',
  }


def test_onnx_export_needs_no_torch(tmp_path, monkeypatch, variables):
  """The ONNX route imports no PyTorch: with `import torch` failing, export still works."""
  onnx = pytest.importorskip('onnx')
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` raises ImportError
  with pytest.raises(ImportError):
    importlib.import_module('torch')
  path = export.export_onnx(variables, tmp_path / 'esnet.onnx', height=H, width=W, batch=2)
  dims = onnx.load(path).graph.input[0].type.tensor_type.shape.dim
  assert [d.dim_value for d in dims] == [2, H, W, 3]  # all three fixed when given


def test_onnx_fixed_size_is_checked_and_recorded(tmp_path, checkpoint):
  pytest.importorskip('onnx')
  out = tmp_path / 'esnet.onnx'
  path, meta_path = export.export(checkpoint, 'onnx', H, None, out)
  assert path == out and meta_path.is_file()
  meta = json.loads(meta_path.read_text())
  assert meta['input']['shape'] == ['batch', H, 'width', 3]
  assert set(meta['input']['symbolic_dims']) == {'batch', 'width'}
  with pytest.raises(ExportError, match=r'^width=30: expected a positive multiple of 8'):
    export.export(checkpoint, 'onnx', None, 30, tmp_path / 'bad.onnx')
  with pytest.raises(ExportError, match=r'^--height=12: expected a positive multiple of 8'):
    export.export_onnx({}, tmp_path / 'bad.onnx', height=12)


@pytest.mark.parametrize(
    'args, message',
    [
        (['--height', '30', '--width', str(W)], 'multiples of 8'),
        (
            ['--height', str(H), '--width', str(W), '--batch', '0'],
            '--batch=0: expected a positive integer',
        ),
        (['--width', str(W)], '--height=None: expected a positive multiple of 8'),
        (['--height', str(H)], 'only ONNX exports a symbolic size'),
    ],
)
def test_bad_settings_are_reported(tmp_path, checkpoint, capsys, args, message):
  assert (
      export.main(
          [
              '--checkpoint',
              str(checkpoint),
              '--format',
              'stablehlo',
              '--out',
              str(tmp_path / 'x'),
              *args,
          ]
      )
      == 2
  )
  assert message in capsys.readouterr().err
  assert not (tmp_path / 'x').exists()


def test_missing_checkpoint_is_reported(tmp_path, capsys):
  assert (
      export.main(
          [
              '--checkpoint',
              str(tmp_path / 'nope'),
              '--format',
              'stablehlo',
              '--height',
              '8',
              '--width',
              '8',
              '--out',
              str(tmp_path / 'x'),
          ]
      )
      == 2
  )
  assert 'does not exist' in capsys.readouterr().err
