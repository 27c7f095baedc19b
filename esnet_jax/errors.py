"""The package's errors: one family, so that a command prints one line and a caller catches one type.

Every error the package raises on purpose derives from `EsnetError`; its message
is one line that names the file or option and what was expected, and its
`exit_status` is the status a command-line tool exits with after printing it
(`esnet_jax.system.runner.run`). Below the base:

- `UserInputError`: what the user gave cannot work (a config value, a dataset
  folder, an input image, a palette, export settings, the compiled kernels asked
  for where they cannot be had, the browser demo without its npm packages) or
  stopped working (a non-finite loss).
- `WeightsError`: a weights file or checkpoint that cannot be used; every source
  `esnet_jax.weights.resolver.load` accepts fails with one of its kind.
- `OutputError`, `MemoryBudgetError` (under `UserInputError`): an output that would
  replace an input, and work that would not fit in memory, refused before it starts.
- `CheckpointSaveError`, `WorkdirError`: a training's own files cannot be written.

Each class also derives from the builtin its callers caught before the family
existed (`ValueError`, `FileNotFoundError`, `RuntimeError`, `FloatingPointError`),
so that code keeps working.
"""

from __future__ import annotations


class EsnetError(Exception):
  """An error the package raises on purpose; the message is one line naming what is wrong."""

  exit_status: int = 2


# ---------------------------------------------------------------------------------------
# What the user gave.


class UserInputError(EsnetError):
  """Input from the user that cannot work: a config value, a dataset, a file, a setting."""


class ConfigError(UserInputError, ValueError):
  """A config value that cannot work, named by its dotted key."""

  exit_status = 1


class DatasetError(UserInputError, ValueError):
  """A dataset is missing, malformed or inconsistent with its configuration."""

  exit_status = 1


class InputError(UserInputError, ValueError):
  """An input path that names no readable image or video, or is unsupported."""


class OptionError(UserInputError, ValueError):
  """A tool's setting that cannot work (`esnet_jax.config.options`); `field` names it, `expected` says
  what would; the command line and the config path re-raise it in their own names."""

  def __init__(self, field: str, value: object, expected: str):
    super().__init__(f'{field}={value!r}: expected {expected}.')
    self.field, self.value, self.expected = field, value, expected


class PaletteError(UserInputError, ValueError):
  """Colours that do not fit the number of classes of a checkpoint."""


class VideoError(UserInputError, ValueError):
  """A video that cannot be read or written, named in the message."""


class ExportError(UserInputError, ValueError):
  """Export settings that cannot work, e.g. a size that is not a multiple of 8."""


class KernelsUnavailableError(UserInputError, RuntimeError):
  """`kernels='native'` was asked for where the compiled kernels cannot be had."""


class NonFiniteLossError(UserInputError, FloatingPointError):
  """The loss became NaN or infinite; training stops, the last good checkpoint stays."""

  exit_status = 1


class OutputError(UserInputError, ValueError):
  """An output path that would replace one of the command's inputs, or cannot be written."""


class MemoryBudgetError(UserInputError, MemoryError):
  """An input, its scales or its batch would need more memory than the machine has."""


class DemoError(UserInputError, RuntimeError):
  """The browser demo cannot be built, served or driven: its npm packages or the browser
  are missing, an output folder or port cannot be used; the message says what to run or change."""


# ---------------------------------------------------------------------------------------
# Weights and checkpoints.


class WeightsError(EsnetError, ValueError):
  """A weights file or checkpoint that cannot be read; the message names the path."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
  """A path that does not exist or holds no weights/checkpoint at all.

  Also a `FileNotFoundError`, so code that catches that keeps working.
  """


class CheckpointNotFoundError(WeightsNotFoundError):
  """A path that holds no checkpoint this project can read."""


class DamagedCheckpointError(WeightsError):
  """A checkpoint step that exists but cannot be restored (files missing, truncated, zeroed)."""


class ConversionError(WeightsError):
  """A weights file that cannot be read, or a state dict that is not ESNet's."""


class PretrainedError(WeightsError):
  """An unknown pretrained name, or a shipped weights file that is missing or altered."""


# ---------------------------------------------------------------------------------------
# A training's own files.


class CheckpointSaveError(EsnetError, RuntimeError):
  """A checkpoint could not be written (e.g. the disk is full); the previous ones are intact."""


class WorkdirError(EsnetError, RuntimeError):
  """A training workdir that cannot be used (a file, not writable); the message names it."""


class WorkdirBusyError(WorkdirError):
  """A training workdir already taken by another training; the message names its holder."""
