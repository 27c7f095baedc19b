"""The training checkpointer: orbax managers of a workdir's latest N steps and its best,
written without losing earlier ones (a half-written or damaged step is set aside, never
deleted), with the data iterator saved beside the state. Reading checkpoints, for every
user of weights, is `esnet_jax.weights.checkpoints`."""

from __future__ import annotations

import datetime
import errno
import json
import numpy as np
import orbax.checkpoint as ocp
import os
from pathlib import Path
from typing import Any, Mapping

from esnet_jax.errors import CheckpointSaveError, DamagedCheckpointError, WeightsError
from esnet_jax.weights.checkpoints import (
    BEST_DIR,
    CHECKPOINTS_DIR,
    DAMAGED_DIR,
    DATA_ITEM,
    META_ITEM,
    STATE_ITEM,
    TMP_MARKER,
    Warn,
    describe_error,
    find_damage,
    numbered_steps,
    warn_stderr,
)


def _timestamp() -> str:
  return datetime.datetime.now().strftime('%Y%m%dT%H%M%S%f')


def move_aside(path: Path) -> Path:
  """Rename a damaged or half-written step into `<its dir>/damaged/`; never deletes."""
  target_dir = path.parent / DAMAGED_DIR
  target_dir.mkdir(exist_ok=True)
  target = target_dir / f'{path.name}-{_timestamp()}'
  path.rename(target)
  return target


def _is_disk_full(error: BaseException) -> bool:
  for e in (error, error.__cause__, error.__context__):
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
      return True
    if e is not None and any(
        s in str(e)
        for s in ('No space left', 'File too large', 'quota exceeded', 'RESOURCE_EXHAUSTED')
    ):
      return True
  return False


def _tree_shapes(tree: Any) -> dict[str, tuple[int, ...]]:
  """Leaf shapes of a pytree (arrays, or orbax's array metadata) by 'a/b/0/c' path."""
  import jax

  def name(key: Any) -> str:
    for attr in ('key', 'idx', 'name'):
      if hasattr(key, attr):
        return str(getattr(key, attr))
    return str(key)

  leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda x: hasattr(x, 'shape'))[0]
  return {
      '/'.join(name(k) for k in path): tuple(getattr(leaf, 'shape', ())) for path, leaf in leaves
  }


def _stored_meta(step_dir: Path) -> dict[str, Any] | None:
  """The `meta` item of a step (orbax's JSON item is the file `meta/metadata`); None if
  it cannot be read."""
  try:
    stored = json.loads((step_dir / META_ITEM / 'metadata').read_text())
  except (OSError, ValueError):
    return None
  return stored if isinstance(stored, dict) else None


_STATE_PARTS = {
    'params': "the model's parameters",
    'batch_stats': "the model's BatchNorm statistics",
    'opt_state': 'the optimizer state (another optimizer setting?)',
    'ema': 'the weight average (config.ema_decay is 0 in one of the two runs)',
}


def _classes(meta: Mapping[str, Any]) -> str:
  names = meta.get('class_names') or []
  count = meta.get('num_classes', len(names))
  return f'{count} classes ({", ".join(map(str, names))})' if names else f'{count} classes'


def describe_mismatch(
    stored_meta: Mapping[str, Any],
    stored_shapes: Mapping[str, tuple],
    meta: Mapping[str, Any],
    shapes: Mapping[str, tuple],
) -> str | None:
  """How a checkpoint differs from what the config builds, in a person's terms; None if not.

  Class count and names first (the usual cause: another dataset), then the state's
  arrays (another model or optimizer), naming the first few that differ.
  """
  for key in ('num_classes', 'class_names'):
    if (
        key in stored_meta
        and key in meta
        and list(np.ravel(stored_meta[key])) != list(np.ravel(meta[key]))
    ):
      return f'it was trained with {_classes(stored_meta)}; the config asks for {_classes(meta)}'
  parts = []
  for top in sorted({k.split('/')[0] for k in (*stored_shapes, *shapes)}):
    there = {k for k in stored_shapes if k.split('/')[0] == top}
    here = {k for k in shapes if k.split('/')[0] == top}
    reshaped = sorted(k for k in there & here if stored_shapes[k] != shapes[k])
    details = []
    if reshaped:
      k = reshaped[0]
      details.append(
          f'{len(reshaped)} array(s) of another shape (e.g. {k}: '
          f'{stored_shapes[k]} in the checkpoint, {shapes[k]} in the config)'
      )
    for keys, where in ((there - here, 'the checkpoint'), (here - there, 'the config')):
      if keys:
        details.append(f'{len(keys)} array(s) only in {where} (e.g. {min(keys)})')
    if details:
      parts.append(f'{_STATE_PARTS.get(top, top)}: {", ".join(details)}')
  return 'its state differs from the one the config builds: ' + '; '.join(parts) if parts else None


