"""esnet_jax.deploy.quantize: calibration sources, the INT8 QDQ model, and the shipped weights' accuracy."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, random_variables, subprocess_env
from esnet_jax import onnx_eval as onnx_eval_command
from esnet_jax.weights import pretrained
from esnet_jax.deploy import quantize
from esnet_jax.data import transforms
from esnet_jax.errors import OptionError

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

MEAN, STD = transforms.MEAN_RGB, transforms.STD_RGB


def _folder(root: Path, sizes) -> Path:
  rng = np.random.default_rng(0)
  for i, (h, w) in enumerate(sizes):
    (root / f'sub{i % 2}').mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(
        root / f'sub{i % 2}/{i}.png'
    )
  (root / 'notes.txt').write_text('not an image')
  return root


def test_folder_images_are_evenly_spaced_normalised_and_padded_to_8(tmp_path):
  root = _folder(tmp_path / 'imgs', [(30, 41), (16, 16), (24, 33), (9, 17), (40, 8)])
  images, how = quantize.calibration_images(root, count=3, mean=MEAN, std=STD)
  assert how == {'source': str(root), 'folder': str(root), 'images': 3, 'of': 5}
  # Files in path order (sub0/0, sub0/2, sub0/4, sub1/1, sub1/3); indices 0, 2, 4 of them.
  assert [x.shape for x in images] == [(1, 32, 48, 3), (1, 40, 8, 3), (1, 16, 24, 3)]
  original = np.asarray(Image.open(root / 'sub0/0.png'))
  np.testing.assert_allclose(images[0][0, :30, :41], transforms.normalize(original), atol=1e-6)
  # Padding is the mean pixel: next to zero once normalised.
  assert np.abs(images[0][0, 30:]).max() < 0.01 and np.abs(images[0][0, :, 41:]).max() < 0.01


def test_config_images_come_from_its_train_split(tmp_path):
  config = tmp_path / 'calib.py'
  config.write_text(
      'import ml_collections\n'
      'from esnet_jax.data import datasets\n'
      'def get_config():\n'
      '  c = ml_collections.ConfigDict()\n'
      '  c.dataset = datasets.default_dataset_config()\n'
      "  c.dataset.name = 'synthetic'\n"
      '  c.dataset.image_size = (16, 24)\n'
      '  c.dataset.num_train = 5\n'
      '  return c\n'
  )
  images, how = quantize.calibration_images(config, count=2, mean=MEAN, std=STD)
  assert how == {
      'source': str(config),
      'dataset': 'synthetic',
      'split': 'train',
      'images': 2,
      'of': 5,
  }
  assert [x.shape for x in images] == [(1, 16, 24, 3)] * 2 and images[0].dtype == np.float32


def test_bad_calibration_sources_name_the_flag_and_what_was_expected(tmp_path):
  with pytest.raises(OptionError, match=r"calibration='.*nowhere': expected a dataset config"):
    quantize.calibration_images(tmp_path / 'nowhere', count=1, mean=MEAN, std=STD)
  root = _folder(tmp_path / 'imgs', [(8, 8), (8, 8)])
  with pytest.raises(OptionError, match=r'calibration_images=3: expected at most the 2 image\(s\)'):
    quantize.calibration_images(root, count=3, mean=MEAN, std=STD)
  broken = tmp_path / 'broken.py'
  broken.write_text('def get_config(:\n')
  with pytest.raises(OptionError, match='expected a dataset config that loads, not SyntaxError'):
    quantize.calibration_images(broken, count=1, mean=MEAN, std=STD)


def test_int8_model_is_qdq_per_channel_in_7_bits_and_tracks_the_float_one(tmp_path):
  from esnet_jax.deploy import onnx_graph

  variables = random_variables(5)
  onnx.save(onnx_graph.build_model(variables), tmp_path / 'f32.onnx')
  rng = np.random.default_rng(1)
  calib = [
      transforms.normalize(rng.integers(0, 256, (1, 32, 48, 3)).astype(np.uint8)) for _ in range(4)
  ]
  method = quantize.quantize_int8(
      tmp_path / 'f32.onnx', tmp_path / 'int8.onnx', calib, input_name='image'
  )
  assert method == quantize.METHOD
  model = onnx.load(tmp_path / 'int8.onnx')
  ops = [n.op_type for n in model.graph.node]
  assert ops.count('QuantizeLinear') > 50 and ops.count('DequantizeLinear') > 50
  inits = {i.name: i for i in model.graph.initializer}
  weights_dq = [
      n
      for n in model.graph.node
      if n.op_type == 'DequantizeLinear'
      and n.input[0] in inits
      and len(inits[n.input[0]].dims) == 4
  ]
  assert weights_dq and all(
      onnx.numpy_helper.to_array(inits[n.input[1]]).size > 1 for n in weights_dq
  )  # one scale per output channel
  assert {inits[n.input[0]].data_type for n in weights_dq} == {onnx.TensorProto.INT8}
  # 7-bit weights: AVX2's int16 sums of uint8 x int8 pairs cannot saturate (255 * 64 * 2).
  weight_values = [onnx.numpy_helper.to_array(inits[n.input[0]]) for n in weights_dq]
  assert max(np.abs(w).max() for w in weight_values) <= 64
  dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
  assert dims[:3] == ['batch', 'height', 'width']
  # Another size than calibrated on: the graph stays symbolic and close to float32.
  x = transforms.normalize(rng.integers(0, 256, (2, 64, 40, 3)).astype(np.uint8))
  run = lambda name: ort.InferenceSession(str(tmp_path / name)).run(None, {'image': x})[0]
  f32, int8 = run('f32.onnx'), run('int8.onnx')
  assert int8.shape == f32.shape == (2, 64, 40, 5)
  assert np.corrcoef(f32.ravel(), int8.ravel())[0, 1] > 0.95


def _export(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-m', 'esnet_jax.export', *args],
      cwd=REPO,
      env=subprocess_env(),
      capture_output=True,
      text=True,
      timeout=900,
  )


@pytest.mark.end_to_end
def test_export_refuses_int8_settings_that_cannot_work(tmp_path):
  out = str(tmp_path / 'x.onnx')
  base = ['--checkpoint', 'pretrained:camvid', '--out', out]
  done = _export(*base, '--format', 'onnx', '--quantize', 'int8')
  assert done.returncode == 2 and "--calibration='': expected a dataset config" in done.stderr
  done = _export(
      *base,
      '--format',
      'stablehlo',
      '--height',
      '64',
      '--width',
      '64',
      '--quantize',
      'int8',
      '--calibration',
      'configs/camvid.py',
  )
  assert (
      done.returncode == 2
      and "--quantize='int8': expected 'none' with format stablehlo" in done.stderr
  )
  done = _export(*base, '--format', 'onnx', '--quantize', 'int8', '--calibration', str(tmp_path))
  assert done.returncode == 2 and f'No images or videos found in {tmp_path}' in done.stderr
  root = _folder(tmp_path / 'imgs', [(8, 8)])
  done = _export(*base, '--format', 'onnx', '--quantize', 'int8', '--calibration', str(root))
  assert (
      done.returncode == 2
      and 'calibration_images=32: expected at most the 1 image(s)' in done.stderr
  )
  assert not (tmp_path / 'x.onnx').exists()


@pytest.mark.end_to_end
def test_int8_pretrained_camvid_keeps_the_val_miou_within_half_a_point(camvid_root, tmp_path):
  """The README's INT8 and onnx_eval commands: the 101 val images at full 360x480."""
  out = tmp_path / 'camvid.int8.onnx'
  done = _export(
      '--checkpoint',
      'pretrained:camvid',
      '--format',
      'onnx',
      '--quantize',
      'int8',
      '--calibration',
      'configs/camvid.py',
      '--out',
      str(out),
  )
  assert done.returncode == 0, done.stderr[-3000:]
  meta = json.loads(out.with_name(out.name + '.json').read_text())
  assert meta['quantization'] == {
      **quantize.METHOD,
      'calibration': {
          'source': 'configs/camvid.py',
          'dataset': 'camvid',
          'split': 'train',
          'images': 32,
          'of': 367,
      },
  }
  result_path = tmp_path / 'eval.json'
  args = [
      '--model',
      str(out),
      '--config',
      str(REPO / 'configs/camvid.py'),
      '--json',
      str(result_path),
  ]
  assert onnx_eval_command.main([*args, '--threads', '2']) == 0
  result = json.loads(result_path.read_text())
  assert result['images'] == 101 and result['split'] == 'val'
  miou = result['miou']
  assert abs(miou - pretrained.get('camvid').val_miou) < 0.005, miou


