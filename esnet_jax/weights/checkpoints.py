"""Orbax checkpoints: where they live, reading model variables back, surviving damage.

Every checkpoint this project writes is an orbax `CheckpointManager` step with
the items `state` (a pytree holding at least `params` and `batch_stats`) and
`meta` (JSON: `num_classes` and what inference needs to reproduce training's
preprocessing). Training adds `data` (the grain iterator state). A run trained
with weight EMA (`config.ema_decay`) also holds `state/ema` (its averaged `params`
and `batch_stats`); readers take those, the weights its evaluations measured.

Accepted by `restore_checkpoint` and everything built on it (inference, predict,
export, eval): a training workdir (its latest checkpoint, or the best with
`which='best'`), a manager directory with numbered steps, or one step directory.

Damage. Orbax writes each step into `<step>.orbax-checkpoint-tmp-<time>` and
renames it when complete, so a killed run leaves at most a half-written
temporary directory, never a half-written step. What a disk fault or an
interrupted copy leaves (files missing, truncated or zeroed) is found when the
step is read: a quick scan (`find_damage`) names the file, orbax's own restore
catches the rest. A step that cannot be restored is:
  - for training (`TrainCheckpointer`): moved aside, never deleted, to
    `<manager dir>/damaged/<step>-<time>` (orbax ignores that folder), with a
    one-line warning naming the step and the reason; training resumes from the
    newest intact step. Half-written temporary directories go there too.
  - for read-only use (eval, predict, export, convert, `Segmenter`): skipped with
    a one-line warning, and left where it is (a reader should not rearrange a
    workdir a training run may be using).
If no step is intact, `DamagedCheckpointError` names every step and its reason.

In flight. Saves are asynchronous: a step being written has no directory of its
own until its rename. Training never judges a step of a manager whose save is
in flight (it lets the save finish first); a reader skips a step that training
rotates out while it is being read, and lists the directory again.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import orbax.checkpoint as ocp

from esnet_jax.errors import (
    CheckpointNotFoundError,
    DamagedCheckpointError,
    WeightsError,
)

Variables = dict[str, Any]
Warn = Callable[[str], None]

CHECKPOINTS_DIR = 'checkpoints'
BEST_DIR = 'best'
DAMAGED_DIR = 'damaged'  # Inside a manager directory; not a number, so orbax ignores it.
STATE_ITEM = 'state'
META_ITEM = 'meta'
DATA_ITEM = 'data'
TMP_MARKER = '.orbax-checkpoint-tmp'
# Orbax's own bookkeeping files, never read back on restore: damage there is harmless.
_UNREAD_FILES = ('commit_success.txt', '_CHECKPOINT_METADATA')
_JSON_FILES = ('metadata', '_METADATA')
# How often a reader lists a manager directory again when a training changed it meanwhile.
_READ_ATTEMPTS = 3


def warn_stderr(message: str) -> None:
  """The default warning sink: one line on stderr."""
  print(f'warning: {message}', file=sys.stderr, flush=True)


def describe_error(error: BaseException, limit: int = 300) -> str:
  """An exception as one line of at most `limit` characters (tensorstore's span many)."""
  text = ' '.join(str(error).split())
  if isinstance(error, FileNotFoundError) and error.filename:
    text = f'{error.filename} is missing'
  text = text or type(error).__name__
  if isinstance(error, json.JSONDecodeError):
    text = f'invalid JSON ({text})'
  return text if len(text) <= limit else text[: limit - 3] + '...'


def save_variables(
    directory: str | os.PathLike[str],
    variables: Mapping[str, Any],
    *,
    num_classes: int,
    meta: Mapping[str, Any] | None = None,
    step: int = 0,
) -> Path:
  """Write model variables (no optimizer state) as a one-step orbax checkpoint.

  Returns the step directory. An existing step is never overwritten.
  """
  directory = Path(directory).absolute()
  state = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
  if step in manager.all_steps():
    raise FileExistsError(
        f'{directory} already holds checkpoint step {step}; ' 'choose another --out directory.'
    )
  manager.save(
      step,
      args=ocp.args.Composite(
          **{
              STATE_ITEM: ocp.args.StandardSave(state),
              META_ITEM: ocp.args.JsonSave({'num_classes': int(num_classes), **(meta or {})}),
          }
      ),
  )
  manager.wait_until_finished()
  manager.close()
  return directory / str(step)


def _is_step_dir(path: Path) -> bool:
  return (path / STATE_ITEM).is_dir()


def numbered_steps(manager_dir: Path) -> list[Path]:
  """Step directories (named by a number) of a manager directory, newest first."""
  steps = [p for p in manager_dir.iterdir() if p.name.isdigit() and p.is_dir()]
  return sorted(steps, key=lambda p: int(p.name), reverse=True)


def _not_a_checkpoint(p: Path) -> WeightsError:
  expected = (
      f'expected a training workdir (with {CHECKPOINTS_DIR}/ or {BEST_DIR}/), a '
      f'directory of numbered orbax steps, a step directory containing {STATE_ITEM}/, '
      'or a weights file (.npz, .safetensors, .pth, .pt)'
  )
  if p.is_file():
    return WeightsError(f'{p} is a file of an unknown kind: {expected}.')
  return CheckpointNotFoundError(f'No checkpoint found in {p}: {expected}.')


def _manager_dir(p: Path, which: str) -> Path:
  """The directory of numbered steps that `p` (not itself a step) designates."""
  if which not in ('latest', 'best'):
    raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
  if not p.exists():
    raise CheckpointNotFoundError(f'Checkpoint path does not exist: {p}')
  if p.is_dir():
    for manager_dir in (p / (BEST_DIR if which == 'best' else CHECKPOINTS_DIR), p):
      if manager_dir.is_dir() and numbered_steps(manager_dir):
        return manager_dir
  raise _not_a_checkpoint(p)


def find_damage(step_dir: Path, items: Sequence[str] = (STATE_ITEM, META_ITEM)) -> str | None:
  """What a disk fault or an interrupted copy left in a step, in words; None if nothing.

  A quick scan that names the file: an item directory missing, a file empty or
  all zero bytes, a JSON file that does not parse. Orbax's restore checks the
  rest (array data files are checksummed by their compression).
  """
  for item in items:
    if not (step_dir / item).is_dir():
      return f'{item}/ is missing'
  for f in sorted(step_dir.rglob('*')):
    if f.name in _UNREAD_FILES or not f.is_file():
      continue
    rel = f.relative_to(step_dir)
    data = f.read_bytes()
    if not data:
      return f'{rel} is empty (0 bytes)'
    if data.count(0) == len(data):
      return f'{rel} is zeroed ({len(data)} bytes of 0)'
    if f.name in _JSON_FILES or f.suffix == '.json':
      try:
        json.loads(data)
      except ValueError as e:  # JSONDecodeError and UnicodeDecodeError.
        return f'{rel} is not valid JSON ({" ".join(str(e).split())[:120]})'
  return None


def _restore_items(step_dir: Path, items: dict[str, Any]) -> dict[str, Any]:
  """Restore items of one step (without a manager, which would read every sibling step)."""
  with ocp.Checkpointer(ocp.CompositeCheckpointHandler()) as checkpointer:
    return dict(checkpointer.restore(step_dir, args=ocp.args.Composite(**items)))


def _to_numpy(tree: Mapping[str, Any]) -> dict[str, Any]:
  return {k: _to_numpy(v) if isinstance(v, Mapping) else np.asarray(v) for k, v in tree.items()}


def _read_step(step_dir: Path) -> tuple[Variables, dict[str, Any]]:
  """(variables, meta) of one step; `DamagedCheckpointError` naming it if unreadable."""
  has_meta = (step_dir / META_ITEM).is_dir()
  reason = find_damage(step_dir, (STATE_ITEM,))
  if reason is None:
    items = {STATE_ITEM: ocp.args.StandardRestore()}
    if has_meta:
      items[META_ITEM] = ocp.args.JsonRestore()
    try:
      restored = _restore_items(step_dir, items)
    except Exception as e:  # pylint: disable=broad-except  # orbax/tensorstore raise many kinds.
      reason = describe_error(e)
    else:
      state = restored[STATE_ITEM]
      if isinstance(state, Mapping) and isinstance(state.get('ema'), Mapping):
        state = state['ema']  # The weight average: what the run evaluated and kept as best.
      if not isinstance(state, Mapping) or 'params' not in state:
        reason = f'{STATE_ITEM}/ holds no model params'
      else:
        variables = {
            'params': _to_numpy(state['params']),
            'batch_stats': _to_numpy(state.get('batch_stats', {})),
        }
        return variables, dict(restored.get(META_ITEM) or {})
  raise DamagedCheckpointError(f'Checkpoint step {step_dir} cannot be restored: {reason}.')


def restore_checkpoint(
    path: str | os.PathLike[str], which: str = 'latest', *, warn: Warn = warn_stderr
) -> tuple[Path, Variables, dict[str, Any]]:
  """(step directory, variables, meta) of the newest intact step `path` designates.

  A step directory given directly must itself be intact. Otherwise damaged
  newer steps are skipped (read-only: they stay where they are) with one
  warning line each; if none is intact, `DamagedCheckpointError` names each.
  """
  p = Path(path).absolute()
  if _is_step_dir(p):
    return (p, *_read_step(p))
  manager_dir = _manager_dir(p, which)
  # A training may be writing this directory: a step it rotates out while we read it
  # vanishes (skipped, not damage), and one it renames into place appears (read again).
  for _ in range(_READ_ATTEMPTS):
    listed = numbered_steps(manager_dir)
    problems: list[tuple[str, str]] = []
    for step_dir in listed:
      try:
        variables, meta = _read_step(step_dir)
      except DamagedCheckpointError as e:
        if step_dir.exists():
          problems.append((step_dir.name, str(e).split(' cannot be restored: ', 1)[-1].rstrip('.')))
        continue
      for step, reason in problems:
        warn(
            f'checkpoint step {step} in {manager_dir} cannot be restored ({reason}); '
            f'using step {step_dir.name} instead (the damaged step is left in place).'
        )
      return step_dir, variables, meta
    if numbered_steps(manager_dir) == listed:
      break
  raise DamagedCheckpointError(
      f'No intact checkpoint in {manager_dir}: '
      + '; '.join(f'step {s}: {r}' for s, r in problems)
      + '.'
  )


def restore_meta(path: str | os.PathLike[str], which: str = 'latest') -> dict[str, Any]:
  """The JSON metadata saved beside a checkpoint's state."""
  return restore_checkpoint(path, which)[2]


def restore_variables(path: str | os.PathLike[str], which: str = 'latest') -> Variables:
  """`{'params', 'batch_stats'}` as numpy arrays from any accepted checkpoint path."""
  return restore_checkpoint(path, which)[1]
