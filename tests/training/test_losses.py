"""esnet_jax.training.losses: cross-entropy with ignore and class weights, OHEM, ENet weights."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esnet_jax.training import losses


def _random(seed, shape):
  return jax.random.normal(jax.random.key(seed), shape)


def test_weighted_cross_entropy_matches_the_definition():
  logits = _random(0, (2, 4, 5, 3))
  labels = jnp.array(np.random.default_rng(0).integers(0, 4, (2, 4, 5)))  # 3 = ignore
  w = jnp.array([0.5, 2.0, 1.0])
  total, norm = losses.cross_entropy(logits, labels, ignore_label=3, class_weights=w)
  logp = np.asarray(jax.nn.log_softmax(logits))
  lab = np.asarray(labels)
  valid = lab != 3
  picked = np.take_along_axis(logp, np.where(valid, lab, 0)[..., None], -1)[..., 0]
  ww = np.asarray(w)[np.where(valid, lab, 0)] * valid
  np.testing.assert_allclose(total, -(ww * picked).sum(), rtol=1e-5)
  np.testing.assert_allclose(norm, ww.sum(), rtol=1e-6)


def test_label_smoothing_matches_the_definition_and_pytorchs_unweighted_loss():
  logits = _random(4, (2, 3, 4, 5))
  labels = jnp.array(np.random.default_rng(1).integers(0, 6, (2, 3, 4)))  # 5 = ignore
  w = jnp.array([0.5, 2.0, 1.0, 3.0, 1.5])
  e = 0.1
  total, norm = losses.cross_entropy(
      logits, labels, ignore_label=5, class_weights=w, label_smoothing=e
  )
  logp = np.asarray(jax.nn.log_softmax(logits))
  lab = np.asarray(labels)
  valid = lab != 5
  safe = np.where(valid, lab, 0)
  picked = np.take_along_axis(logp, safe[..., None], -1)[..., 0]
  per_pixel = -(1 - e) * picked - e * logp.mean(-1)
  ww = np.asarray(w)[safe] * valid
  np.testing.assert_allclose(total, (ww * per_pixel).sum(), rtol=1e-5)
  np.testing.assert_allclose(norm, ww.sum(), rtol=1e-6)
  # Unweighted, the mean is what torch.nn.CrossEntropyLoss(label_smoothing=e) computes.
  total, norm = losses.cross_entropy(logits, labels, ignore_label=5, label_smoothing=e)
  np.testing.assert_allclose(total / norm, per_pixel[valid].mean(), rtol=1e-5)
  plain, _ = losses.cross_entropy(logits, labels, ignore_label=5)
  np.testing.assert_allclose(plain, -picked[valid].sum(), rtol=1e-5)
  assert abs(float(total) - float(plain)) > 1e-3

  logits = _random(1, (1, 4, 4, 3))
  labels = jnp.zeros((1, 4, 4), jnp.int32)
  all_ignored = jnp.full((1, 4, 4), 255)
  total, norm = losses.cross_entropy(logits, all_ignored, ignore_label=255)
  assert float(total) == 0.0 and float(norm) == 0.0
  half = labels.at[:, :2].set(255)
  t_half, n_half = losses.cross_entropy(logits, half, ignore_label=255)
  t_bottom, n_bottom = losses.cross_entropy(logits[:, 2:], labels[:, 2:], ignore_label=255)
  np.testing.assert_allclose(t_half, t_bottom, rtol=1e-6)
  assert float(n_half) == float(n_bottom) == 8
  grad = jax.grad(lambda l: losses.cross_entropy(l, half, ignore_label=255)[0])(logits)
  assert float(jnp.abs(grad[:, :2]).max()) == 0.0


def test_ohem_keeps_hard_pixels_and_at_least_min_kept():
  nll = jnp.array([0.01, 0.1, 1.0, 2.0, 3.0])
  valid = jnp.array([True, True, True, True, False])
  mask = losses.ohem_mask(nll, valid, threshold=0.7, min_kept=0)  # -log 0.7 = 0.357
  np.testing.assert_array_equal(mask, [0, 0, 1, 1, 0])
  mask = losses.ohem_mask(nll, valid, threshold=0.7, min_kept=3)
  np.testing.assert_array_equal(mask, [0, 1, 1, 1, 0])


def test_enet_class_weights_and_pixel_counts():
  counts = losses.count_pixels([np.array([[0, 0, 1], [255, 2, 0]])], num_classes=3)
  np.testing.assert_array_equal(counts, [3, 1, 1])
  w = losses.enet_class_weights(counts)
  np.testing.assert_allclose(w, 1 / np.log(1.02 + np.array([0.6, 0.2, 0.2])), rtol=1e-6)
  assert w[1] > w[0]  # rarer classes weigh more
  with pytest.raises(ValueError, match='no labelled'):
    losses.enet_class_weights(np.zeros(3))