# ---------------------------------------------------------------------------------------
# Calibration that reaches the graph as a deployment would, and fails by name (issue 38).


def _weights(tmp_path: Path, num_classes: int = 11) -> Path:
  from esnet_jax.weights import convert

  path = tmp_path / 'w.npz'
  np.savez(path, **convert.flax_to_torch(random_variables(num_classes)))
  return path


def test_fixed_size_int8_calibrates_on_images_resized_to_its_input(tmp_path, capsys):
  """Images of other sizes than the graph's fixed 32x48 (and of each other) are resized
  to it bilinearly; the file's input stays fixed and the JSON says how."""
  from esnet_jax import export as export_command

  root = _folder(tmp_path / 'imgs', [(40, 60), (24, 30), (50, 50)])
  out = tmp_path / 'fixed.int8.onnx'
  args = ['--checkpoint', str(_weights(tmp_path)), '--format', 'onnx', '--out', str(out)]
  size = ['--height', '32', '--width', '48']
  calibration = ['--quantize', 'int8', '--calibration', str(root), '--calibration-images', '3']
  assert export_command.main([*args, *size, *calibration]) == 0, capsys.readouterr().err
  dims = onnx.load(out).graph.input[0].type.tensor_type.shape.dim
  assert [d.dim_value or d.dim_param for d in dims] == ['batch', 32, 48, 3]
  meta = json.loads(out.with_name(out.name + '.json').read_text())
  assert meta['quantization']['calibration'] == {
      'source': str(root),
      'folder': str(root),
      'images': 3,
      'of': 3,
      'resized': "bilinear, to the graph's fixed 32x48",
  }
  x = transforms.normalize(np.full((1, 32, 48, 3), 128, np.uint8))
  logits = ort.InferenceSession(str(out)).run(None, {'image': x})[0]
  assert logits.shape == (1, 32, 48, 11)


