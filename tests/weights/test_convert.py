"""PyTorch <-> Flax weight conversion, file loaders, the conversion CLI, and parity."""

from __future__ import annotations


import chex
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import random_variables
from esnet_jax.weights import checkpoints, convert, resolver
from esnet_jax import convert as convert_command
from esnet_jax.model.esnet import ESNet


def _nhwc(x):
  return jnp.asarray(x.transpose(0, 2, 3, 1))


def _assert_parity(variables, parity):
  model = ESNet(19)
  x = _nhwc(parity['input_nchw'])
  logits = np.asarray(model.apply(variables, x)).transpose(0, 3, 1, 2)
  enc = np.asarray(model.apply(variables, x, encoder_only=True)).transpose(0, 3, 1, 2)
  assert np.abs(logits - parity['logits_nchw']).max() < 1e-4
  assert np.abs(enc - parity['encoder_logits_nchw']).max() < 1e-4


def test_parity_with_original_pytorch_from_npz(reference_variables, parity):
  _assert_parity(reference_variables, parity)


@pytest.mark.torch
def test_parity_with_original_pytorch_from_pth(torch_fixtures, parity):
  pytest.importorskip('torch')
  _assert_parity(resolver.load_torch_weights(torch_fixtures / 'state_dict_c19.pth'), parity)


def test_converted_tree_has_params_stats_and_head(reference_variables):
  assert set(reference_variables) == {'params', 'batch_stats'}
  assert reference_variables['params']['encoder_output_conv']['kernel'].shape == (1, 1, 128, 19)
  var = reference_variables['batch_stats']['encoder']['layers_3']['bn']['var']
  assert var.shape == (64,)


def test_round_trip_is_exact(torch_fixtures):
  original = resolver.load_state_dict(torch_fixtures / 'state_dict_c19.npz')
  back = convert.flax_to_torch(convert.torch_to_flax(original))
  assert sorted(back) == sorted(original)
  for key, value in original.items():
    if not key.endswith('num_batches_tracked'):
      np.testing.assert_array_equal(back[key], value, err_msg=key)
      assert back[key].dtype == value.dtype


@pytest.mark.torch
def test_flax_to_torch_loads_strictly_into_the_torch_reference(reference_variables, parity):
  torch = pytest.importorskip('torch')
  from esnet_jax.weights.torch_reference import ESNet as TorchESNet

  model = TorchESNet(19).eval()
  state = {
      k: torch.from_numpy(np.asarray(v))
      for k, v in convert.flax_to_torch(reference_variables).items()
  }
  model.load_state_dict(state, strict=True)
  with torch.no_grad():
    out = model(torch.from_numpy(parity['input_nchw'])).numpy()
  np.testing.assert_allclose(out, parity['logits_nchw'], atol=1e-4)


def test_dataparallel_prefix_is_accepted(torch_fixtures, reference_variables):
  sd = resolver.load_state_dict(torch_fixtures / 'state_dict_c19.npz')
  prefixed = convert.torch_to_flax({f'module.{k}': v for k, v in sd.items()})
  chex.assert_trees_all_equal(prefixed, reference_variables)


def test_bad_keys_are_each_named(torch_fixtures):
  sd = resolver.load_state_dict(torch_fixtures / 'state_dict_c19.npz')
  del sd['encoder.layers.4.bn1.running_var']
  sd['encoder.layers.99.conv.weight'] = np.zeros((1,))
  sd['decoder.layers.1.conv3x1_1.weight'] = np.zeros((64, 64, 3, 1), np.float32)
  with pytest.raises(convert.ConversionError) as err:
    convert.torch_to_flax(sd)
  msg = str(err.value)
  assert 'missing keys: encoder.layers.4.bn1.running_var' in msg
  assert 'unexpected keys: encoder.layers.99.conv.weight' in msg
  assert 'decoder.layers.1.conv3x1_1.weight: got (64, 64, 3, 1), expected (64, 64, 5, 1)' in msg


def test_other_class_counts_convert():
  """An ESNet(11) state dict (as made by flax_to_torch) converts back to ESNet(11)."""
  import jax

  v11 = random_variables(11)
  sd = convert.flax_to_torch(v11)
  assert sd['decoder.output_conv.weight'].shape == (16, 11, 2, 2)
  chex.assert_trees_all_equal(convert.torch_to_flax(sd), jax.tree.map(np.asarray, v11))


def test_safetensors_loader(tmp_path, torch_fixtures, reference_variables):
  from safetensors.numpy import save_file

  sd = resolver.load_state_dict(torch_fixtures / 'state_dict_c19.npz')
  path = tmp_path / 'esnet.safetensors'
  save_file(sd, str(path))
  chex.assert_trees_all_equal(resolver.load_torch_weights(path), reference_variables)


def test_unknown_extension_and_missing_file(tmp_path):
  bad = tmp_path / 'weights.h5'
  bad.write_bytes(b'x')
  with pytest.raises(convert.ConversionError, match='weights.h5.*expected .npz'):
    resolver.load_state_dict(bad)
  with pytest.raises(FileNotFoundError, match='nope.pth'):
    resolver.load_state_dict(tmp_path / 'nope.pth')


class _Exploit:

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return (open, (self.marker, 'w'))


@pytest.mark.torch
def test_pth_is_loaded_without_running_pickled_code(tmp_path):
  torch = pytest.importorskip('torch')
  marker = tmp_path / 'pwned'
  path = tmp_path / 'evil.pth'
  torch.save({'encoder.x': _Exploit(str(marker))}, str(path))
  with pytest.raises(convert.ConversionError, match='evil.pth'):
    resolver.load_state_dict(path)
  assert not marker.exists()


