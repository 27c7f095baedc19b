"""Between uint8 images and an engine: normalisation, padding, test-time views and the argmax.

`inference.Segmenter` compiles all of this into one XLA program for the JAX engine; for
the other engines the same steps run here around the engine call, with the same
arithmetic: the image normalised with the checkpoint's mean and std, padded at the bottom
and right to multiples of 8 with zeros (the mean pixel), each test-time scale resized
bilinearly (`deployed.tta_size`), each view's logits resized back before the softmax,
probabilities summed over views, and the argmax taken on the sum. An engine with a
`classes(images, mean, std)` method (OpenVINO) does normalisation and argmax itself when
only class maps of one view are asked and no padding is needed.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.model.deployed import tta_size
from esnet_jax.deploy.engines.base import Engine


def _resize(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
  n, _, _, c = x.shape
  return np.asarray(jax.image.resize(jnp.asarray(x), (n, *size, c), 'bilinear'))


def _softmax(logits: np.ndarray) -> np.ndarray:
  shifted = logits - logits.max(axis=-1, keepdims=True)
  e = np.exp(shifted)
  return e / e.sum(axis=-1, keepdims=True)


def predict(
    engine: Engine,
    images: np.ndarray,
    *,
    mean: np.ndarray,
    std: np.ndarray,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    with_probs: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
  """Class maps (N, H, W) int32 of uint8 images (N, H, W, 3), and probabilities if asked."""
  n, h, w, _ = images.shape
  plain = tuple(scales) == (1.0,) and not flip
  if plain and not with_probs and h % 8 == 0 and w % 8 == 0 and hasattr(engine, 'classes'):
    return engine.classes(images, mean, std), None  # Normalisation and argmax in the engine.
  x = (images.astype(np.float32) - mean) / std
  x = np.pad(x, ((0, 0), (0, -h % 8), (0, -w % 8), (0, 0)))
  ph, pw = x.shape[1:3]
  if plain:
    logits = engine(x)[:, :h, :w]
    classes = logits.argmax(-1).astype(np.int32)
    return classes, (_softmax(logits) if with_probs else None)
  total = 0.0
  for scale in scales:
    view = x if scale == 1.0 else _resize(x, tta_size(ph, pw, scale))
    for flipped in (False, True) if flip else (False,):
      logits = engine(np.ascontiguousarray(view[:, :, ::-1]) if flipped else view)
      if flipped:
        logits = logits[:, :, ::-1]
      if logits.shape[1:3] != (ph, pw):
        logits = _resize(logits, (ph, pw))
      total = total + _softmax(logits)
  total = total[:, :h, :w]
  classes = total.argmax(-1).astype(np.int32)
  views = len(scales) * (2 if flip else 1)
  return classes, (total / views if with_probs else None)
