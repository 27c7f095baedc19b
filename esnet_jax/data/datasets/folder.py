"""Users' own data: image/label pairs from a list file or two folders.

List-file mode reads ``image_path label_path`` pairs, one a line, relative to
``root``. Two-folder mode pairs every image in ``image_dir`` with the label in
``label_dir`` that has the same file stem (``a/x.jpg`` with ``b/x.png``).
Labels are single-channel images of train ids ``0 .. len(class_names) - 1``
with ``ignore_label`` for unlabelled pixels.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import ml_collections

from esnet_jax.data.datasets import base
from esnet_jax.data.datasets import registry

# File extensions (lower case) read as images or labels in two-folder mode.
IMAGE_EXTENSIONS = base.IMAGE_EXTENSIONS


def folder_class_table(
    class_names: Sequence[str],
    colours: Sequence[Sequence[int]],
    ignore_label: int,
) -> base.ClassTable:
  """Builds the class table of a user dataset from its configuration.

  Args:
    class_names: Class names in train-id order (``config.dataset.class_names``).
    colours: RGB colour per class (``config.dataset.colours``); empty picks
      distinct colours automatically.
    ignore_label: Label value of unlabelled pixels.
  """
  if not class_names:
    raise base.DatasetError(
        'config.dataset.class_names is empty: list the class names of the '
        'folder dataset in train-id order.'
    )
  if not colours:
    colours = _distinct_colours(len(class_names))
  if len(colours) != len(class_names):
    raise base.DatasetError(
        f'config.dataset.colours has {len(colours)} entries but '
        f'config.dataset.class_names has {len(class_names)}; give one RGB '
        'colour per class or none.'
    )
  return base.ClassTable(
      names=tuple(str(name) for name in class_names),
      colours=tuple(tuple(int(c) for c in colour) for colour in colours),
      ignore_label=int(ignore_label),
  )


def class_table_from_config(dataset_cfg: ml_collections.ConfigDict) -> base.ClassTable:
  """The classes named in ``config.dataset`` (registered as the folder dataset's table)."""
  return folder_class_table(dataset_cfg.class_names, dataset_cfg.colours, dataset_cfg.ignore_label)


@registry.register('folder', class_table=class_table_from_config)
def source_from_config(
    dataset_cfg: ml_collections.ConfigDict, split: str
) -> base.FileSegmentationSource:
  """The ``folder`` dataset's registered builder: ``folder_source`` with the config's keys.

  The train and eval splits read ``train_list`` and ``eval_list``; any other split has
  no list file and so needs ``image_dir`` and ``label_dir`` (with ``{split}`` in them).
  """
  if split == dataset_cfg.train_split:
    list_file = dataset_cfg.train_list
  elif split == dataset_cfg.eval_split:
    list_file = dataset_cfg.eval_list
  else:
    list_file = ''
  return folder_source(
      dataset_cfg.root,
      split,
      class_table_from_config(dataset_cfg),
      list_file=list_file,
      image_dir=dataset_cfg.image_dir,
      label_dir=dataset_cfg.label_dir,
      **base.up_front_checks(dataset_cfg),
  )


def folder_source(
    root: str | Path,
    split: str,
    class_table: base.ClassTable,
    *,
    list_file: str = '',
    image_dir: str = '',
    label_dir: str = '',
    validate_images: bool = False,
    validate_labels: bool = False,
) -> base.FileSegmentationSource:
  """Returns a user dataset split from a list file or from two folders.

  Exactly one mode must be configured: ``list_file``, or both ``image_dir``
  and ``label_dir``.

  Args:
    root: Folder that relative paths start from ('' = current directory).
    split: Split name; replaces ``{split}`` in ``image_dir`` and ``label_dir``.
    class_table: Classes of the label values.
    list_file: List file of ``image_path label_path`` lines.
    image_dir: Folder of images.
    label_dir: Folder of labels.
    validate_images: Decode every file now instead of when it is read.
    validate_labels: Check every label's values now (decodes every label).
  """
  root = Path(root)
  if root != Path() and not root.is_dir():
    raise base.DatasetError(
        f'Dataset root (config.dataset.root) {root} does not exist or is not ' 'a directory.'
    )
  if list_file and (image_dir or label_dir):
    raise base.DatasetError(
        f'Folder dataset split {split!r}: set either a list file '
        '(config.dataset.train_list / eval_list) or config.dataset.image_dir '
        'and label_dir, not both.'
    )
  if list_file:
    list_path = root / list_file
    pairs = base.read_list_file(list_path, root)
    description = f'Split {split!r} (list file {list_path})'
  elif image_dir and label_dir:
    images = root / image_dir.replace('{split}', split)
    labels = root / label_dir.replace('{split}', split)
    description = f'Split {split!r} (images {images}, labels {labels})'
    pairs = base.pair_by_stem(
        _image_files(images, 'Image folder (config.dataset.image_dir)'),
        _image_files(labels, 'Label folder (config.dataset.label_dir)'),
        description,
    )
  else:
    raise base.DatasetError(
        f'Folder dataset split {split!r} has no files configured: set '
        'config.dataset.train_list / eval_list, or both '
        'config.dataset.image_dir and config.dataset.label_dir.'
    )
  return base.FileSegmentationSource(
      pairs,
      class_table,
      description=description,
      validate_images=validate_images,
      validate_labels=validate_labels,
  )


def _image_files(folder: Path, what: str) -> list[Path]:
  base.check_dir(folder, what)
  return sorted(
      path
      for path in folder.iterdir()
      if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS
  )


def _distinct_colours(count: int) -> tuple[tuple[int, int, int], ...]:
  """The PASCAL VOC colour map: spreads the bits of the index over R, G, B."""
  colours = []
  for index in range(count):
    red = green = blue = 0
    for bit in range(8):
      red |= ((index >> 0) & 1) << (7 - bit)
      green |= ((index >> 1) & 1) << (7 - bit)
      blue |= ((index >> 2) & 1) << (7 - bit)
      index >>= 3
    colours.append((red, green, blue))
  return tuple(colours)
