"""Colours for class maps: palettes, colourised masks and overlays on the input.

Shared by `esnet_jax.inference.predict` (the pictures it writes) and anyone who wants to
look at a class map. Everything is numpy uint8: a palette is a [256, 3] lookup
table, so `palette[class_map]` is the colour picture; ids that are not classes
(the ignore id, anything >= num_classes) are black in masks and left
uncoloured in overlays.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

import numpy as np

from esnet_jax.data.datasets import cityscapes
from esnet_jax.errors import PaletteError

CITYSCAPES_NUM_CLASSES = 19


def generated_colours(num_classes: int) -> np.ndarray:
  """Distinct, deterministic colours [num_classes, 3] (the PASCAL VOC bit pattern).

  Entry i is VOC colour i + 1: VOC's colour 0 is black, which is kept for
  "not a class" in every palette here.
  """
  colours = np.zeros((num_classes, 3), np.uint8)
  for i in range(num_classes):
    index, colour = i + 1, [0, 0, 0]
    for shift in range(7, -1, -1):
      for channel in range(3):
        colour[channel] |= ((index >> channel) & 1) << shift
      index >>= 3
    colours[i] = colour
  return colours


def class_colours(num_classes: int, meta: Mapping[str, Any] | None = None) -> np.ndarray:
  """The colours [num_classes, 3] to draw a checkpoint's classes with.

  In order of preference: the `colours` saved in the checkpoint's meta (those of
  the dataset it was trained on), the official Cityscapes colours for a 19-class
  checkpoint without meta (e.g. the original PyTorch weights), else
  `generated_colours`.

  Raises:
    PaletteError: If the meta's colours are not one RGB triple per class.
  """
  colours = (meta or {}).get('colours')
  if colours:
    colours = np.asarray(colours)
    if colours.shape != (num_classes, 3) or colours.min() < 0 or colours.max() > 255:
      raise PaletteError(
          f'The checkpoint meta has colours of shape {colours.shape}; '
          f'expected ({num_classes}, 3) values in 0..255.'
      )
    return colours.astype(np.uint8)
  if num_classes == CITYSCAPES_NUM_CLASSES:
    try:
      return np.asarray(cityscapes.cityscapes_class_table().colours, np.uint8)
    except ImportError as e:
      logging.warning('Generated colours instead of the Cityscapes palette: %s', e)
  return generated_colours(num_classes)


def palette(colours: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
  """A uint8 [256, 3] lookup table: class i -> colours[i], every other id black."""
  colours = np.asarray(colours, np.uint8).reshape(-1, 3)
  if len(colours) > 256:
    raise PaletteError(f'{len(colours)} colours do not fit an 8-bit class map.')
  table = np.zeros((256, 3), np.uint8)
  table[: len(colours)] = colours
  return table


def colourise(class_map: np.ndarray, colours: Sequence[Sequence[int]] | np.ndarray) -> np.ndarray:
  """RGB uint8 [..., 3] picture of an integer class map; ids that are not classes are black."""
  ids = np.asarray(class_map).astype(np.intp)  # uint8 maps too: 256 is no uint8.
  table = np.concatenate([palette(colours), np.zeros((1, 3), np.uint8)])  # 256: off-range
  return table[np.where((ids >= 0) & (ids <= 255), ids, 256)]


def overlay(
    image: np.ndarray,
    class_map: np.ndarray,
    colours: Sequence[Sequence[int]] | np.ndarray,
    alpha: float = 0.5,
) -> np.ndarray:
  """Blend the class colours over an RGB uint8 image: (1 - alpha) * image + alpha * colour.

  Pixels whose id is not a class (ignore, out of range) keep the image.
  """
  if not 0.0 <= alpha <= 1.0:
    raise ValueError(f'alpha must be in [0, 1], got {alpha}.')
  image = np.asarray(image)
  class_map = np.asarray(class_map)
  if image.shape[:2] != class_map.shape or image.ndim != 3 or image.shape[2] != 3:
    raise ValueError(
        f'overlay needs an (H, W, 3) image and an (H, W) class map; got '
        f'{image.shape} and {class_map.shape}.'
    )
  num_classes = len(np.asarray(colours).reshape(-1, 3))
  is_class = (class_map >= 0) & (class_map < num_classes)
  blended = (1.0 - alpha) * image.astype(np.float32) + alpha * colourise(class_map, colours).astype(
      np.float32
  )
  out = np.where(is_class[..., None], blended, image.astype(np.float32))
  return np.clip(np.rint(out), 0, 255).astype(np.uint8)
