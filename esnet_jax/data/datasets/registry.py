"""The dataset registry: ``config.dataset.name`` -> how to read that dataset.

Each dataset module registers itself when it is imported, so that adding a
dataset is one module (and its import in ``datasets/__init__.py``) rather than a
branch in every function that looks at the name::

  @registry.register('mydata', class_table=MYDATA_CLASSES)
  def mydata_source(dataset_cfg: ml_collections.ConfigDict, split: str) -> SegmentationSource:
    ...

``class_table`` is a ``ClassTable``, or a function of ``config.dataset`` for
datasets whose classes are configured (``folder``) or loaded lazily
(``cityscapes``). Names are kept in registration order. This module imports no
dataset module; they import it.
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses

import ml_collections

from esnet_jax.data.datasets import base
from esnet_jax.errors import ConfigError

SourceBuilder = Callable[[ml_collections.ConfigDict, str], base.SegmentationSource]
ClassTableGetter = Callable[[ml_collections.ConfigDict], base.ClassTable]


@dataclasses.dataclass(frozen=True)
class Dataset:
  """How to read one registered dataset.

  Attributes:
    name: The dataset's ``config.dataset.name``.
    build_source: ``(config.dataset, split) -> SegmentationSource``, the examples of a split.
    class_table: ``config.dataset -> ClassTable``, without reading any data.
  """

  name: str
  build_source: SourceBuilder
  class_table: ClassTableGetter


# The registry: dataset name -> Dataset, in registration order.
_DATASETS: dict[str, Dataset] = {}


def register(
    name: str, *, class_table: base.ClassTable | ClassTableGetter
) -> Callable[[SourceBuilder], SourceBuilder]:
  """Returns a decorator that registers a source builder as dataset ``name``.

  A decorator so that the name sits on the function that reads the dataset, in the
  dataset's own module; the function is returned unchanged.

  Args:
    name: The ``config.dataset.name`` that selects the dataset.
    class_table: The dataset's classes, or a function of ``config.dataset`` that
      returns them (for classes that are configured or loaded lazily).

  Returns:
    A decorator taking ``build_source(config.dataset, split) -> SegmentationSource``.

  Raises:
    ValueError: If ``name`` is already registered (two modules claiming a name is
      a programming error, not a config error).
  """
  if isinstance(class_table, base.ClassTable):
    table = class_table
    get_table: ClassTableGetter = lambda dataset_cfg: table
  else:
    get_table = class_table

  def add(build_source: SourceBuilder) -> SourceBuilder:
    if name in _DATASETS:
      raise ValueError(f'Dataset {name!r} is registered twice.')
    _DATASETS[name] = Dataset(name, build_source, get_table)
    return build_source

  return add


def unregister(name: str) -> None:
  """Removes dataset ``name`` (if registered), e.g. a test's throw-away dataset."""
  _DATASETS.pop(name, None)


def names() -> tuple[str, ...]:
  """The registered dataset names in registration order, for messages and validation."""
  return tuple(_DATASETS)


def get(name: str) -> Dataset:
  """Returns the registered dataset ``name``.

  Raises:
    ConfigError: One line naming ``config.dataset.name`` and the registered names,
      the same message as ``config.validation.check_dataset_name``.
  """
  try:
    return _DATASETS[name]
  except KeyError:
    raise ConfigError(
        f'config.dataset.name={name!r}: expected one of {", ".join(names())}.'
    ) from None
