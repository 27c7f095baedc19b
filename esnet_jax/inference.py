"""Jitted ESNet inference on raw uint8 images.

`Segmenter` owns everything between a user's RGB image and a class map: the
training normalisation, padding to a multiple of 8 and cropping back, the
BN-folded network (folding is exact up to float rounding and removes the
normalisation work from every call), and one compiled function per input
shape, reused across calls.
"""

from __future__ import annotations

import os
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax import folding, implementations, weights
from esnet_jax.convert import num_classes_of
from esnet_jax.transforms import MEAN_RGB, STD_RGB


class Segmenter:
  """Segment uint8 RGB images with ESNet.

  Example:
    seg = Segmenter.from_pretrained('camvid')       # shipped CamVid weights
    seg = Segmenter.from_checkpoint('workdirs/camvid')
    class_map = seg.predict(image)                 # (H, W) int32
    maps, probs = seg.predict(batch, return_probs=True)
  """

  def __init__(
      self,
      variables: Mapping[str, Any],
      *,
      mean: Sequence[float] = MEAN_RGB,
      std: Sequence[float] = STD_RGB,
      dtype: Any = jnp.float32,
      fold_bn: bool = True,
      meta: Mapping[str, Any] | None = None,
      kernels: str = 'auto',
  ):
    self.num_classes = num_classes_of(variables)
    self.meta = dict(meta or {})
    self.dtype = jnp.dtype(dtype)
    self.fold_bn = fold_bn
    self.model = implementations.esnet(
        self.num_classes, kernels=kernels, dtype=self.dtype, bn_folded=fold_bn
    )
    if fold_bn:
      variables = folding.fold_batch_norm(variables, epsilon=self.model.bn_epsilon)
    self.variables = jax.device_put(variables)
    self._mean = np.asarray(mean, np.float32).reshape(3)
    self._std = np.asarray(std, np.float32).reshape(3)
    self.compiled_shapes: set[tuple[Any, ...]] = set()
    self._forward = jax.jit(self._forward_impl, static_argnames='with_probs')

  @classmethod
  def from_checkpoint(
      cls, path: str | os.PathLike[str], which: str = 'latest', **kwargs: Any
  ) -> 'Segmenter':
    """From anything `weights.load` accepts: a training workdir, an orbax checkpoint,
    an original PyTorch weights file, or `pretrained:NAME`."""
    loaded = weights.load(path, which)
    for key in ('mean', 'std'):
      if key in loaded.meta:
        kwargs.setdefault(key, loaded.meta[key])
    return cls(loaded.variables, meta=loaded.meta, **kwargs)

  @classmethod
  def from_pretrained(cls, name: str, **kwargs: Any) -> 'Segmenter':
    """Weights shipped with the package, e.g. 'camvid' (see `esnet_jax.pretrained`)."""
    return cls.from_checkpoint(weights.PRETRAINED_PREFIX + name, **kwargs)

  def _forward_impl(
      self, variables: Any, images: jax.Array, with_probs: bool
  ) -> tuple[jax.Array, jax.Array | None]:
    self.compiled_shapes.add((tuple(images.shape), with_probs))  # Runs at trace time only.
    n, h, w, _ = images.shape
    x = (images.astype(jnp.float32) - self._mean) / self._std
    pad_h, pad_w = -h % 8, -w % 8
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)))
    logits = self.model.apply(variables, x, train=False)[:, :h, :w]
    classes = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return classes, (jax.nn.softmax(logits, axis=-1) if with_probs else None)

  def predict(self, images: np.ndarray | Sequence[np.ndarray], return_probs: bool = False) -> Any:
    """Class maps for one image (H, W, 3), a batch (N, H, W, 3) or a list of images.

    Returns int32 class maps shaped like the input minus the channel axis (a list
    for a list input); with `return_probs`, also float32 softmax probabilities
    (..., num_classes).
    """
    if isinstance(images, (list, tuple)):
      results = [self.predict(im, return_probs) for im in images]
      return ([r[0] for r in results], [r[1] for r in results]) if return_probs else results
    images = np.asarray(images)
    single = images.ndim == 3
    batch = images[None] if single else images
    if batch.ndim != 4 or batch.shape[-1] != 3:
      raise ValueError(
          f'Segmenter.predict expects RGB images (H, W, 3) or (N, H, W, 3); '
          f'got shape {images.shape}.'
      )
    if batch.dtype != np.uint8:
      raise TypeError(
          f'Segmenter.predict expects uint8 RGB images (0..255); got '
          f'{batch.dtype}. Convert with np.asarray(img, np.uint8).'
      )
    classes, probs = self._forward(self.variables, batch, with_probs=return_probs)
    classes = np.asarray(classes)
    if single:
      classes = classes[0]
    if not return_probs:
      return classes
    probs = np.asarray(probs, np.float32)
    return classes, (probs[0] if single else probs)
