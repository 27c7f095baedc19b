"""Per-example numpy augmentations and preprocessing for segmentation.

Every function takes and returns numpy arrays: images are uint8 RGB
[H, W, 3] (until ``normalize``), labels are integer [H, W] maps of train ids.
Geometric transforms move image and label together; labels are only ever
resampled with nearest neighbour, so they never contain ids that were not in
the input. All randomness comes from an explicit ``np.random.Generator`` so
that the input pipeline can make every example reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

# ImageNet statistics in pixel units (0..255), RGB order.
MEAN_RGB = (123.675, 116.28, 103.53)
STD_RGB = (58.395, 57.12, 57.375)

# ITU-R BT.601 luma weights, used to desaturate for the saturation jitter.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def resize_image(image: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Resizes a uint8 RGB image to (height, width) with bilinear filtering."""
  height, width = size
  if image.shape[:2] == (height, width):
    return image
  resized = Image.fromarray(image).resize((width, height), Image.BILINEAR)
  return np.asarray(resized)


def resize_label(label: np.ndarray, size: Sequence[int]) -> np.ndarray:
  """Resizes a label map to (height, width) with nearest neighbour.

  Each output pixel takes the value of the input pixel its centre falls in,
  so no new ids appear and the dtype is preserved.
  """
  height, width = size
  in_height, in_width = label.shape
  if (in_height, in_width) == (height, width):
    return label
  rows = _nearest_indices(in_height, height)
  cols = _nearest_indices(in_width, width)
  return label[rows[:, None], cols[None, :]]


def random_scale(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    scale_range: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
  """Resizes image and label by a factor drawn uniformly from ``scale_range``.

  Args:
    image: uint8 [H, W, 3].
    label: [H, W] train ids.
    rng: Source of randomness.
    scale_range: (min, max) scale factor; (1, 1) leaves the inputs unchanged.

  Returns:
    The resized (image, label); image bilinear, label nearest neighbour.
  """
  low, high = scale_range
  scale = rng.uniform(low, high) if high > low else low
  height, width = label.shape
  size = (max(1, round(height * scale)), max(1, round(width * scale)))
  return resize_image(image, size), resize_label(label, size)


def pad_to_size(
    image: np.ndarray,
    label: np.ndarray,
    size: Sequence[int],
    *,
    ignore_label: int,
    image_pad_value: Sequence[float] | float = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Pads image and label at the bottom and right to at least ``size``.

  Args:
    image: [H, W, 3].
    label: [H, W].
    size: Minimum (height, width); larger inputs are left as they are.
    ignore_label: Value of padded label pixels, so they count nowhere.
    image_pad_value: Value of padded image pixels, per channel or scalar.
      Padding with the dataset mean makes the padding zero after
      ``normalize``.

  Returns:
    The padded (image, label).
  """
  height, width = label.shape
  pad_height = max(0, size[0] - height)
  pad_width = max(0, size[1] - width)
  if not pad_height and not pad_width:
    return image, label
  out_height, out_width = height + pad_height, width + pad_width
  padded_image = np.empty((out_height, out_width, 3), image.dtype)
  padded_image[...] = np.asarray(image_pad_value).astype(image.dtype)
  padded_image[:height, :width] = image
  padded_label = np.full((out_height, out_width), ignore_label, label.dtype)
  padded_label[:height, :width] = label
  return padded_image, padded_label


def pad_to_multiple(
    image: np.ndarray,
    label: np.ndarray,
    multiple: int = 8,
    *,
    ignore_label: int,
    image_pad_value: Sequence[float] | float = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Pads image and label so both sides are multiples of ``multiple``.

  ESNet downsamples by 8, so evaluation inputs must have sides divisible by 8;
  the padded label pixels are ``ignore_label`` and do not affect metrics.
  """
  size = tuple(round_up(side, multiple) for side in label.shape)
  return pad_to_size(
      image,
      label,
      size,
      ignore_label=ignore_label,
      image_pad_value=image_pad_value,
  )


def random_crop(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    crop_size: Sequence[int],
    *,
    ignore_label: int,
    image_pad_value: Sequence[float] | float = 0,
) -> tuple[np.ndarray, np.ndarray]:
  """Crops a random (height, width) window, padding inputs that are smaller.

  Args:
    image: [H, W, 3].
    label: [H, W].
    rng: Source of randomness.
    crop_size: Output (height, width).
    ignore_label: Value of label padding.
    image_pad_value: Value of image padding (see ``pad_to_size``).

  Returns:
    (image [h, w, 3], label [h, w]) with (h, w) = ``crop_size``.
  """
  crop_height, crop_width = crop_size
  image, label = pad_to_size(
      image,
      label,
      crop_size,
      ignore_label=ignore_label,
      image_pad_value=image_pad_value,
  )
  height, width = label.shape
  top = rng.integers(0, height - crop_height + 1)
  left = rng.integers(0, width - crop_width + 1)
  rows = slice(top, top + crop_height)
  cols = slice(left, left + crop_width)
  return image[rows, cols], label[rows, cols]


def random_flip(
    image: np.ndarray,
    label: np.ndarray,
    rng: np.random.Generator,
    probability: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
  """Mirrors image and label left-right with the given probability."""
  if rng.random() < probability:
    return image[:, ::-1], label[:, ::-1]
  return image, label


def colour_jitter(image: np.ndarray, rng: np.random.Generator, strength: float) -> np.ndarray:
  """Randomly changes brightness, contrast and saturation of a uint8 image.

  Each factor is drawn uniformly from [1 - strength, 1 + strength] and the
  three adjustments are applied in a random order, as in torchvision's
  ColorJitter. ``strength`` 0 returns the image unchanged.

  Args:
    image: uint8 [H, W, 3] RGB.
    rng: Source of randomness.
    strength: Jitter strength in [0, 1).

  Returns:
    The jittered uint8 image.
  """
  if strength <= 0:
    return image
  factors = rng.uniform(1 - strength, 1 + strength, size=3)
  pixels = image.astype(np.float32)
  for op in rng.permutation(3):
    factor = factors[op]
    if op == 0:  # Brightness: blend with black.
      pixels *= factor
    elif op == 1:  # Contrast: blend with the mean grey level.
      grey = float((pixels @ _LUMA).mean())
      pixels = grey + factor * (pixels - grey)
    else:  # Saturation: blend with the per-pixel grey level.
      grey = (pixels @ _LUMA)[..., None]
      pixels = grey + factor * (pixels - grey)
  return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def normalize(
    image: np.ndarray,
    mean: Sequence[float] = MEAN_RGB,
    std: Sequence[float] = STD_RGB,
) -> np.ndarray:
  """Returns ``(image - mean) / std`` as float32 (mean, std in pixel units)."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)
  return (image.astype(np.float32) - mean) / std


def round_up(value: int, multiple: int) -> int:
  """Smallest multiple of ``multiple`` that is >= ``value``."""
  return -(-value // multiple) * multiple


def _nearest_indices(in_size: int, out_size: int) -> np.ndarray:
  """Input index of each output pixel centre, for nearest resizing."""
  centres = (np.arange(out_size) + 0.5) * (in_size / out_size)
  return np.minimum(centres.astype(np.int64), in_size - 1)
