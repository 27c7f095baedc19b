"""Model variables from any source a user can name.

One resolver for inference, predict, export and evaluation, so that every
entry point accepts the same things:

  - `pretrained:NAME`: weights shipped with the package (see `esnet_jax.pretrained`);
  - an original PyTorch weights file (`.pth`, `.pt`, `.npz`, `.safetensors`);
  - a training workdir (its latest or best checkpoint), an orbax manager
    directory, or one checkpoint step directory.

Whatever goes wrong reading them (a missing, empty, truncated, garbage or
wrong-format file, a directory that is not a checkpoint, a damaged step with no
intact one before it) is an `esnet_jax.errors.WeightsError` naming the path and
what was expected. A workdir whose newest step is damaged falls back to the
newest intact one with a warning (see `checkpointing`).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from esnet_jax import checkpointing, convert, pretrained
from esnet_jax.errors import WeightsError

PRETRAINED_PREFIX = 'pretrained:'
WEIGHT_FILE_SUFFIXES = ('.pth', '.pt', '.npz', '.safetensors')


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
  """Variables (`params`, `batch_stats`) with what is known about where they came from."""

  variables: dict[str, Any]
  meta: dict[str, Any]
  source: str  # What to print: the checkpoint step directory, file, or pretrained name.
  step: int | None  # The training step of an orbax checkpoint; None otherwise.


def is_pretrained(source: str | os.PathLike[str]) -> bool:
  return isinstance(source, str) and source.startswith(PRETRAINED_PREFIX)


def load(
    source: str | os.PathLike[str],
    which: str = 'latest',
    *,
    warn: checkpointing.Warn = checkpointing.warn_stderr,
) -> LoadedWeights:
  """Reads the variables `source` designates (see the module docstring).

  `which` ('latest' or 'best') picks a workdir's checkpoint; other sources ignore it.
  `warn` receives the one-line warning for each damaged checkpoint step skipped.
  Raises `WeightsError` (or a subclass) naming the path on any unreadable source.
  """
  if is_pretrained(source):
    name = source[len(PRETRAINED_PREFIX) :]
    path = pretrained.weights_file(name)
    return LoadedWeights(
        convert.load_torch_weights(path), pretrained.get(name).meta(), source, None
    )
  path = Path(source)
  if path.suffix.lower() in WEIGHT_FILE_SUFFIXES and path.is_file():
    return LoadedWeights(convert.load_torch_weights(path), {'source': str(path)}, str(path), None)
  step_dir, variables, meta = checkpointing.restore_checkpoint(path, which, warn=warn)
  try:
    step = int(step_dir.name)
  except ValueError:
    step = None
  return LoadedWeights(variables, meta, str(step_dir), step)


__all__ = [
    'LoadedWeights',
    'WeightsError',
    'is_pretrained',
    'load',
    'PRETRAINED_PREFIX',
    'WEIGHT_FILE_SUFFIXES',
]
