"""Cityscapes (fine annotations) in the official folder layout.

Expected files under ``root``::

  leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
  gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_labelIds.png

The label files hold the 34 Cityscapes label ids, which are mapped to the 19
train ids (others -> ignore 255) when an example is loaded. Labels already
converted by ``cityscapesscripts/preparation/createTrainIdLabelImgs.py``
(``*_gtFine_labelTrainIds.png``) are read as they are when
``label_suffix='_gtFine_labelTrainIds.png'``. Class names, colours and the
id mapping come from ``cityscapesscripts.helpers.labels``, the official
definition, which is imported only when Cityscapes is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import ml_collections
import numpy as np

from esnet_jax.data.datasets import base
from esnet_jax.data.datasets import registry

IMAGE_SUFFIX = '_leftImg8bit.png'
LABEL_ID_SUFFIX = '_gtFine_labelIds.png'
TRAIN_ID_SUFFIX = '_gtFine_labelTrainIds.png'
IGNORE_LABEL = 255
_NUM_TRAIN_IDS = 19


def cityscapes_class_table() -> base.ClassTable:
  """The 19 evaluated Cityscapes classes in train-id order, ignore 255."""
  by_train_id = {
      label.trainId: label for label in _labels().labels if 0 <= label.trainId < IGNORE_LABEL
  }
  classes = [by_train_id[train_id] for train_id in range(_NUM_TRAIN_IDS)]
  return base.ClassTable(
      names=tuple(label.name for label in classes),
      colours=tuple(tuple(label.color) for label in classes),
      ignore_label=IGNORE_LABEL,
  )


def label_ids_to_train_ids(label_ids: np.ndarray) -> np.ndarray:
  """Maps Cityscapes label ids (-1..33) to train ids (0..18, ignore 255).

  Args:
    label_ids: Integer array of label ids, e.g. a ``*_gtFine_labelIds.png``.

  Returns:
    uint8 array of the same shape.

  Raises:
    ValueError: If ``label_ids`` holds a value that is not a Cityscapes id.
  """
  label_ids = np.asarray(label_ids)
  # table[i + 2] is the train id of label id i, -1 if i is not a label id;
  # clipping to -2..256 sends every out-of-range value to an unknown entry.
  table = np.full(259, -1, np.int16)
  for label in _labels().labels:
    train_id = label.trainId if 0 <= label.trainId < IGNORE_LABEL else 255
    table[label.id + 2] = train_id
  train_ids = table[np.clip(label_ids, -2, 256).astype(np.int16) + 2]
  if (train_ids < 0).any():
    bad = np.unique(label_ids[train_ids < 0]).tolist()
    raise ValueError(f'Values {bad} are not Cityscapes label ids.')
  return train_ids.astype(np.uint8)


def train_ids_to_label_ids(train_ids: np.ndarray) -> np.ndarray:
  """Maps train ids (0..18) back to Cityscapes label ids, for submissions.

  The ignore id 255 maps to label id 0 ("unlabeled").

  Args:
    train_ids: Integer array of train ids, e.g. an argmax prediction.

  Returns:
    uint8 array of the same shape, the format the benchmark server expects.

  Raises:
    ValueError: If ``train_ids`` holds a value other than 0..18 or 255.
  """
  train_ids = np.asarray(train_ids)
  # table[i + 1] is the label id of train id i, -1 if i is not a train id.
  table = np.full(258, -1, np.int16)
  for label in _labels().labels:
    if 0 <= label.trainId < IGNORE_LABEL:
      table[label.trainId + 1] = label.id
  table[IGNORE_LABEL + 1] = 0
  label_ids = table[np.clip(train_ids, -1, 256).astype(np.int16) + 1]
  if (label_ids < 0).any():
    bad = np.unique(train_ids[label_ids < 0]).tolist()
    raise ValueError(f'Values {bad} are not Cityscapes train ids (0..18 or 255).')
  return label_ids.astype(np.uint8)


class CityscapesSource(base.FileSegmentationSource):
  """Cityscapes examples; label ids are mapped to train ids when loaded."""

  def __init__(
      self,
      pairs: Sequence[tuple[Path, Path]],
      class_table: base.ClassTable,
      *,
      labels_are_train_ids: bool,
      **kwargs: Any,
  ):
    """See ``FileSegmentationSource``; train-id labels are not mapped."""
    self._labels_are_train_ids = labels_are_train_ids
    super().__init__(pairs, class_table, **kwargs)

  def name(self, index: int) -> str:
    """The frame name, e.g. 'aachen_000000_000019'."""
    return self.paths[index][0].name[: -len(IMAGE_SUFFIX)]

  def labels_to_train_ids(self, label: np.ndarray, path: Path) -> np.ndarray:
    if self._labels_are_train_ids:
      return super().labels_to_train_ids(label, path)
    try:
      return label_ids_to_train_ids(label)
    except ValueError as e:
      raise base.DatasetError(f'Label {path}: {e}') from e


def cityscapes_source(
    root: str | Path,
    split: str,
    *,
    label_suffix: str = LABEL_ID_SUFFIX,
    validate_images: bool = False,
    validate_labels: bool = False,
) -> CityscapesSource:
  """Returns the fine-annotated examples of a Cityscapes split.

  Args:
    root: Folder holding ``leftImg8bit/`` and ``gtFine/``.
    split: 'train', 'val' or 'test'.
    label_suffix: ``LABEL_ID_SUFFIX`` (official label ids, mapped on load) or
      ``TRAIN_ID_SUFFIX`` (files already holding train ids).
    validate_images: Decode every file now instead of when it is read.
    validate_labels: Check every label's values now (decodes every label).
  """
  if label_suffix not in (LABEL_ID_SUFFIX, TRAIN_ID_SUFFIX):
    raise base.DatasetError(
        f'config.dataset.label_suffix must be {LABEL_ID_SUFFIX!r} or '
        f'{TRAIN_ID_SUFFIX!r}, got {label_suffix!r}.'
    )
  class_table = cityscapes_class_table()
  root = base.check_dir(root, 'Cityscapes root (config.dataset.root)')
  image_dir = base.check_dir(root / 'leftImg8bit' / split, f'Cityscapes {split!r} image folder')
  label_dir = base.check_dir(root / 'gtFine' / split, f'Cityscapes {split!r} label folder')
  description = f'Cityscapes {split!r} split under {root}'
  pairs = base.pair_by_key(
      _by_frame(image_dir, IMAGE_SUFFIX),
      _by_frame(label_dir, label_suffix),
      description,
  )
  return CityscapesSource(
      pairs,
      class_table,
      labels_are_train_ids=label_suffix == TRAIN_ID_SUFFIX,
      description=description,
      validate_images=validate_images,
      validate_labels=validate_labels,
  )


def class_table_from_config(dataset_cfg: ml_collections.ConfigDict) -> base.ClassTable:
  """The Cityscapes classes (the dataset's registered table), made only when asked for.

  A function rather than a table, so that cityscapesscripts is imported only when
  Cityscapes is used.
  """
  del dataset_cfg  # The classes are fixed.
  return cityscapes_class_table()


@registry.register('cityscapes', class_table=class_table_from_config)
def source_from_config(dataset_cfg: ml_collections.ConfigDict, split: str) -> CityscapesSource:
  """The ``cityscapes`` dataset's registered builder: ``cityscapes_source``, config keys."""
  return cityscapes_source(
      dataset_cfg.root,
      split,
      label_suffix=dataset_cfg.label_suffix,
      **base.up_front_checks(dataset_cfg),
  )


def _by_frame(folder: Path, suffix: str) -> dict[str, Path]:
  """Files ``{city}/{frame}{suffix}`` keyed by "{city}/{frame}"."""
  return {
      f'{path.parent.name}/{path.name[: -len(suffix)]}': path
      for path in folder.glob(f'*/*{suffix}')
  }


def _labels() -> ModuleType:
  """Imports the official label definitions, or says how to install them."""
  try:
    # pylint: disable-next=g-import-not-at-top
    from cityscapesscripts.helpers import labels
  except ImportError as e:
    raise ImportError(
        'Cityscapes support needs cityscapesscripts: ' 'pip install "esnet-jax[cityscapes]"'
    ) from e
  return labels