class TrainCheckpointer:
  """The checkpoints of one training workdir: the last N, and the best by mIoU.

  `workdir/checkpoints/<step>` keeps the latest `keep` steps; `workdir/best/<step>`
  keeps the single best evaluation. Each step holds the train state, the data
  iterator state (`data`, per process) and `meta`. Orbax writes every step to a
  temporary directory and renames it when complete, so a killed run never leaves
  a half-written step behind, and existing steps are never overwritten. Damaged
  steps and half-written temporary directories are moved aside (see the module
  docstring); a failed save raises `CheckpointSaveError`.

  Saves are asynchronous. Nothing here judges, restores or moves a step of a
  manager while that manager's save is in flight: it lets the save finish first
  (`_settle`), so a slow disk or a fast machine never makes a step being written
  look damaged.
  """

  def __init__(
      self,
      workdir: str | os.PathLike[str],
      keep: int,
      *,
      primary: bool | None = None,
      warn: Warn = warn_stderr,
  ):
    """`primary` (default: JAX process 0) is the one process that moves directories."""
    import jax

    workdir = Path(workdir).absolute()
    self._warn = warn
    primary = jax.process_index() == 0 if primary is None else primary
    self._primary = primary
    self._failed = False
    self._pending: dict[str, int] = {}  # Manager name -> step being written asynchronously.
    self._dirs = {CHECKPOINTS_DIR: workdir / CHECKPOINTS_DIR, BEST_DIR: workdir / BEST_DIR}
    if primary:  # Before orbax reads the steps' metadata (it logs damage there noisily).
      for directory in self._dirs.values():
        self._move_aside_half_written(directory)
      self._move_aside_visibly_damaged(self._dirs[CHECKPOINTS_DIR])
    self._managers = {
        name: ocp.CheckpointManager(
            directory,
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep if name == CHECKPOINTS_DIR else 1, create=True
            ),
        )
        for name, directory in self._dirs.items()
    }
    self._latest, self._best = self._managers[CHECKPOINTS_DIR], self._managers[BEST_DIR]

  def _move_aside_half_written(self, directory: Path) -> None:
    if not directory.is_dir():
      return
    for tmp in sorted(directory.glob(f'*{TMP_MARKER}*')):
      target = move_aside(tmp)
      self._warn(
          f'checkpoint step {tmp.name.split(".")[0]} in {directory} was half-written '
          f'(a run stopped while saving it); moved it to {target}.'
      )

  def _move_aside_visibly_damaged(self, directory: Path) -> None:
    """Move aside the newest steps that `find_damage` flags, if an older one passes it.

    If none passes, nothing moves: `restore_latest` then names every step and why.
    """
    if not directory.is_dir():
      return
    damaged = []
    for step_dir in numbered_steps(directory):
      reason = find_damage(step_dir, (STATE_ITEM, DATA_ITEM, META_ITEM))
      if reason is None:
        intact = step_dir.name
        break
      damaged.append((step_dir, reason))
    else:
      return
    for step_dir, reason in damaged:
      target = move_aside(step_dir)
      self._warn(
          f'checkpoint step {step_dir.name} in {directory} cannot be restored '
          f'({reason}); moved it to {target}; resuming from step {intact} '
          'or an older intact one.'
      )

  def _settle(self, name: str) -> None:
    """Let the in-flight save of manager `name` finish; `CheckpointSaveError` if it failed."""
    if name not in self._pending:
      return
    try:
      self._managers[name].wait_until_finished()
    except Exception as e:  # pylint: disable=broad-except
      raise self._save_error(name, self._pending[name], e) from e
    self._pending.pop(name)

  def latest_step(self) -> int | None:
    return self._latest.latest_step()

  def best_miou(self) -> float | None:
    """The mIoU of the best checkpoint; None if there is none (or it is damaged)."""
    self._settle(BEST_DIR)
    step = self._best.latest_step()
    if step is None:
      return None
    step_dir = self._dirs[BEST_DIR] / str(step)
    reason = find_damage(step_dir, (META_ITEM,))
    if reason is None:
      try:
        meta = self._best.restore(
            step, args=ocp.args.Composite(**{META_ITEM: ocp.args.JsonRestore()})
        )
        return meta[META_ITEM].get('miou')
      except Exception as e:  # pylint: disable=broad-except
        reason = describe_error(e)
    self._set_aside(self._best, step_dir, reason, 'the next evaluation becomes the best')
    return None

  def _set_aside(self, manager: Any, step_dir: Path, reason: str, then: str) -> None:
    if self._primary:
      target = move_aside(step_dir)
      self._warn(
          f'checkpoint step {step_dir.name} in {step_dir.parent} cannot be restored '
          f'({reason}); moved it to {target}; {then}.'
      )
      manager.reload()
    else:
      self._warn(
          f'checkpoint step {step_dir.name} in {step_dir.parent} cannot be restored '
          f'({reason}); {then}.'
      )

  @staticmethod
  def _save_args(state: Any, data_iterator: Any, meta: Mapping[str, Any]) -> ocp.args.Composite:
    import grain

    return ocp.args.Composite(
        **{
            STATE_ITEM: ocp.args.StandardSave(state),
            DATA_ITEM: grain.checkpoint.CheckpointSave(data_iterator),
            META_ITEM: ocp.args.JsonSave(dict(meta)),
        }
    )

  def _save_error(self, name: str, step: int, error: BaseException) -> CheckpointSaveError:
    """A one-line `CheckpointSaveError` for a save of `step` into manager `name` that failed."""
    self._failed = True
    directory = self._dirs[name]
    step = self._pending.get(name, step)
    cause = (
        'the disk is full (or a file size limit was reached)'
        if _is_disk_full(error)
        else 'the save failed'
    )
    intact = (
        [p.name for p in numbered_steps(directory) if p.name != str(step)]
        if directory.is_dir()
        else []
    )
    kept = (
        f'the previous checkpoint, step {intact[0]}, is intact'
        if intact
        else 'no earlier checkpoint exists'
    )
    return CheckpointSaveError(
        f'Could not write checkpoint step {step} to {directory}: '
        f'{cause} ({describe_error(error, 200)}); {kept}.'
    )

  def _save(self, name: str, step: int, args: ocp.args.Composite) -> None:
    try:
      self._managers[name].save(step, args=args, force=True)
    except Exception as e:  # pylint: disable=broad-except  # Includes the previous async save.
      raise self._save_error(name, step, e) from e
    self._pending[name] = step

  def save(self, step: int, state: Any, data_iterator: Any, meta: Mapping[str, Any]) -> None:
    """Save `state` (host arrays) and the iterator's position after `step` steps."""
    if step in self._latest.all_steps():
      return
    self._save(CHECKPOINTS_DIR, step, self._save_args(state, data_iterator, meta))

  def save_if_best(
      self, step: int, state: Any, data_iterator: Any, meta: Mapping[str, Any], miou: float
  ) -> bool:
    best = self.best_miou()
    if best is not None and miou <= best:
      return False
    if step in self._best.all_steps():
      return False
    self._save(BEST_DIR, step, self._save_args(state, data_iterator, {**meta, 'miou': miou}))
    return True

  def restore_latest(
      self, state_template: Any, data_iterator: Any, meta: Mapping[str, Any] | None = None
  ) -> tuple[int, Any]:
    """Restore the newest intact step into `state_template`'s structure and the iterator.

    Newer steps that cannot be restored are moved aside with a warning each. A
    checkpoint that is intact but does not fit the template (another config) is
    an error, not damage: nothing is moved, and the error says what differs
    (the classes of `meta` against the stored ones, or the state's arrays).
    """
    import grain

    self._settle(CHECKPOINTS_DIR)
    directory = self._dirs[CHECKPOINTS_DIR]
    problems: list[tuple[int, str]] = []
    for step in sorted(self._latest.all_steps(), reverse=True):
      step_dir = directory / str(step)
      reason = find_damage(step_dir, (STATE_ITEM, DATA_ITEM, META_ITEM))
      if reason is None:
        # Another config is told apart before orbax tries (and fails loudly) to restore.
        mismatch = self._mismatch(step_dir, state_template, meta or {})
        if mismatch:
          raise self._misfit(step_dir, mismatch)
        try:
          restored = self._latest.restore(
              step,
              args=ocp.args.Composite(
                  **{
                      STATE_ITEM: ocp.args.StandardRestore(state_template),
                      DATA_ITEM: grain.checkpoint.CheckpointRestore(data_iterator),
                  }
              ),
          )
        except Exception as e:  # pylint: disable=broad-except
          reason = describe_error(e)
          if self._readable(step):
            raise self._misfit(step_dir, reason) from e
        else:
          for bad_step, bad_reason in problems:
            self._set_aside(
                self._latest, directory / str(bad_step), bad_reason, f'resuming from step {step}'
            )
          return step, restored[STATE_ITEM]
      problems.append((step, reason))
    raise DamagedCheckpointError(
        f'No intact checkpoint in {directory}: '
        + '; '.join(f'step {s}: {r}' for s, r in problems)
        + '. Nothing was moved; move the directory away to start afresh.'
    )

  def check_classes(self, meta: Mapping[str, Any]) -> None:
    """`WeightsError` if the newest step whose metadata reads was trained on other classes.

    Cheap (JSON only), so that a resume with another dataset is told before the model
    is built; `restore_latest` checks the rest.
    """
    for step_dir in numbered_steps(self._dirs[CHECKPOINTS_DIR]):
      stored = _stored_meta(step_dir)
      if stored is None:
        continue  # Damaged: restore_latest deals with it.
      what = describe_mismatch(stored, {}, meta, {})
      if what:
        raise self._misfit(step_dir, what)
      return

  @staticmethod
  def _misfit(step_dir: Path, what: str) -> WeightsError:
    workdir = step_dir.parent.parent
    return WeightsError(
        f'Checkpoint step {step_dir} is intact but does not fit the current config: {what}. '
        f'Resume it with the config it was trained with (its {workdir / "config.json"}), or '
        'train this config in another --workdir.'
    )

  @staticmethod
  def _mismatch(step_dir: Path, template: Any, meta: Mapping[str, Any]) -> str | None:
    """What differs between a step and the config, from its metadata alone; None if nothing
    (or if the metadata cannot be read: the restore then decides)."""
    from etils import epath

    try:
      stored = ocp.StandardCheckpointHandler().metadata(epath.Path(step_dir / STATE_ITEM))
      stored_shapes = _tree_shapes(stored.tree)
    except Exception:  # pylint: disable=broad-except
      return None
    return describe_mismatch(
        _stored_meta(step_dir) or {}, stored_shapes, meta, _tree_shapes(template)
    )

  def _readable(self, step: int) -> bool:
    """Whether the state of `step` reads back without a template (so it is not damaged)."""
    try:
      self._latest.restore(
          step, args=ocp.args.Composite(**{STATE_ITEM: ocp.args.StandardRestore()})
      )
      return True
    except Exception:  # pylint: disable=broad-except
      return False

  def wait_until_finished(self) -> None:
    """Block until pending saves are written; `CheckpointSaveError` if one failed."""
    for name in self._managers:
      self._settle(name)

  def close(self) -> None:
    """Finish pending saves and release the managers (also after a failed save).

    A save failure already raised to the caller is not raised a second time.
    """
    already_reported = self._failed
    try:
      self.wait_until_finished()
    except CheckpointSaveError:
      if not already_reported:
        raise
    finally:
      for manager in self._managers.values():
        try:
          manager.close()
        except Exception:  # pylint: disable=broad-except
          if not self._failed:
            raise
