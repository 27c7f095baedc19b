"""Orbax checkpoints: where they live, and reading model variables back.

Every checkpoint this project writes is an orbax `CheckpointManager` step with
the items `state` (a pytree holding at least `params` and `batch_stats`) and
`meta` (JSON: `num_classes` and what inference needs to reproduce training's
preprocessing). Training adds `data` (the grain iterator state).

Accepted by `restore_variables` and everything built on it (inference, predict,
export, eval): a training workdir (its latest checkpoint, or the best with
`which='best'`), a manager directory with numbered steps, or one step directory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import orbax.checkpoint as ocp

Variables = dict[str, Any]

CHECKPOINTS_DIR = 'checkpoints'
BEST_DIR = 'best'
STATE_ITEM = 'state'
META_ITEM = 'meta'
DATA_ITEM = 'data'


class CheckpointNotFoundError(FileNotFoundError):
  """A path that holds no checkpoint this project can read."""


def save_variables(directory: str | os.PathLike[str], variables: Mapping[str, Any], *,
                   num_classes: int, meta: Mapping[str, Any] | None = None,
                   step: int = 0) -> Path:
  """Write model variables (no optimizer state) as a one-step orbax checkpoint.

  Returns the step directory. An existing step is never overwritten.
  """
  directory = Path(directory).absolute()
  state = {'params': variables['params'], 'batch_stats': variables.get('batch_stats', {})}
  manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=True))
  if step in manager.all_steps():
    raise FileExistsError(f'{directory} already holds checkpoint step {step}; '
                          'choose another --out directory.')
  manager.save(step, args=ocp.args.Composite(**{
      STATE_ITEM: ocp.args.StandardSave(state),
      META_ITEM: ocp.args.JsonSave({'num_classes': int(num_classes), **(meta or {})}),
  }))
  manager.wait_until_finished()
  manager.close()
  return directory / str(step)


def _is_step_dir(path: Path) -> bool:
  return (path / STATE_ITEM).is_dir()


def _latest_step_dir(manager_dir: Path) -> Path | None:
  steps = [int(p.name) for p in manager_dir.iterdir() if p.name.isdigit() and _is_step_dir(p)]
  return manager_dir / str(max(steps)) if steps else None


def resolve_checkpoint(path: str | os.PathLike[str], which: str = 'latest') -> Path:
  """The step directory that `path` designates (see the module docstring)."""
  if which not in ('latest', 'best'):
    raise ValueError(f"which must be 'latest' or 'best', got {which!r}")
  p = Path(path).absolute()
  if not p.exists():
    raise CheckpointNotFoundError(f'Checkpoint path does not exist: {p}')
  if _is_step_dir(p):
    return p
  candidates = [p / (BEST_DIR if which == 'best' else CHECKPOINTS_DIR), p]
  for manager_dir in candidates:
    if manager_dir.is_dir():
      step_dir = _latest_step_dir(manager_dir)
      if step_dir is not None:
        return step_dir
  raise CheckpointNotFoundError(
      f'No checkpoint found in {p}: expected a training workdir (with '
      f'{CHECKPOINTS_DIR}/ or {BEST_DIR}/), a directory of numbered orbax steps, or a '
      f'step directory containing {STATE_ITEM}/.')


def _restore_items(step_dir: Path, items: dict[str, Any]) -> dict[str, Any]:
  manager = ocp.CheckpointManager(step_dir.parent)
  try:
    restored = manager.restore(int(step_dir.name), args=ocp.args.Composite(**items))
  finally:
    manager.close()
  return dict(restored)


def restore_meta(path: str | os.PathLike[str], which: str = 'latest') -> dict[str, Any]:
  """The JSON metadata saved beside a checkpoint's state."""
  step_dir = resolve_checkpoint(path, which)
  if not (step_dir / META_ITEM).is_dir():
    return {}
  return dict(_restore_items(step_dir, {META_ITEM: ocp.args.JsonRestore()})[META_ITEM])


def restore_variables(path: str | os.PathLike[str], which: str = 'latest') -> Variables:
  """`{'params', 'batch_stats'}` as numpy arrays from any accepted checkpoint path."""
  step_dir = resolve_checkpoint(path, which)
  state = _restore_items(step_dir, {STATE_ITEM: ocp.args.StandardRestore()})[STATE_ITEM]
  if 'params' not in state:
    raise CheckpointNotFoundError(f'{step_dir} holds no model params.')
  to_numpy = lambda tree: {k: to_numpy(v) if isinstance(v, Mapping) else np.asarray(v)
                           for k, v in tree.items()}
  return {'params': to_numpy(state['params']),
          'batch_stats': to_numpy(state.get('batch_stats', {}))}


class TrainCheckpointer:
  """The checkpoints of one training workdir: the last N, and the best by mIoU.

  `workdir/checkpoints/<step>` keeps the latest `keep` steps; `workdir/best/<step>`
  keeps the single best evaluation. Each step holds the train state, the data
  iterator state (`data`, per process) and `meta`. Orbax writes every step to a
  temporary directory and renames it when complete, so a killed run never leaves
  a half-written checkpoint behind, and existing steps are never overwritten.
  """

  def __init__(self, workdir: str | os.PathLike[str], keep: int):
    workdir = Path(workdir).absolute()
    self._latest = ocp.CheckpointManager(
        workdir / CHECKPOINTS_DIR, options=ocp.CheckpointManagerOptions(
            max_to_keep=keep, create=True))
    self._best = ocp.CheckpointManager(
        workdir / BEST_DIR, options=ocp.CheckpointManagerOptions(max_to_keep=1, create=True))

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def best_miou(self) -> float | None:
    step = self._best.latest_step()
    if step is None:
      return None
    meta = self._best.restore(step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()}))
    return meta[META_ITEM].get('miou')

  @staticmethod
  def _save_args(state: Any, data_iterator: Any, meta: Mapping[str, Any]) -> ocp.args.Composite:
    import grain
    return ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardSave(state),
        DATA_ITEM: grain.checkpoint.CheckpointSave(data_iterator),
        META_ITEM: ocp.args.JsonSave(dict(meta)),
    })

  def save(self, step: int, state: Any, data_iterator: Any, meta: Mapping[str, Any]) -> None:
    """Save `state` (host arrays) and the iterator's position after `step` steps."""
    if step in self._latest.all_steps():
      return
    self._latest.save(step, args=self._save_args(state, data_iterator, meta), force=True)

  def save_if_best(self, step: int, state: Any, data_iterator: Any,
                   meta: Mapping[str, Any], miou: float) -> bool:
    best = self.best_miou()
    if best is not None and miou <= best:
      return False
    if step in self._best.all_steps():
      return False
    self._best.save(step, args=self._save_args(state, data_iterator, {**meta, 'miou': miou}),
                    force=True)
    return True

  def restore_latest(self, state_template: Any, data_iterator: Any) -> tuple[int, Any]:
    """Restore the latest step into `state_template`'s structure and the iterator."""
    import grain
    step = self._latest.latest_step()
    restored = self._latest.restore(step, args=ocp.args.Composite(**{
        STATE_ITEM: ocp.args.StandardRestore(state_template),
        DATA_ITEM: grain.checkpoint.CheckpointRestore(data_iterator),
    }))
    return step, restored[STATE_ITEM]

  def wait_until_finished(self) -> None:
    self._latest.wait_until_finished()
    self._best.wait_until_finished()

  def close(self) -> None:
    self.wait_until_finished()
    self._latest.close()
    self._best.close()
