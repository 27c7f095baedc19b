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
from esnet_jax.weights import checkpoints, convert
from esnet_jax.deploy import export
from esnet_jax import export as export_command
from esnet_jax.inference import segmenter
from esnet_jax.errors import ExportError
from esnet_jax.model.esnet import ESNet

NUM_CLASSES = 6
H, W = 32, 48


@pytest.fixture(scope='module')
def variables():
  return random_variables(NUM_CLASSES)


@pytest.fixture(scope='module')
def checkpoint(tmp_path_factory, variables):
  path = tmp_path_factory.mktemp('ckpt')
  checkpoints.save_variables(
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
      export_command.main(
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
  assert (
      export_command.main([*flags, '--width', str(W), '--batch', '2', '--out', str(by_flags)]) == 0
  )
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
  """One ONNX file, exported without --height/--width, against `segmenter.deployed_network`
  at three sizes and two batches."""
  onnx = pytest.importorskip('onnx')
  ort = pytest.importorskip('onnxruntime')
  weights = tmp_path / 'esnet.npz'  # the PyTorch state dict format, through convert
  np.savez(weights, **convert.flax_to_torch(variables))
  out = tmp_path / 'esnet.onnx'
  assert (
      export_command.main(['--checkpoint', str(weights), '--format', 'onnx', '--out', str(out)])
      == 0
  )
  assert 'Wrote' in capsys.readouterr().out
  graph = onnx.load(out).graph
  assert [i.name for i in graph.input] == [export.INPUT_NAME]
  assert [o.name for o in graph.output] == [export.OUTPUT_NAME]
  assert not any(node.op_type == 'BatchNormalization' for node in graph.node)  # folded
  session = ort.InferenceSession(str(out), providers=['CPUExecutionProvider'])
  model, deployed = segmenter.deployed_network(variables, kernels='xla')
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
      export_command.main(
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
      export_command.main(
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


# ---------------------------------------------------------------------------------------
# Nothing a user already has is lost (issue 38).


@pytest.fixture
def weights_file(tmp_path, variables):
  """A PyTorch-layout .npz of the module's variables, as convert writes it."""
  path = tmp_path / 'trained.npz'
  np.savez(path, **convert.flax_to_torch(variables))
  return path


def _error_line(capsys) -> str:
  """The one line a failed `main` printed to stderr."""
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  return lines[0]


@pytest.mark.parametrize('fmt', ['onnx', 'stablehlo'])
def test_out_naming_the_checkpoint_is_refused_and_the_weights_kept(
    tmp_path, weights_file, capsys, fmt
):
  before = weights_file.read_bytes()
  link = tmp_path / 'link.npz'
  link.symlink_to(weights_file)
  size = ['--height', str(H), '--width', str(W)]
  for out in (weights_file, link):
    args = ['--checkpoint', str(weights_file), '--format', fmt, *size, '--out', str(out)]
    assert export_command.main(args) == 2
    line = _error_line(capsys)
    assert f'--out {out}: is --checkpoint {weights_file}' in line and 'refusing' in line
  assert weights_file.read_bytes() == before
  assert not weights_file.with_name(weights_file.name + '.json').exists()


def test_out_whose_json_is_the_checkpoint_is_refused(tmp_path, capsys):
  """`--out X` writes X.json too: X.json may not be an input either (checked before loading)."""
  checkpoint = tmp_path / 'model.json'
  checkpoint.write_text('{"kept": true}')
  out = tmp_path / 'model'
  assert (
      export_command.main(['--checkpoint', str(checkpoint), '--format', 'onnx', '--out', str(out)])
      == 2
  )
  assert f'--out (its .json) {checkpoint}: is --checkpoint {checkpoint}' in _error_line(capsys)
  assert checkpoint.read_text() == '{"kept": true}' and not out.exists()


def test_out_naming_a_calibration_input_is_refused(tmp_path, weights_file, capsys):
  from PIL import Image

  folder = tmp_path / 'calib'
  folder.mkdir()
  image = folder / 'a.png'
  Image.new('RGB', (16, 16), (10, 20, 30)).save(image)
  config = tmp_path / 'calib.py'
  config.write_text('def get_config():\n  raise RuntimeError("never run")\n')
  base = ['--checkpoint', str(weights_file), '--format', 'onnx', '--quantize', 'int8']
  for calibration, out, named in [
      (folder, image, f'is --calibration image {image}'),
      (config, config, f'is --calibration {config}'),
  ]:
    before = out.read_bytes()
    assert export_command.main([*base, '--calibration', str(calibration), '--out', str(out)]) == 2
    assert named in _error_line(capsys)
    assert out.read_bytes() == before


def test_out_an_existing_folder_is_one_line(tmp_path, weights_file, capsys):
  folder = tmp_path / 'exports'
  folder.mkdir()
  assert (
      export_command.main(
          ['--checkpoint', str(weights_file), '--format', 'onnx', '--out', str(folder)]
      )
      == 2
  )
  assert f'--out {folder}: is a folder; expected a file name' in _error_line(capsys)
  assert list(folder.iterdir()) == []


def test_config_mode_gets_the_same_checks_in_its_keys(tmp_path, weights_file):
  from configs import default
  from esnet_jax.errors import OutputError

  config = default.get_config()
  config.export.checkpoint = str(weights_file)
  config.export.format = 'onnx'
  config.export.out = str(weights_file)
  before = weights_file.read_bytes()
  with pytest.raises(OutputError, match=r'^config\.export\.out .*: is config\.export\.checkpoint'):
    export.export_from_config(config, tmp_path)
  assert weights_file.read_bytes() == before


def test_a_failed_export_leaves_the_earlier_one_as_it_was(
    tmp_path, weights_file, monkeypatch, capsys
):
  """The export and its JSON land together or not at all: a failure after the new graph was
  written (here: making the JSON) leaves both earlier files byte for byte, and no temporary."""
  out_dir = tmp_path / 'out'
  out = out_dir / 'esnet.onnx'
  args = ['--checkpoint', str(weights_file), '--format', 'onnx', '--out', str(out)]
  assert export_command.main([*args, '--height', str(H), '--width', str(W)]) == 0
  meta_path = out.with_name(out.name + '.json')
  before = out.read_bytes(), meta_path.read_bytes()

  def failing_metadata(*args, **kwargs):
    raise ExportError('the disk filled up while writing the JSON')

  monkeypatch.setattr(export, 'metadata', failing_metadata)
  assert export_command.main(args) == 2  # Another export (symbolic size) into the same files.
  assert 'the disk filled up' in _error_line(capsys)
  assert (out.read_bytes(), meta_path.read_bytes()) == before
  assert sorted(p.name for p in out_dir.iterdir()) == ['esnet.onnx', 'esnet.onnx.json']


def test_out_naming_a_pretrained_file_is_refused(capsys):
  from esnet_jax.weights import pretrained

  path = pretrained.get('camvid').path
  before = path.stat().st_mtime_ns, path.stat().st_size
  assert (
      export_command.main(
          ['--checkpoint', 'pretrained:camvid', '--format', 'onnx', '--out', str(path)]
      )
      == 2
  )
  assert f"is --checkpoint pretrained:camvid's file {path}" in _error_line(capsys)
  assert (path.stat().st_mtime_ns, path.stat().st_size) == before
