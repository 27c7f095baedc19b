"""Segmentation data sources and the dataset part of the configuration.

``build_source(config.dataset, split)`` returns a grain-compatible random
access source of ``{'image': uint8 [H, W, 3], 'label': uint8 [H, W]}``
examples for one of the supported datasets:

* ``synthetic``: procedurally generated street scenes, nothing to download.
* ``camvid``: CamVid in the SegNet layout (11 classes).
* ``cityscapes``: Cityscapes fine annotations, official layout (19 classes).
* ``folder``: your own images and labels (list file or two folders).

The configuration keys are listed in ``default_dataset_config`` and in the
docstring of ``esnet_jax.input_pipeline``.
"""

from __future__ import annotations

import ml_collections

from esnet_jax import transforms
from esnet_jax.datasets import cityscapes
from esnet_jax.datasets.base import ClassTable
from esnet_jax.datasets.base import DatasetError
from esnet_jax.datasets.base import FileSegmentationSource
from esnet_jax.datasets.base import SegmentationSource
from esnet_jax.datasets.camvid import CAMVID_CLASSES
from esnet_jax.datasets.camvid import camvid_source
from esnet_jax.datasets.folder import folder_class_table
from esnet_jax.datasets.folder import folder_source
from esnet_jax.datasets.synthetic import SYNTHETIC_CLASSES
from esnet_jax.datasets.synthetic import SyntheticSource

DATASET_NAMES = ('synthetic', 'camvid', 'cityscapes', 'folder')
# Defaults of the optional keys, for configs that do not start from
# ``default_dataset_config``.
DEFAULT_VALIDATE_IMAGES = False
DEFAULT_READ_THREADS = 2


def default_dataset_config() -> ml_collections.ConfigDict:
  """Returns ``config.dataset`` with defaults: small synthetic scenes."""
  config = ml_collections.ConfigDict()
  config.name = 'synthetic'
  config.root = ''
  config.train_split = 'train'
  config.eval_split = 'val'
  # Training augmentation.
  config.crop_size = (128, 256)
  config.scale_range = (0.5, 2.0)
  config.flip = True
  config.colour_jitter = 0.0
  # Progressive resizing: ((until_step, scale, crop_h, crop_w), ...). Steps below each
  # until_step (and at or above the previous one) scale the images by `scale` on top of
  # scale_range and take crops of (crop_h, crop_w); later steps use crop_size. Cheaper,
  # lower-resolution steps early let more epochs fit a budget. () = off.
  config.phases = ()
  # Evaluation input scale (labels always stay at full resolution).
  config.eval_scale = 1.0
  config.mean = transforms.MEAN_RGB
  config.std = transforms.STD_RGB
  # Loading: worker processes (0 = in the main process) and threads each.
  config.num_workers = 0
  config.read_threads = DEFAULT_READ_THREADS
  # Up-front checks when the source is built (otherwise done on load).
  config.validate_labels = False
  config.validate_images = DEFAULT_VALIDATE_IMAGES
  # synthetic
  config.image_size = (128, 256)
  config.num_train = 256
  config.num_eval = 32
  # folder
  config.train_list = ''
  config.eval_list = ''
  config.image_dir = ''
  config.label_dir = ''
  config.class_names = ()
  config.colours = ()
  config.ignore_label = 255
  # cityscapes
  config.label_suffix = '_gtFine_labelIds.png'
  return config


def build_source(dataset_cfg: ml_collections.ConfigDict, split: str) -> SegmentationSource:
  """Returns the examples of ``split`` of the configured dataset.

  Args:
    dataset_cfg: ``config.dataset``.
    split: Split name, usually ``dataset_cfg.train_split`` or ``eval_split``.

  The config is trusted (``config_validation.validate_dataset`` checks it).

  Raises:
    DatasetError: If the files are missing or inconsistent.
  """
  name = dataset_cfg.name
  checks = dict(
      validate_images=dataset_cfg.get('validate_images', DEFAULT_VALIDATE_IMAGES),
      validate_labels=dataset_cfg.validate_labels,
  )
  if name == 'synthetic':
    is_train = split == dataset_cfg.train_split
    return SyntheticSource(
        dataset_cfg.num_train if is_train else dataset_cfg.num_eval,
        dataset_cfg.image_size,
        split,
    )
  if name == 'camvid':
    return camvid_source(dataset_cfg.root, split, **checks)
  if name == 'cityscapes':
    return cityscapes.cityscapes_source(
        dataset_cfg.root,
        split,
        label_suffix=dataset_cfg.label_suffix,
        **checks,
    )
  if split == dataset_cfg.train_split:
    list_file = dataset_cfg.train_list
  elif split == dataset_cfg.eval_split:
    list_file = dataset_cfg.eval_list
  else:
    list_file = ''
  return folder_source(
      dataset_cfg.root,
      split,
      get_class_table(dataset_cfg),
      list_file=list_file,
      image_dir=dataset_cfg.image_dir,
      label_dir=dataset_cfg.label_dir,
      **checks,
  )


def get_class_table(dataset_cfg: ml_collections.ConfigDict) -> ClassTable:
  """Returns the class table of the configured dataset without reading data."""
  name = dataset_cfg.name
  if name == 'synthetic':
    return SYNTHETIC_CLASSES
  if name == 'camvid':
    return CAMVID_CLASSES
  if name == 'cityscapes':
    return cityscapes.cityscapes_class_table()
  return folder_class_table(dataset_cfg.class_names, dataset_cfg.colours, dataset_cfg.ignore_label)


__all__ = [
    'CAMVID_CLASSES',
    'ClassTable',
    'DATASET_NAMES',
    'DatasetError',
    'FileSegmentationSource',
    'SYNTHETIC_CLASSES',
    'SegmentationSource',
    'SyntheticSource',
    'build_source',
    'default_dataset_config',
    'get_class_table',
]
