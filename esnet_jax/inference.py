"""ESNet inference: the deployed network, test-time augmentation, and `Segmenter`.

- `deployed_network` is the one place that turns trained variables into what
  inference runs: the implementation `kernels` selects, the compute dtype, and
  BatchNorm folded into the convolutions (exact up to float rounding, and it
  removes the normalisation work from every call). `Segmenter`, export, the
  benchmark and layer timing all build their network with it.
- `predict_probabilities` is test-time augmentation (scales, horizontal flip),
  shared by evaluation, `Segmenter` and so predict and video.
- `Segmenter` owns everything between a user's uint8 RGB image and a class map:
  the training normalisation, padding to a multiple of 8 and cropping back, TTA,
  and one compiled function per input shape, reused across calls.
"""

from __future__ import annotations

import os
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax import folding, implementations, weights
from esnet_jax.convert import num_classes_of
from esnet_jax.models import ESNet
from esnet_jax.transforms import MEAN_RGB, STD_RGB


def deployed_network(
    variables: Mapping[str, Any],
    *,
    kernels: str = 'auto',
    dtype: Any = jnp.float32,
    fold_bn: bool = True,
) -> tuple[ESNet, dict[str, Any]]:
  """The network inference runs on `variables`, and the variables it takes.

  Args:
    variables: `{'params', 'batch_stats'}` of a trained `ESNet`.
    kernels: who computes it, 'auto' | 'xla' | 'native' (`esnet_jax.implementations`).
    dtype: compute dtype; parameters stay float32.
    fold_bn: merge every BatchNorm into the convolution before it.

  Returns:
    `(model, model_variables)`: call `model.apply(model_variables, x, train=False)`
    on normalised NHWC images whose sides are multiples of 8.
  """
  model = implementations.esnet(
      num_classes_of(variables), kernels=kernels, dtype=jnp.dtype(dtype), bn_folded=fold_bn
  )
  if fold_bn:
    return model, folding.fold_batch_norm(variables, epsilon=model.bn_epsilon)
  return model, {k: variables[k] for k in ('params', 'batch_stats')}


def tta_size(height: int, width: int, scale: float) -> tuple[int, int]:
  """The input size test-time augmentation runs at for `scale`: multiples of 8, at least 8."""
  return (max(8, int(round(height * scale / 8)) * 8), max(8, int(round(width * scale / 8)) * 8))


def predict_probabilities(
    variables: Mapping[str, Any],
    image: jax.Array,
    *,
    model: ESNet,
    out_size: tuple[int, int],
    scales: Iterable[float] = (1.0,),
    flip: bool = False,
) -> jax.Array:
  """Softmax probabilities at `out_size`, summed over scales and horizontal flips.

  `image` is normalised NHWC; each scale resizes it bilinearly (`tta_size`), each
  view's logits are resized back bilinearly before the softmax, so class ids are
  never interpolated. The sum (not the mean) keeps evaluation's argmax bitwise as
  it was; divide by the number of views for probabilities.
  """
  n, h, w, _ = image.shape
  total = 0.0
  for scale in scales:
    x = image
    if scale != 1.0:
      x = jax.image.resize(image, (n, *tta_size(h, w, scale), 3), 'bilinear')
    views = [(x, False)] + ([(x[:, :, ::-1], True)] if flip else [])
    for view, flipped in views:
      logits = model.apply(variables, view, train=False)
      if flipped:
        logits = logits[:, :, ::-1]
      if logits.shape[1:3] != tuple(out_size):
        logits = jax.image.resize(logits, (n, *out_size, logits.shape[-1]), 'bilinear')
      total = total + jax.nn.softmax(logits, axis=-1)
  return total


class Segmenter:
  """Segment uint8 RGB images with ESNet.

  Example:
    seg = Segmenter.from_pretrained('camvid')       # shipped CamVid weights
    seg = Segmenter.from_checkpoint('workdirs/camvid', scales=(0.75, 1.0, 1.25), flip=True)
    class_map = seg.predict(image)                 # (H, W) int32
    maps, probs = seg.predict(batch, return_probs=True)

  `scales` and `flip` are test-time augmentation (`predict_probabilities`, as
  evaluation with `config.eval.scales` / `config.eval.flip`); without them the
  class map is the argmax of the logits themselves.
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
      scales: Sequence[float] = (1.0,),
      flip: bool = False,
  ):
    scales = tuple(float(s) for s in scales)
    if not scales or any(s <= 0 for s in scales):
      raise ValueError(f'scales must be positive, got {scales}.')
    self.scales, self.flip = scales, bool(flip)
    self.num_classes = num_classes_of(variables)
    self.meta = dict(meta or {})
    self.dtype = jnp.dtype(dtype)
    self.fold_bn = fold_bn
    self.model, variables = deployed_network(
        variables, kernels=kernels, dtype=self.dtype, fold_bn=fold_bn
    )
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

  @property
  def augmented(self) -> bool:
    """Whether test-time augmentation is on (more than the one view at scale 1)."""
    return self.flip or self.scales != (1.0,)

  def _forward_impl(
      self, variables: Any, images: jax.Array, with_probs: bool
  ) -> tuple[jax.Array, jax.Array | None]:
    self.compiled_shapes.add((tuple(images.shape), with_probs))  # Runs at trace time only.
    n, h, w, _ = images.shape
    x = (images.astype(jnp.float32) - self._mean) / self._std
    x = jnp.pad(x, ((0, 0), (0, -h % 8), (0, -w % 8), (0, 0)))  # Zero = the mean pixel.
    if self.augmented:
      total = predict_probabilities(
          variables, x, model=self.model, out_size=x.shape[1:3], scales=self.scales, flip=self.flip
      )[:, :h, :w]
      classes = jnp.argmax(total, axis=-1).astype(jnp.int32)
      views = len(self.scales) * (2 if self.flip else 1)
      return classes, (total / views if with_probs else None)
    logits = self.model.apply(variables, x, train=False)[:, :h, :w]
    classes = jnp.argmax(logits, axis=-1).astype(jnp.int32)
    return classes, (jax.nn.softmax(logits, axis=-1) if with_probs else None)

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Class maps (N, H, W) of a uint8 batch (N, H, W, 3): `predict` for batches."""
    return self.predict(np.asarray(images))

  def predict(self, images: np.ndarray | Sequence[np.ndarray], return_probs: bool = False) -> Any:
    """Class maps for one image (H, W, 3), a batch (N, H, W, 3) or a list of images.

    Returns int32 class maps shaped like the input minus the channel axis (a list
    for a list input); with `return_probs`, also float32 softmax probabilities
    (..., num_classes), averaged over the test-time views.
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
