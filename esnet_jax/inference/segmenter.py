"""ESNet inference: test-time augmentation and `Segmenter`.

- `deployed_network` and `tta_size` live in `esnet_jax.model.deployed` (re-exported here): the
  one place that turns trained variables into what inference runs.
- `predict_probabilities` is test-time augmentation (scales, horizontal flip),
  shared by evaluation, `Segmenter` and so predict and video.
- `Segmenter` owns everything between a user's uint8 RGB image and a class map:
  the training normalisation, padding to a multiple of 8 and cropping back, TTA,
  and one compiled function per input shape, reused across calls; on another engine
  (`esnet_jax.deploy.engines`) the same steps run around the engine's call.
"""

from __future__ import annotations

import math
import os
import time
from typing import Any, Iterable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.deploy import engines
from esnet_jax.system import memory_budget
from esnet_jax.weights import resolver
from esnet_jax.model.deployed import deployed_network, tta_size
from esnet_jax.model.esnet import num_classes_of
from esnet_jax.deploy.engines import views as engine_views
from esnet_jax.model.esnet import ESNet
from esnet_jax.data.transforms import MEAN_RGB, STD_RGB


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

  `engine` runs the network (`esnet_jax.deploy.engines`: 'jax', 'onnxruntime', 'openvino',
  or 'auto', the fastest installed for the precision) and `precision` is 'float32',
  'bfloat16' or 'int8' (None: `dtype`'s); INT8 of weights that ship no INT8 file needs
  `calibration` once (a dataset config or a folder of images; the file is cached).
  `threads` bounds ONNX Runtime's and OpenVINO's threads. JAX compiles normalisation,
  padding, the views and the argmax into one program; the other engines run the same
  steps around their call (`engines.views`).
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
      engine: str = 'jax',
      precision: str | None = None,
      threads: int | None = None,
      calibration: str = '',
  ):
    scales = tuple(float(s) for s in scales)
    if not scales or not all(math.isfinite(s) and s > 0 for s in scales):
      raise ValueError(f'scales must be positive and finite, got {scales}.')
    self.scales, self.flip = scales, bool(flip)
    self.num_classes = num_classes_of(variables)
    self.meta = dict(meta or {})
    if precision is None:
      precision = 'bfloat16' if jnp.dtype(dtype) == jnp.bfloat16 else 'float32'
    self.precision = precision
    self.engine_name = engines.resolve(engine, precision)
    self.dtype = jnp.dtype(jnp.bfloat16 if precision == 'bfloat16' else jnp.float32)
    self.fold_bn = fold_bn
    self._mean = np.asarray(mean, np.float32).reshape(3)
    self._std = np.asarray(std, np.float32).reshape(3)
    self.engine: engines.Engine | None = None
    if self.engine_name != 'jax':  # Another runtime: normalisation and views in `views`.
      settings = engines.EngineSettings(
          precision=precision,
          kernels=kernels,
          fold_bn=fold_bn,
          threads=threads,
          calibration=calibration,
      )
      self.engine = engines.build(variables, self.meta, self.engine_name, settings)
      return
    self.model, variables = deployed_network(
        variables, kernels=kernels, dtype=self.dtype, fold_bn=fold_bn
    )
    self.variables = jax.device_put(variables)
    self.compiled_shapes: set[tuple[Any, ...]] = set()
    self._forward = jax.jit(self._forward_impl, static_argnames='with_probs')

  @classmethod
  def from_checkpoint(
      cls, path: str | os.PathLike[str], which: str = 'latest', **kwargs: Any
  ) -> 'Segmenter':
    """From anything `resolver.load` accepts: a training workdir, an orbax checkpoint,
    an original PyTorch weights file, or `pretrained:NAME`."""
    loaded = resolver.load(path, which)
    for key in ('mean', 'std'):
      if key in loaded.meta:
        kwargs.setdefault(key, loaded.meta[key])
    return cls(loaded.variables, meta=loaded.meta, **kwargs)

  @classmethod
  def from_pretrained(cls, name: str, **kwargs: Any) -> 'Segmenter':
    """Weights shipped with the package, e.g. 'camvid' (see `esnet_jax.weights.pretrained`)."""
    return cls.from_checkpoint(resolver.PRETRAINED_PREFIX + name, **kwargs)

  @property
  def augmented(self) -> bool:
    """Whether test-time augmentation is on (more than the one view at scale 1)."""
    return self.flip or self.scales != (1.0,)

  def memory_needed(self, height: int, width: int, batch: int = 1) -> int:
    """Estimated peak bytes of segmenting BATCH images of HEIGHTxWIDTH with this TTA."""
    return memory_budget.inference_bytes(
        height, width, num_classes=self.num_classes, batch=batch, scales=self.scales, flip=self.flip
    )

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

  def warm_up(self, batch: int, height: int, width: int) -> float:
    """Compiles for batches of BATCH images of HEIGHTxWIDTH (one call on black images);
    returns the seconds it took, so that a video's frame rate can be stated without it."""
    start = time.perf_counter()
    self.predict(np.zeros((batch, height, width, 3), np.uint8))
    return time.perf_counter() - start

  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Class maps (N, H, W) of a uint8 batch (N, H, W, 3): `predict` for batches."""
    return self.predict(np.asarray(images))

  def predict(self, images: np.ndarray | Sequence[np.ndarray], return_probs: bool = False) -> Any:
    """Class maps for one image (H, W, 3), a batch (N, H, W, 3) or a list of images.

    Returns int32 class maps shaped like the input minus the channel axis (a list
    for a list input); with `return_probs`, also float32 softmax probabilities
    (..., num_classes), averaged over the test-time views.

    Raises:
      MemoryBudgetError: the batch at these scales would not fit in the memory the machine
        has free (`memory_budget`), e.g. scales=(25,) meant as 0.25.
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
    scales = ', '.join(f'{s:g}' for s in self.scales) + (' with flip' if self.flip else '')
    memory_budget.check(
        self.memory_needed(*batch.shape[1:3], batch=batch.shape[0]),
        f'Segmenter.predict on images of shape {batch.shape} at scales {scales}',
    )
    if self.engine is not None:
      classes, probs = engine_views.predict(
          self.engine,
          batch,
          mean=self._mean,
          std=self._std,
          scales=self.scales,
          flip=self.flip,
          with_probs=return_probs,
      )
    else:
      classes, probs = self._forward(self.variables, batch, with_probs=return_probs)
    classes = np.asarray(classes)
    if single:
      classes = classes[0]
    if not return_probs:
      return classes
    probs = np.asarray(probs, np.float32)
    return classes, (probs[0] if single else probs)
