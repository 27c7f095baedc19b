"""CamVid in the SegNet layout: 11 classes, 12th value ignored.

Expected files under ``root``::

  {split}.txt           one "image_path label_path" pair a line, relative
                        to root (e.g. "train/0001TP_006690.png
                        trainannot/0001TP_006690.png")
  train/, trainannot/   480x360 RGB images and 8-bit label images
  val/, valannot/ ...

Label values 0..10 are the classes of ``CAMVID_CLASSES``; 11 ("Unlabelled")
is the ignore id.
"""

from __future__ import annotations

from pathlib import Path

from esnet_jax.datasets import base

CAMVID_CLASSES = base.ClassTable(
    names=(
        'Sky',
        'Building',
        'Pole',
        'Road',
        'Pavement',
        'Tree',
        'SignSymbol',
        'Fence',
        'Car',
        'Pedestrian',
        'Bicyclist',
    ),
    colours=(
        (128, 128, 128),
        (128, 0, 0),
        (192, 192, 128),
        (128, 64, 128),
        (60, 40, 222),
        (128, 128, 0),
        (192, 128, 128),
        (64, 64, 128),
        (64, 0, 128),
        (64, 64, 0),
        (0, 128, 192),
    ),
    ignore_label=11,
)


def camvid_source(
    root: str | Path,
    split: str,
    *,
    validate_images: bool = False,
    validate_labels: bool = False,
) -> base.FileSegmentationSource:
  """Returns the examples listed in ``{root}/{split}.txt``.

  Args:
    root: The CamVid folder.
    split: Split name, e.g. 'train' or 'val'.
    validate_images: Decode every file now instead of when it is read.
    validate_labels: Check every label's values now (cheap for CamVid).
  """
  root = base.check_dir(root, 'CamVid root (config.dataset.root)')
  list_file = root / f'{split}.txt'
  return base.FileSegmentationSource(
      base.read_list_file(list_file, root),
      CAMVID_CLASSES,
      description=f'CamVid {split!r} split (list file {list_file})',
      validate_images=validate_images,
      validate_labels=validate_labels,
  )