def test_images_are_resized_as_the_graph_takes_them(tmp_path):
  root = _folder(tmp_path / 'imgs', [(30, 40), (60, 20)])
  fixed, how = quantize.calibration_images(root, count=2, mean=MEAN, std=STD, height=16, width=24)
  assert [x.shape for x in fixed] == [(1, 16, 24, 3)] * 2
  original = np.asarray(Image.open(root / 'sub0/0.png'))
  expected = transforms.normalize(transforms.resize_image(original, (16, 24)))
  np.testing.assert_allclose(fixed[0][0], expected, atol=1e-6)
  assert how['resized'] == "bilinear, to the graph's fixed 16x24"
  # One side fixed: the other scaled alike (aspect kept), then padded to a multiple of 8.
  tall, how = quantize.calibration_images(root, count=2, mean=MEAN, std=STD, height=16)
  assert [x.shape for x in tall] == [(1, 16, 24, 3), (1, 16, 8, 3)]
  assert how['resized'] == "bilinear, to the graph's fixed height 16, aspect kept"


def test_a_symbolic_graph_calibrates_on_images_of_different_sizes(tmp_path):
  """ONNX Runtime stacks the activations of the images it runs at once; images of different
  sizes are calibrated one size at a time (before: 'inhomogeneous shape' from numpy)."""
  from esnet_jax.deploy import onnx_graph

  onnx.save(onnx_graph.build_model(random_variables(5)), tmp_path / 'f32.onnx')
  rng = np.random.default_rng(2)
  sizes = [(32, 48), (40, 8), (32, 48)]
  calib = [
      transforms.normalize(rng.integers(0, 256, (1, h, w, 3)).astype(np.uint8)) for h, w in sizes
  ]
  quantize.quantize_int8(tmp_path / 'f32.onnx', tmp_path / 'int8.onnx', calib, input_name='image')
  x = calib[1]
  run = lambda name: ort.InferenceSession(str(tmp_path / name)).run(None, {'image': x})[0]
  assert np.corrcoef(run('f32.onnx').ravel(), run('int8.onnx').ravel())[0, 1] > 0.95


