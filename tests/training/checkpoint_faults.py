"""`python -m esnet_jax.main` with a fault injected into orbax's saves (for the tests).

  python tests/training/checkpoint_faults.py FAULT [the flags of esnet_jax.main ...]

FAULT is one of:
  kill:POINT@STEP   SIGKILL the process at POINT of saving STEP (any manager):
                    tmp-created (temporary directory made, nothing written),
                    before-rename (every item written, not renamed yet), after-rename
                    (the step is final, older steps not rotated out yet).
  hold:DIR/STEP     Hold the commit (the rename into place) of STEP in the manager
                    directory DIR ('checkpoints' or 'best') open until the process
                    waits for that manager's saves, or `HOLD_LIMIT_S` pass: a save
                    still in flight when the run next looks at that manager, as on a
                    fast machine or a slow filesystem. Prints 'hold: DIR/STEP held',
                    then 'hold: DIR/STEP released by a wait' (or '... by the time
                    limit') on stderr.
  hold:DIR/STEP@FILE  The same, released only once FILE exists (a run paused mid-save
                    for as long as a test needs).
Several faults may be given, separated by commas.

The faults live here, not in the package: they patch orbax's temporary-path class
and `CheckpointManager.wait_until_finished`, then run the command as `python -m`
would (its exit path included).
"""

from __future__ import annotations

import asyncio
import os
import runpy
import signal
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
KILL_POINTS = ('tmp-created', 'before-rename', 'after-rename')
HOLD_LIMIT_S = 120.0


def _say(message: str) -> None:
  os.write(2, (message + '\n').encode())


def _name(final_dir) -> str:
  path = Path(str(final_dir))
  return f'{path.parent.name}/{path.name}'


def _inject_kill(point: str, step: str) -> None:
  import orbax.checkpoint as ocp

  base = ocp.path.atomicity.AtomicRenameTemporaryPath

  def kill_at(here: str, final_dir) -> None:
    if here == point and Path(str(final_dir)).name == step:
      _say(f'kill: SIGKILL at {point} of {final_dir}')
      os.kill(os.getpid(), signal.SIGKILL)

  create, finalize = base.create, base.finalize

  async def create_then_kill(self, *args, **kwargs):
    path = await create(self, *args, **kwargs)
    kill_at('tmp-created', self.get_final())
    return path

  async def finalize_with_kills(self, *args, **kwargs):
    kill_at('before-rename', self.get_final())
    await finalize(self, *args, **kwargs)
    kill_at('after-rename', self.get_final())

  base.create, base.finalize = create_then_kill, finalize_with_kills


def _inject_hold(target: str, release_file: str | None) -> None:
  import orbax.checkpoint as ocp

  base = ocp.path.atomicity.AtomicRenameTemporaryPath
  manager_dir = target.split('/')[0]
  holding, released = threading.Event(), threading.Event()
  waiting = []  # One entry per wait on that manager in progress.
  finalize, wait = base.finalize, ocp.CheckpointManager.wait_until_finished

  def free() -> bool:
    if release_file:
      return os.path.exists(release_file)
    return released.is_set() or bool(waiting)  # Also a wait that began before the hold.

  async def held_finalize(self, *args, **kwargs):
    if _name(self.get_final()) == target:
      _say(f'hold: {target} held')
      holding.set()
      deadline = time.monotonic() + HOLD_LIMIT_S
      while not free() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
      how = ('its file' if release_file else 'a wait') if free() else 'the time limit'
      _say(f'hold: {target} released by {how}')
    await finalize(self, *args, **kwargs)

  def releasing_wait(self, *args, **kwargs):
    if Path(str(self.directory)).name != manager_dir:
      return wait(self, *args, **kwargs)
    if holding.is_set():
      released.set()
    waiting.append(1)
    try:
      return wait(self, *args, **kwargs)
    finally:
      waiting.pop()

  base.finalize = held_finalize
  ocp.CheckpointManager.wait_until_finished = releasing_wait


def main() -> None:
  faults, args = sys.argv[1].split(','), sys.argv[2:]
  for fault in faults:
    kind, _, spec = fault.partition(':')
    if kind == 'kill' and spec.split('@')[0] in KILL_POINTS and '@' in spec:
      _inject_kill(*spec.split('@'))
    elif kind == 'hold' and spec.split('@')[0].count('/') == 1:
      target, _, release_file = spec.partition('@')
      _inject_hold(target, release_file or None)
    else:
      sys.exit(f'checkpoint_faults: unknown fault {fault!r}; see the docstring.')
  sys.path.insert(0, str(REPO))
  sys.argv = ['esnet_jax.main', *args]
  runpy.run_module('esnet_jax.main', run_name='__main__', alter_sys=True)


if __name__ == '__main__':
  main()
