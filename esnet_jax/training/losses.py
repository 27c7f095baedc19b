"""Segmentation losses: class-weighted cross-entropy with an ignore id, OHEM, ENet weights.

ENet class weights are cached in the workdir (`read_cached_class_weights` reads
the cache back and treats a damaged one as absent).

Losses return a (weighted sum, normaliser) pair rather than a mean, so that the
training step can normalise by the GLOBAL number of (weighted) pixels across
devices and hosts: a pmapped step then equals a single-device step on the same
global batch.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def _nll(
    logits: jax.Array, labels: jax.Array, ignore_label: int
) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
  """Per-pixel negative log-likelihood, the valid mask, labels safe to index with, and
  the log-probabilities."""
  num_classes = logits.shape[-1]
  valid = (labels != ignore_label) & (labels >= 0) & (labels < num_classes)
  safe = jnp.where(valid, labels, 0)
  # log-softmax times one-hot: `softmax_cross_entropy_with_integer_labels` makes XLA
  # constant-fold a scatter for seconds at compile time on CPU.
  logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  nll = -jnp.sum(logp * jax.nn.one_hot(safe, num_classes, dtype=logp.dtype), axis=-1)
  return nll, valid, safe, logp


def cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    *,
    ignore_label: int,
    class_weights: jax.Array | None = None,
    ohem_threshold: float | None = None,
    ohem_min_kept: int = 0,
    label_smoothing: float = 0.0,
) -> tuple[jax.Array, jax.Array]:
  """Weighted cross-entropy over non-ignored pixels: returns (sum, normaliser).

  With class weights w, the mean loss `sum / normaliser` is PyTorch's
  `CrossEntropyLoss(weight=w, ignore_index=...)`: sum_i w_{y_i} nll_i / sum_i w_{y_i}.
  OHEM (`ohem_threshold` a probability, e.g. 0.7) keeps only pixels whose true-class
  probability is below the threshold, and at least the `ohem_min_kept` hardest.
  Label smoothing `e` trains each pixel towards (1 - e) on its class and e spread evenly
  over all classes (PyTorch's `label_smoothing` when unweighted; with class weights each
  pixel's whole loss carries its own class's weight); OHEM still picks pixels by the plain nll.
  """
  nll, valid, safe, logp = _nll(logits, labels, ignore_label)
  weight = valid.astype(jnp.float32)
  if class_weights is not None:
    weight = weight * jnp.asarray(class_weights, jnp.float32)[safe]
  if ohem_threshold is not None:
    weight = weight * ohem_mask(nll, valid, ohem_threshold, ohem_min_kept)
  if label_smoothing:
    nll = (1.0 - label_smoothing) * nll - label_smoothing * jnp.mean(logp, axis=-1)
  return jnp.sum(weight * nll), jnp.sum(weight)


def ohem_mask(nll: jax.Array, valid: jax.Array, threshold: float, min_kept: int) -> jax.Array:
  """1.0 for the hard pixels OHEM trains on, 0.0 elsewhere."""
  hard_nll = -jnp.log(threshold)
  masked = jnp.where(valid, nll, -jnp.inf).reshape(-1)
  if min_kept > 0:
    k = min(int(min_kept), masked.shape[0])
    kth = jax.lax.top_k(masked, k)[0][-1]
    hard_nll = jnp.minimum(hard_nll, kth)
  return (valid & (nll >= hard_nll)).astype(jnp.float32)


def enet_class_weights(pixel_counts: np.ndarray, c: float = 1.02) -> np.ndarray:
  """ENet's weights w_c = 1 / ln(c + p_c), p_c the class's share of labelled pixels."""
  counts = np.asarray(pixel_counts, np.float64)
  if counts.sum() <= 0:
    raise ValueError(
        'Cannot compute class weights: the training labels have no ' 'labelled (non-ignored) pixel.'
    )
  return (1.0 / np.log(c + counts / counts.sum())).astype(np.float32)


def count_pixels(labels: Iterable[np.ndarray], num_classes: int) -> np.ndarray:
  """Pixels per class over label maps; ignored and out-of-range values are skipped."""
  counts = np.zeros(num_classes, np.int64)
  for label in labels:
    flat = np.asarray(label).reshape(-1)
    flat = flat[(flat >= 0) & (flat < num_classes)]
    counts += np.bincount(flat.astype(np.int64), minlength=num_classes)[:num_classes]
  return counts


def read_cached_class_weights(
    path: str | os.PathLike[str], class_names: Sequence[str]
) -> np.ndarray | None:
  """The class weights cached in `path` (a `class_weights.json`), or None to recompute them.

  None when there is no cache, when it was made for other classes, or when it is
  damaged (not JSON, cut short, weights missing, of the wrong count, or not
  finite and positive); damage is also reported in one warning line on stderr,
  because the cache is only a shortcut and recomputing it loses nothing.
  """
  path = Path(path)
  if not path.exists():
    return None
  try:
    cached = json.loads(path.read_text(encoding='utf-8'))
    if not isinstance(cached, dict):
      raise ValueError(f'expected a JSON object, found {type(cached).__name__}')
    if cached.get('classes') != list(class_names):
      return None  # Made for another dataset: recompute, nothing is wrong.
    weights = np.asarray(cached.get('weights'), np.float64)
    if weights.shape != (len(class_names),):
      raise ValueError(f'expected {len(class_names)} weights, found shape {weights.shape}')
    if not (np.isfinite(weights).all() and (weights > 0).all()):
      raise ValueError('the weights are not all finite and positive')
  except (OSError, ValueError, TypeError) as e:  # JSONDecodeError and UnicodeDecodeError too.
    print(
        f'warning: {path} is damaged ({" ".join(str(e).split())[:200]}); '
        'recomputing the class weights.',
        file=sys.stderr,
        flush=True,
    )
    return None
  return weights.astype(np.float32)