def test_a_huge_image_is_downscaled_for_a_symbolic_graph(tmp_path, monkeypatch):
  """Above MAX_CALIBRATION_PIXELS (1024x2048 in use; 1000 here) an image is downscaled,
  aspect kept, and the JSON's record says so."""
  monkeypatch.setattr(quantize, 'MAX_CALIBRATION_PIXELS', 1000)
  root = _folder(tmp_path / 'imgs', [(64, 64), (16, 24)])
  images, how = quantize.calibration_images(root, count=2, mean=MEAN, std=STD)
  assert quantize.calibration_size(64, 64) == (31, 31)
  assert [x.shape for x in images] == [(1, 32, 32, 3), (1, 16, 24, 3)]  # 31 padded to 32
  assert how['resized'] == (
      '1 image(s) of more than 1000 pixels downscaled bilinearly to at most that, aspect kept'
  )


def test_calibration_that_would_not_fit_in_memory_is_refused_before_decoding(tmp_path, monkeypatch):
  from esnet_jax.system import memory_budget
  from esnet_jax.inference import predict
  from esnet_jax.errors import MemoryBudgetError

  root = _folder(tmp_path / 'imgs', [(64, 64)])
  monkeypatch.setattr(memory_budget, 'available_bytes', lambda: 10**6)

  def no_decoding(path):
    raise AssertionError(f'{path} decoded before the memory check')

  monkeypatch.setattr(predict, 'load_image', no_decoding)
  with pytest.raises(MemoryBudgetError, match=r'sub0/0\.png .* at 64x64 would need about'):
    quantize.calibration_images(root, count=1, mean=MEAN, std=STD)


def _png_header_only(path: Path, width: int, height: int) -> Path:
  """A PNG that claims WIDTHxHEIGHT in its header and holds no pixel data (a bomb's size)."""
  import struct
  import zlib

  def chunk(kind: bytes, data: bytes) -> bytes:
    body = kind + data
    return struct.pack('>I', len(data)) + body + struct.pack('>I', zlib.crc32(body))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  path.write_bytes(b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b''))
  return path


def test_a_decompression_bomb_is_refused_by_name_from_its_header(tmp_path):
  from esnet_jax.errors import InputError

  root = tmp_path / 'imgs'
  root.mkdir()
  bomb = _png_header_only(root / 'bomb.png', 20000, 20000)  # 400 megapixels, claimed
  with pytest.raises(InputError, match=rf'^Cannot read image {bomb}: Image size \(400000000 '):
    quantize.calibration_images(root, count=1, mean=MEAN, std=STD)


def test_a_config_whose_get_config_raises_is_one_line_naming_it(tmp_path, capsys):
  from esnet_jax import export as export_command

  config = tmp_path / 'calib.py'
  config.write_text('def get_config():\n  raise ValueError("no dataset here\\nsecond line")\n')
  with pytest.raises(OptionError, match='expected a dataset config that loads, not ValueError'):
    quantize.calibration_images(config, count=1, mean=MEAN, std=STD)
  args = ['--checkpoint', str(_weights(tmp_path)), '--format', 'onnx', '--quantize', 'int8']
  args += ['--calibration', str(config), '--out', str(tmp_path / 'x.onnx')]
  assert export_command.main(args) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith(f"error: calibration='{config}': expected")
  assert 'ValueError: no dataset here second line' in err
  assert not (tmp_path / 'x.onnx').exists()


def test_a_failed_quantization_names_the_users_files_not_temporary_ones(tmp_path):
  from esnet_jax.deploy import onnx_graph
  from esnet_jax.errors import ExportError

  float_model = tmp_path / 'tmp' / 'float32.onnx'
  float_model.parent.mkdir()
  onnx.save(onnx_graph.build_model(random_variables(5)), float_model)
  wrong = [np.zeros((1, 16, 16, 4), np.float32)]  # Four channels: ONNX Runtime refuses them.
  with pytest.raises(ExportError) as raised:
    quantize.quantize_int8(
        float_model,
        tmp_path / '.x.partial-1234.onnx',
        wrong,
        input_name='image',
        name='model.int8.onnx',
        source='calib/',
    )
  message = str(raised.value)
  assert message.startswith('INT8 quantization of model.int8.onnx calibrated on calib/ failed')
  assert '\n' not in message and str(float_model) not in message and 'partial' not in message
