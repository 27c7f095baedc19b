"""Segmentation data sources and the dataset part of the configuration.

``build_source(config.dataset, split)`` returns a grain-compatible random
access source of ``{'image': uint8 [H, W, 3], 'label': uint8 [H, W]}``
examples for one of the supported datasets:

* ``synthetic``: procedurally generated street scenes, nothing to download.
* ``camvid``: CamVid in the SegNet layout (11 classes).
* ``cityscapes``: Cityscapes fine annotations, official layout (19 classes).
* ``folder``: your own images and labels (list file or two folders).

Each dataset's module registers itself in ``registry`` when it is imported below;
``build_source``, ``get_class_table`` and ``DATASET_NAMES`` read the registry.

The configuration keys are listed in ``default_dataset_config`` and in the
docstring of ``esnet_jax.data.input_pipeline``.
"""

from __future__ import annotations

import importlib
import pkgutil

import ml_collections

from esnet_jax.data import transforms
from esnet_jax.data.datasets import registry

from esnet_jax.data.datasets.base import ClassTable
from esnet_jax.data.datasets.base import DEFAULT_VALIDATE_IMAGES
from esnet_jax.data.datasets.base import DatasetError
from esnet_jax.data.datasets.base import FileSegmentationSource
from esnet_jax.data.datasets.base import SegmentationSource

# The built-in datasets, in the order of DATASET_NAMES; any other module of this package
# that registers one follows them, alphabetically.
_BUILT_IN = ('synthetic', 'camvid', 'cityscapes', 'folder')
_NOT_DATASETS = ('base', 'registry')


def _import_dataset_modules() -> None:
  """Imports every dataset module of this package, each of which registers itself: adding
  a dataset is one new module here, nothing else."""
  found = [m.name for m in pkgutil.iter_modules(__path__) if m.name not in _NOT_DATASETS]
  rank = lambda name: (_BUILT_IN.index(name) if name in _BUILT_IN else len(_BUILT_IN), name)
  for name in sorted(found, key=rank):
    importlib.import_module(f'{__name__}.{name}')


_import_dataset_modules()

# pylint: disable=g-import-not-at-top,wrong-import-position  (after the registration order)
from esnet_jax.data.datasets.camvid import CAMVID_CLASSES
from esnet_jax.data.datasets.synthetic import SYNTHETIC_CLASSES
from esnet_jax.data.datasets.synthetic import SyntheticSource

# The registered names: ('synthetic', 'camvid', 'cityscapes', 'folder').
DATASET_NAMES = registry.names()
# Default of the optional key, for configs that do not start from
# ``default_dataset_config``.
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

  The dataset is looked up by ``dataset_cfg.name`` in the registry, so each dataset's
  module alone says how it is read.

  Args:
    dataset_cfg: ``config.dataset``.
    split: Split name, usually ``dataset_cfg.train_split`` or ``eval_split``.

  The config is trusted (``esnet_jax.config.validation.validate_dataset`` checks it).

  Raises:
    ConfigError: If no dataset of that name is registered.
    DatasetError: If the files are missing or inconsistent.
  """
  return registry.get(dataset_cfg.name).build_source(dataset_cfg, split)


def get_class_table(dataset_cfg: ml_collections.ConfigDict) -> ClassTable:
  """Returns the class table of the configured dataset without reading data.

  Looked up by ``dataset_cfg.name`` in the registry, like ``build_source``.

  Raises:
    ConfigError: If no dataset of that name is registered.
  """
  return registry.get(dataset_cfg.name).class_table(dataset_cfg)


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
    'camvid',
    'cityscapes',
    'default_dataset_config',
    'folder',
    'get_class_table',
    'registry',
    'synthetic',
]
