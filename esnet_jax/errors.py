"""The package's error for weights and checkpoints that cannot be used.

Every source `esnet_jax.weights.load` accepts (a `.npz`/`.safetensors`/`.pth`/`.pt`
file, an orbax step directory, a training workdir, `pretrained:NAME`) fails with a
`WeightsError` whose message names the path and what was expected, so that the
command-line tools can print it as one line and exit with status 2, and library
users can catch one type. The more specific errors of `convert`, `checkpointing`
and `pretrained` derive from it.
"""

from __future__ import annotations


class WeightsError(ValueError):
  """A weights file or checkpoint that cannot be read; the message names the path."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
  """A path that does not exist or holds no weights/checkpoint at all.

  Also a `FileNotFoundError`, so code that catches that keeps working.
  """


class DamagedCheckpointError(WeightsError):
  """A checkpoint step that exists but cannot be restored (files missing, truncated, zeroed)."""


class CheckpointSaveError(RuntimeError):
  """A checkpoint could not be written (e.g. the disk is full); the previous ones are intact."""


class WorkdirError(RuntimeError):
  """A training workdir that cannot be used (a file, not writable); the message names it."""


class WorkdirBusyError(WorkdirError):
  """A training workdir already taken by another training; the message names its holder."""