@pytest.mark.torch
def test_cli_writes_a_checkpoint_the_inference_api_restores(
    tmp_path, torch_fixtures, reference_variables, capsys
):
  pytest.importorskip('torch')
  out = tmp_path / 'ckpt'
  assert (
      convert_command.main(
          ['--torch', str(torch_fixtures / 'state_dict_c19.pth'), '--out', str(out)]
      )
      == 0
  )
  restored = checkpoints.restore_variables(out)
  chex.assert_trees_all_equal(restored, reference_variables)
  assert checkpoints.restore_meta(out)['num_classes'] == 19
  assert (
      convert_command.main(
          ['--torch', str(torch_fixtures / 'state_dict_c19.npz'), '--out', str(out)]
      )
      == 2
  )
  assert 'already holds' in capsys.readouterr().err
  # And back: the checkpoint as an original-layout state dict, identical to the source.
  assert (
      convert_command.main(['--checkpoint', str(out), '--out-torch', str(tmp_path / 'back.npz')])
      == 0
  )
  with (
      np.load(tmp_path / 'back.npz') as back,
      np.load(torch_fixtures / 'state_dict_c19.npz') as original,
  ):
    assert sorted(back.files) == sorted(original.files)
    for key in original.files:
      if not key.endswith('num_batches_tracked'):
        np.testing.assert_array_equal(back[key], original[key], err_msg=key)
  assert (
      convert_command.main(
          ['--checkpoint', str(tmp_path / 'none'), '--out-torch', str(tmp_path / 'x.npz')]
      )
      == 2
  )
  assert 'does not exist' in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# Outputs that would replace an input, and files written whole (issue 38).


@pytest.fixture
def weights8(tmp_path):
  """An ESNet(8) state dict written by `save_torch_weights`, and its bytes."""
  path = tmp_path / 'w.npz'
  resolver.save_torch_weights(random_variables(8), path)
  return path, path.read_bytes()


def _one_error_line(capsys) -> str:
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith('error: '), err
  return err


def test_cli_refuses_an_output_that_is_its_input_or_cannot_be_written(
    tmp_path, weights8, capsys, monkeypatch
):
  path, data = weights8
  (tmp_path / 'link.npz').symlink_to(path)
  (tmp_path / 'notes.txt').write_text('mine')
  refused = [
      (['--checkpoint', path, '--out-torch', path], f'--out-torch {path}: is --checkpoint {path},'),
      (
          ['--checkpoint', path, '--out-torch', tmp_path / 'link.npz'],
          f'--out-torch {tmp_path / "link.npz"}: is --checkpoint {path}, which this command reads',
      ),
      (['--checkpoint', path, '--out-torch', tmp_path], f'--out-torch {tmp_path}: is a folder'),
      (
          ['--checkpoint', path, '--out-torch', tmp_path / 'w.h5'],
          f'--out-torch {tmp_path / "w.h5"}: expected a .npz, .pth or .pt file name.',
      ),
      (['--torch', path, '--out', path], f'--out {path}: is --torch {path}, which this command'),
      (
          ['--torch', path, '--out', tmp_path / 'notes.txt'],
          f'--out {tmp_path / "notes.txt"}: is a file; expected a folder.',
      ),
      (
          ['--torch', path, '--out', tmp_path / 'notes.txt' / 'ckpt'],
          f'{tmp_path / "notes.txt"} is not a folder',
      ),
  ]
  for argv, message in refused:
    assert convert_command.main(list(map(str, argv))) == 2, argv
    assert message in _one_error_line(capsys)
  assert path.read_bytes() == data and (tmp_path / 'notes.txt').read_text() == 'mine'
  assert sorted(p.name for p in tmp_path.iterdir()) == ['link.npz', 'notes.txt', 'w.npz']

  # The shipped weights behind pretrained:NAME are an input too (and are never written
  # here, whatever the check says).
  from esnet_jax.weights import pretrained

  def must_not_write(*args):
    raise AssertionError(f'save_torch_weights{args[1:]} was called')

  monkeypatch.setattr(resolver, 'save_torch_weights', must_not_write)
  shipped = pretrained.get('camvid').path
  assert (
      convert_command.main(['--checkpoint', 'pretrained:camvid', '--out-torch', str(shipped)]) == 2
  )
  assert (
      f"--out-torch {shipped}: is --checkpoint pretrained:camvid's file {shipped}, which this "
      'command reads; refusing to overwrite it' in _one_error_line(capsys)
  )


def test_out_torch_is_written_whole_under_its_own_name(tmp_path, weights8, monkeypatch):
  path, data = weights8
  out = tmp_path / 'BACK.NPZ'  # np.savez given this name would write BACK.NPZ.npz.
  assert convert_command.main(['--checkpoint', str(path), '--out-torch', str(out)]) == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ['BACK.NPZ', 'w.npz']
  with np.load(out) as back, np.load(path) as original:
    assert sorted(back.files) == sorted(original.files)
    for key in original.files:
      np.testing.assert_array_equal(back[key], original[key])
  before = out.read_bytes()

  def disk_full(file, **arrays):
    file.write(b'PK\x03\x04 half')
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(np, 'savez', disk_full)
  with pytest.raises(OSError, match='No space left'):
    resolver.save_torch_weights(random_variables(8, seed=1), out)
  assert out.read_bytes() == before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['BACK.NPZ', 'w.npz']
