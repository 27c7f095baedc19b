"""Segmenter: normalisation, padding, BN folding, jit reuse, checkpoints, errors."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esnet_jax.weights import checkpoints
from esnet_jax.model import folding
from esnet_jax.inference.segmenter import Segmenter
from esnet_jax.model.esnet import ESNet
from esnet_jax.data.transforms import MEAN_RGB, STD_RGB

from conftest import random_variables


def _image(h, w, seed=0, n=None):
  shape = (h, w, 3) if n is None else (n, h, w, 3)
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _reference_logits(variables, image):
  """Unfolded network on the normalised image, padded to a multiple of 8 and cropped."""
  x = (image.astype(np.float32) - np.asarray(MEAN_RGB)) / np.asarray(STD_RGB)
  h, w = x.shape[1:3]
  x = np.pad(x, ((0, 0), (0, -h % 8), (0, -w % 8), (0, 0)))
  return np.asarray(ESNet(19).apply(variables, x))[:, :h, :w]


def test_bn_folding_is_exact(reference_variables, parity):
  x = jnp.asarray(parity['input_nchw'].transpose(0, 2, 3, 1))
  folded = folding.fold_batch_norm(reference_variables)
  assert 'batch_stats' not in folded
  expected = ESNet(19).apply(reference_variables, x)
  got = ESNet(19, bn_folded=True).apply(folded, x)
  chex.assert_trees_all_close(got, expected, atol=1e-5)
  template = jax.eval_shape(ESNet(19, bn_folded=True).init, jax.random.key(0), x)
  chex.assert_trees_all_equal_shapes(template, folded)


def test_predict_pads_crops_and_matches_the_network(reference_variables):
  seg = Segmenter(reference_variables)
  image = _image(37, 45)
  classes, probs = seg.predict(image, return_probs=True)
  chex.assert_shape(classes, (37, 45))
  chex.assert_shape(probs, (37, 45, 19))
  assert classes.dtype == np.int32
  ref = _reference_logits(reference_variables, image[None])[0]
  np.testing.assert_allclose(probs, jax.nn.softmax(ref, -1), atol=1e-5)
  assert (classes == ref.argmax(-1)).mean() > 0.999
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_batches_lists_and_one_compilation_per_shape(reference_variables):
  seg = Segmenter(reference_variables)
  batch = _image(24, 32, n=2)
  maps = seg.predict(batch)
  chex.assert_shape(maps, (2, 24, 32))
  np.testing.assert_array_equal(seg.predict(batch[1]), maps[1])  # one image == batch row
  seg.predict(_image(24, 32, seed=3, n=2))
  assert len(seg.compiled_shapes) == 2  # (2,24,32) and (1,24,32); the repeat reused
  out = seg.predict([_image(16, 16), _image(24, 32)])
  assert [m.shape for m in out] == [(16, 16), (24, 32)]


def test_unfolded_and_bfloat16_paths(reference_variables):
  image = _image(32, 40)
  folded = Segmenter(reference_variables).predict(image, return_probs=True)[1]
  plain = Segmenter(reference_variables, fold_bn=False).predict(image, return_probs=True)[1]
  np.testing.assert_allclose(folded, plain, atol=1e-5)
  _, bf16 = Segmenter(reference_variables, dtype=jnp.bfloat16).predict(image, return_probs=True)
  chex.assert_tree_all_finite(bf16)
  assert np.abs(bf16 - plain).mean() < 0.02


def test_bad_images_are_rejected_with_a_clear_message(reference_variables):
  seg = Segmenter(reference_variables)
  with pytest.raises(TypeError, match='uint8'):
    seg.predict(np.zeros((16, 16, 3), np.float32))
  with pytest.raises(ValueError, match=r'\(H, W, 3\).*got shape \(16, 16, 4\)'):
    seg.predict(np.zeros((16, 16, 4), np.uint8))


def test_from_checkpoint_and_from_weights_file(tmp_path, torch_fixtures, reference_variables):
  ckpt = tmp_path / 'converted'
  checkpoints.save_variables(
      ckpt,
      reference_variables,
      num_classes=19,
      meta={'mean': [0.0, 0.0, 0.0], 'std': [1.0, 1.0, 1.0]},
  )
  image = _image(16, 24)
  from_dir = Segmenter.from_checkpoint(ckpt)
  assert from_dir.num_classes == 19 and from_dir.meta['num_classes'] == 19
  # The checkpoint's normalisation (here: none) is the one applied.
  x = image[None].astype(np.float32)
  want = np.asarray(ESNet(19).apply(reference_variables, x)).argmax(-1)[0]
  assert (from_dir.predict(image) == want).mean() > 0.999
  from_file = Segmenter.from_checkpoint(torch_fixtures / 'state_dict_c19.npz')
  np.testing.assert_array_equal(
      from_file.predict(image), Segmenter(reference_variables).predict(image)
  )
  with pytest.raises(checkpoints.CheckpointNotFoundError, match='No checkpoint found'):
    Segmenter.from_checkpoint(tmp_path)


def _scene(seed: int, size=(32, 48)) -> np.ndarray:
  from esnet_jax.data.datasets.synthetic import render_scene

  return render_scene(np.random.default_rng(seed), size)[0]


def test_flip_tta_is_mirror_equivariant_and_multiscale_keeps_the_size():
  variables = random_variables(8)
  image = _scene(4)
  flip = Segmenter(variables, flip=True)
  maps = flip(np.stack([image, image[:, ::-1]]))
  assert maps.dtype == np.int32
  np.testing.assert_array_equal(maps[0], maps[1][:, ::-1])
  plain = Segmenter(variables)(image[None])[0]
  assert (maps[0] != plain).any()  # the mirrored view changed some pixels

  odd = _scene(5, (37, 45))
  multi = Segmenter(variables, scales=(0.5, 1.5), flip=True)
  classes, probs = multi.predict(odd, return_probs=True)
  assert classes.shape == (37, 45) and probs.shape == (37, 45, 8)
  assert classes.min() >= 0 and classes.max() < 8  # probabilities were resized, not ids
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)  # the mean over the 4 views
  np.testing.assert_array_equal(classes, probs.argmax(-1))
  with pytest.raises(ValueError, match='scales must be positive'):
    Segmenter(variables, scales=(0.0,))


def test_tta_of_one_view_is_the_plain_argmax_and_evaluation_uses_the_same_function():
  """scales=(1.0,), no flip: `predict_probabilities` is one softmax, whose argmax is the
  network's; eval (train.eval_step) and Segmenter share the function."""
  from esnet_jax.inference import segmenter

  variables = random_variables(8)
  model, folded = segmenter.deployed_network(variables, kernels='xla')
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 32, 48, 3)), jnp.float32)
  probs = segmenter.predict_probabilities(folded, x, model=model, out_size=(32, 48))
  logits = model.apply(folded, x, train=False)
  np.testing.assert_allclose(probs, jax.nn.softmax(logits, -1), rtol=1e-6)
  assert segmenter.tta_size(37, 45, 0.5) == (16, 24) and segmenter.tta_size(5, 5, 0.5) == (8, 8)
