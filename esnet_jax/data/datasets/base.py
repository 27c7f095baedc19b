"""Shared pieces of every segmentation data source.

A data source is a grain-compatible random-access collection of examples
(``__len__`` and ``__getitem__``) where each example is a dict::

  {'image': uint8 [H, W, 3] RGB, 'label': uint8 [H, W] train ids}

Label values are train ids ``0 .. num_classes - 1`` or the class table's
``ignore_label``; anything else is a data error. File-backed sources check as
much as they cheaply can when they are built (files exist, images and labels
pair up and have the same size, the split is not empty) so that a bad dataset
fails before training starts rather than hours into it; what can only be seen
by decoding (truncated files, bad label values) is checked when an example is
loaded, or up front when the ``validate_*`` flags ask for it.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from PIL import Image
from esnet_jax.errors import DatasetError

Example = dict[str, np.ndarray]

# How many offending items an error message lists before "... and N more".
_MAX_LISTED = 5
# PIL modes of single-channel label images (binary, 8-bit, palette, 16/32-bit).
_LABEL_MODES = ('1', 'L', 'P', 'I', 'I;16', 'I;16B', 'I;16L')
# File extensions (lower case) read as images or labels when a folder is listed.
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp')
# Default of `config.dataset.validate_images`, for configs that do not start from
# `default_dataset_config`.
DEFAULT_VALIDATE_IMAGES = False


@dataclasses.dataclass(frozen=True)
class ClassTable:
  """Names, display colours and ignore id of a dataset's classes.

  Attributes:
    names: Class names in train-id order.
    colours: RGB display colour of each class, in train-id order.
    ignore_label: Label value of pixels excluded from the loss and the metrics;
      must not be a class id and must fit in a uint8 label image.
  """

  names: tuple[str, ...]
  colours: tuple[tuple[int, int, int], ...]
  ignore_label: int

  def __post_init__(self):
    if not self.names:
      raise DatasetError('A class table needs at least one class name.')
    if len(self.colours) != len(self.names):
      raise DatasetError(
          f'A class table needs one colour per class: got {len(self.names)} '
          f'names and {len(self.colours)} colours.'
      )
    for name, colour in zip(self.names, self.colours):
      if len(colour) != 3 or not all(0 <= int(c) <= 255 for c in colour):
        raise DatasetError(
            f'Colour of class {name!r} must be three values in 0..255, ' f'got {colour!r}.'
        )
    if not self.num_classes <= self.ignore_label <= 255:
      raise DatasetError(
          f'ignore_label must be in {self.num_classes}..255 (not a class id '
          f'and storable in a uint8 label), got {self.ignore_label}.'
      )

  @property
  def num_classes(self) -> int:
    return len(self.names)

  def palette(self) -> np.ndarray:
    """Returns a uint8 [256, 3] colour lookup table for label images.

    ``palette()[label]`` turns a label map into an RGB picture; the ignore id
    and every value that is not a class id are black.
    """
    palette = np.zeros((256, 3), np.uint8)
    palette[: self.num_classes] = np.asarray(self.colours, np.uint8)
    return palette


class SegmentationSource(abc.ABC):
  """Random-access source of segmentation examples (grain data source).

  Subclasses provide ``__len__``, ``__getitem__`` and ``max_size``; the
  ``class_table`` attribute describes the label values they produce.
  """

  class_table: ClassTable

  @abc.abstractmethod
  def __len__(self) -> int:
    """Number of examples."""

  @abc.abstractmethod
  def __getitem__(self, index: int) -> Example:
    """Returns ``{'image': uint8 [H, W, 3], 'label': uint8 [H, W]}``."""

  @property
  @abc.abstractmethod
  def max_size(self) -> tuple[int, int]:
    """Largest (height, width) over all examples, for padding eval batches."""


class FileSegmentationSource(SegmentationSource):
  """Examples read from (image file, label file) pairs.

  Building the source checks that every file exists, that each image and its
  label have the same size (from the file headers, which is cheap) and that the
  split is not empty. With ``validate_images`` every file is fully decoded up
  front; with ``validate_labels`` every label's values are checked up front.
  Otherwise both are checked when an example is loaded.
  """

  def __init__(
      self,
      pairs: Sequence[tuple[Path, Path]],
      class_table: ClassTable,
      *,
      description: str,
      validate_images: bool = False,
      validate_labels: bool = False,
  ):
    """Checks the pairs and records their sizes.

    Args:
      pairs: (image path, label path) of each example, in a fixed order.
      class_table: Classes of the train ids that ``__getitem__`` returns.
      description: Names the split in error messages, e.g. "CamVid 'val'
        split (list file /data/camvid/val.txt)".
      validate_images: Decode every image and label now.
      validate_labels: Check every label's values now.
    """
    if not pairs:
      raise DatasetError(f'{description} is empty: it has no examples.')
    self.class_table = class_table
    self.paths: tuple[tuple[Path, Path], ...] = tuple(
        (Path(image), Path(label)) for image, label in pairs
    )
    check_files_exist([path for pair in self.paths for path in pair], description)
    self._sizes = tuple(_header_size_of_pair(image, label) for image, label in self.paths)
    for image_path, label_path in self.paths:
      if validate_images:
        load_image(image_path)
      if validate_images or validate_labels:
        label = load_label(label_path)
      if validate_labels:
        self.labels_to_train_ids(label, label_path)

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> Example:
    image_path, label_path = self.paths[index]
    return {
        'image': load_image(image_path),
        'label': self.labels_to_train_ids(load_label(label_path), label_path),
    }

  def __repr__(self) -> str:
    return f'{type(self).__name__}({len(self)} examples)'

  @property
  def max_size(self) -> tuple[int, int]:
    return (
        max(height for height, _ in self._sizes),
        max(width for _, width in self._sizes),
    )

  def name(self, index: int) -> str:
    """A short name of the example (its image file stem), e.g. for outputs."""
    return self.paths[index][0].stem

  def labels_to_train_ids(self, label: np.ndarray, path: Path) -> np.ndarray:
    """Turns the stored label values into train ids.

    The default keeps the values and checks them against the class table.
    Datasets that store other ids (e.g. Cityscapes label ids) override this.

    Args:
      label: Decoded label image.
      path: Its file, for error messages.

    Returns:
      The label as train ids with the ignore id.
    """
    check_label_values(label, self.class_table, path)
    return label


def up_front_checks(dataset_cfg: ml_collections.ConfigDict) -> dict[str, bool]:
  """Returns the ``validate_images`` / ``validate_labels`` arguments of a file-backed source.

  Every file dataset's builder passes them on to its source, so they are read from
  ``config.dataset`` in one place (``validate_images`` may be absent from old configs).
  """
  return dict(
      validate_images=dataset_cfg.get('validate_images', DEFAULT_VALIDATE_IMAGES),
      validate_labels=dataset_cfg.validate_labels,
  )


def check_files_exist(paths: Sequence[Path], description: str) -> None:
  """Raises a DatasetError listing the paths that are not files."""
  missing = [str(path) for path in paths if not Path(path).is_file()]
  if missing:
    raise DatasetError(
        f'{description}: {len(missing)} file(s) are missing: ' f'{_listing(missing)}'
    )


def check_dir(path: Path, what: str) -> Path:
  """Returns ``path`` if it is a directory, else raises a DatasetError."""
  path = Path(path)
  if not path.is_dir():
    raise DatasetError(f'{what} {path} does not exist or is not a directory.')
  return path


def read_list_file(list_path: Path, root: Path) -> list[tuple[Path, Path]]:
  """Reads a list file with one ``image_path label_path`` pair a line.

  Relative paths are relative to ``root``. Blank lines and lines starting with
  ``#`` are skipped.

  Args:
    list_path: The list file.
    root: Directory the relative paths start from.

  Returns:
    The (image, label) path pairs in file order.
  """
  if not Path(list_path).is_file():
    raise DatasetError(f'List file {list_path} does not exist.')
  pairs = []
  lines = Path(list_path).read_text().splitlines()
  for line_number, line in enumerate(lines, start=1):
    line = line.strip()
    if not line or line.startswith('#'):
      continue
    fields = line.split()
    if len(fields) != 2:
      raise DatasetError(
          f'{list_path}:{line_number}: expected "image_path label_path", ' f'got {line!r}.'
      )
    pairs.append((Path(root) / fields[0], Path(root) / fields[1]))
  return pairs


def pair_by_stem(
    images: Sequence[Path], labels: Sequence[Path], description: str
) -> list[tuple[Path, Path]]:
  """Pairs image and label files whose names differ only by extension.

  Args:
    images: Image files.
    labels: Label files.
    description: Names the data in error messages.

  Returns:
    (image, label) pairs sorted by stem.
  """
  return pair_by_key(_by_stem(images, description), _by_stem(labels, description), description)


def pair_by_key(
    images: dict[str, Path], labels: dict[str, Path], description: str
) -> list[tuple[Path, Path]]:
  """Pairs images and labels that have the same key, sorted by key.

  Args:
    images: Image files by key (e.g. their name without suffix).
    labels: Label files by the same kind of key.
    description: Names the data in error messages.

  Returns:
    (image, label) pairs sorted by key.

  Raises:
    DatasetError: Naming the images without a label and the labels without an
      image, if there are any.
  """
  without_label = [str(images[k]) for k in sorted(images.keys() - labels)]
  without_image = [str(labels[k]) for k in sorted(labels.keys() - images)]
  problems = []
  if without_label:
    problems.append(f'{len(without_label)} image(s) without a label: ' f'{_listing(without_label)}')
  if without_image:
    problems.append(
        f'{len(without_image)} label(s) without an image: ' f'{_listing(without_image)}'
    )
  if problems:
    raise DatasetError(f'{description}: ' + '; '.join(problems))
  return [(images[key], labels[key]) for key in sorted(images)]


def load_image(path: Path) -> np.ndarray:
  """Decodes an image file to uint8 RGB [H, W, 3]."""
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'), np.uint8)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DatasetError(f'Cannot read image {path}: {e}') from e


def load_label(path: Path) -> np.ndarray:
  """Decodes a single-channel label image to uint8 [H, W].

  Palette ('P') images keep their indices: they are label values, not colours.
  """
  try:
    with Image.open(path) as label:
      mode = label.mode
      array = np.asarray(label) if mode in _LABEL_MODES else None
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DatasetError(f'Cannot read label {path}: {e}') from e
  if array is None:
    raise DatasetError(
        f'Label {path} has image mode {mode!r}; expected a single-channel '
        'image of label ids (mode L or P), not colours.'
    )
  if array.size and (array.min() < 0 or array.max() > 255):
    raise DatasetError(
        f'Label {path} has values outside 0..255 ' f'({array.min()}..{array.max()}).'
    )
  return array.astype(np.uint8)


def check_label_values(label: np.ndarray, class_table: ClassTable, path: Any) -> None:
  """Raises a DatasetError if ``label`` holds a value that is not a train id.

  Args:
    label: Label map of train ids.
    class_table: Allowed ids are ``0 .. num_classes - 1`` and ``ignore_label``.
    path: The label's file (or another name), for the error message.
  """
  bad = (label >= class_table.num_classes) & (label != class_table.ignore_label)
  if bad.any():
    values = np.unique(label[bad]).tolist()
    raise DatasetError(
        f'Label {path} has values {_listing(values)} that are neither a class '
        f'id (0..{class_table.num_classes - 1}) nor the ignore id '
        f'{class_table.ignore_label}.'
    )


def _header_size_of_pair(image: Path, label: Path) -> tuple[int, int]:
  """Returns (height, width) read from the file headers of a pair."""
  image_size = _header_size(image)
  label_size = _header_size(label)
  if image_size != label_size:
    raise DatasetError(
        f'Image {image} is {image_size[1]}x{image_size[0]} but its label '
        f'{label} is {label_size[1]}x{label_size[0]} (WxH); they must be the '
        'same size.'
    )
  return image_size


def _header_size(path: Path) -> tuple[int, int]:
  try:
    with Image.open(path) as image:
      width, height = image.size
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise DatasetError(f'Cannot read image header of {path}: {e}') from e
  return height, width


def _by_stem(paths: Sequence[Path], description: str) -> dict[str, Path]:
  by_stem = {}
  for path in paths:
    path = Path(path)
    if path.stem in by_stem:
      raise DatasetError(
          f'{description}: {by_stem[path.stem]} and {path} have the same name '
          'stem, so they cannot be paired unambiguously.'
      )
    by_stem[path.stem] = path
  return by_stem


def _listing(items: Sequence[Any]) -> str:
  shown = ', '.join(str(item) for item in items[:_MAX_LISTED])
  if len(items) > _MAX_LISTED:
    shown += f' ... and {len(items) - _MAX_LISTED} more'
  return shown
