"""One training per workdir: a lock file that names its holder and is renewed while it runs.

Two trainings on one workdir (a job started twice, a scheduler's requeue while
the first still runs) would write the same checkpoint steps, `metrics.jsonl` and
TensorBoard files over each other. A training therefore takes
`<workdir>/train.lock` before it writes anything, and a second one refuses in one
line naming the holder. The file is JSON: host, pid, start time, the machine's
boot id and PID namespace, and a random token; it is created whole (written
aside, then hard-linked into place, which fails if a lock exists), so a reader
never sees half of one. While the run lives a thread renews the file's
modification time every `heartbeat_s` seconds (the heartbeat).

A lock whose holder is gone is taken over with a one-line warning, so a
SIGKILLed run resumes with the same command: on the same machine (same host,
boot and PID namespace) when its pid no longer runs (or now belongs to another
process, told apart by its start time); elsewhere (another host on a shared
filesystem, another container) when its heartbeat is older than
`stale_after_s`. A run whose lock was taken over (it had stopped renewing it,
e.g. a host that hung) notices at its next checkpoint and stops without
writing more (`check`).

Multi-host runs: process 0 holds the lock for the whole run and tells the
others whether it got it (`hold`). Eval, predict and export only read a
workdir and take no lock.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import secrets
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from esnet_jax.errors import WorkdirBusyError, WorkdirError

LOCK_FILE = 'train.lock'
HEARTBEAT_S = 30.0
STALE_AFTER_S = 300.0  # Ten missed heartbeats.
_ATTEMPTS = 5

Warn = Callable[[str], None]


def _warn_stderr(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr, flush=True)


def _read_text(path: str) -> str | None:
  try:
    with open(path, encoding='utf-8') as f:
      return f.read().strip()
  except OSError:
    return None


def _process_start(pid: int) -> str | None:
  """The start time of `pid` in clock ticks since boot (Linux), None where unknown."""
  stat = _read_text(f'/proc/{pid}/stat')
  return stat.rsplit(')', 1)[-1].split()[19] if stat else None


def _process_state(pid: int) -> str | None:
  stat = _read_text(f'/proc/{pid}/stat')
  return stat.rsplit(')', 1)[-1].split()[0] if stat else None


def _pid_namespace() -> str | None:
  try:
    return os.readlink('/proc/self/ns/pid')
  except OSError:
    return None


def _identity(token: str) -> dict[str, Any]:
  pid = os.getpid()
  return {
      'host': socket.gethostname(),
      'pid': pid,
      'started': datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds'),
      'boot_id': _read_text('/proc/sys/kernel/random/boot_id'),
      'pid_namespace': _pid_namespace(),
      'pid_start': _process_start(pid),
      'command': ' '.join(sys.argv)[:300],
      'token': token,
  }


def _alive(pid: int, pid_start: str | None) -> bool:
  """Whether `pid` (on this machine and PID namespace) still runs the same process."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # Someone else's process: it exists.
  if _process_state(pid) in ('Z', 'X'):  # Killed, not yet reaped by its parent.
    return False
  now_start = _process_start(pid)
  return pid_start is None or now_start is None or now_start == pid_start


def describe(holder: dict[str, Any] | None) -> str:
  """A lock's holder in words."""
  if not holder:
    return 'an unreadable lock'
  command = f' ({holder["command"]})' if holder.get('command') else ''
  return (
      f'process {holder.get("pid")} on {holder.get("host")}, started '
      f'{holder.get("started")}{command}'
  )


class WorkdirLock:
  """The lock file of one training workdir (see the module docstring)."""

  def __init__(
      self,
      workdir: str | os.PathLike[str],
      *,
      heartbeat_s: float = HEARTBEAT_S,
      stale_after_s: float = STALE_AFTER_S,
      warn: Warn = _warn_stderr,
  ):
    self.workdir = Path(workdir).absolute()
    self.path = self.workdir / LOCK_FILE
    self._heartbeat_s = heartbeat_s
    self._stale_after_s = stale_after_s
    self._warn = warn
    self._token = secrets.token_hex(16)
    self._identity = _identity(self._token)
    self._stop = threading.Event()
    self._thread: threading.Thread | None = None
    self._held = False

  # -- taking it ------------------------------------------------------------------------

  def acquire(self) -> WorkdirLock:
    """Take the workdir; `WorkdirBusyError` naming the holder if a live training has it."""
    if self.workdir.exists() and not self.workdir.is_dir():
      raise WorkdirError(
          f'--workdir {self.workdir} is a file; expected a directory ' '(it is made if missing).'
      )
    try:
      self.workdir.mkdir(parents=True, exist_ok=True)
      for _ in range(_ATTEMPTS):
        if self._create():
          self._held = True
          self._thread = threading.Thread(
              target=self._renew, name='workdir-lock-heartbeat', daemon=True
          )
          self._thread.start()
          return self
        raw, holder, age = self._read()
        if raw is None:
          continue  # Released meanwhile: try again.
        reason = self._stale_reason(holder, age)
        if reason is None:
          raise WorkdirBusyError(
              f'{self.workdir} is in use by another training: {describe(holder)}; its lock '
              f'{self.path} was renewed {age:.0f} s ago. Wait for it to end, stop it, or '
              'train in another --workdir.'
          )
        if self._take_over(raw):
          self._warn(
              f'{self.workdir}: taking over the lock left by {describe(holder)}: ' f'{reason}.'
          )
    except OSError as e:
      raise WorkdirError(
          f'Cannot take the training workdir {self.workdir}: '
          f'{e.strerror or e} ({e.filename or self.path}).'
      ) from e
    raise WorkdirBusyError(
        f'{self.workdir}: could not take {self.path}: other trainings ' 'keep taking it.'
    )

  def _create(self) -> bool:
    """Create the lock file whole, unless one exists."""
    data = json.dumps(self._identity, indent=1).encode()
    aside = self.path.with_name(f'{LOCK_FILE}.{self._token}.tmp')
    aside.write_bytes(data)
    try:
      os.link(aside, self.path)
      return True
    except FileExistsError:
      return False
    except OSError:  # A filesystem without hard links.
      try:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
      except FileExistsError:
        return False
      with os.fdopen(fd, 'wb') as f:
        f.write(data)
      return True
    finally:
      aside.unlink(missing_ok=True)

  def _read(self) -> tuple[bytes | None, dict[str, Any] | None, float]:
    """(raw bytes, parsed holder or None if unreadable, seconds since its last renewal)."""
    try:
      raw = self.path.read_bytes()
      age = time.time() - self.path.stat().st_mtime
    except FileNotFoundError:
      return None, None, 0.0
    try:
      holder = json.loads(raw)
      holder = holder if isinstance(holder, dict) else None
    except ValueError:
      holder = None
    return raw, holder, max(age, 0.0)

  def _stale_reason(self, holder: dict[str, Any] | None, age: float) -> str | None:
    """Why the lock's holder is gone, or None if it may still run."""
    if holder is None:
      return 'the lock file is unreadable'
    me = self._identity
    same_host = holder.get('host') == me['host']
    if same_host and holder.get('boot_id') and me['boot_id'] and holder['boot_id'] != me['boot_id']:
      return 'this machine has restarted since'
    if (
        same_host
        and holder.get('pid_namespace') == me['pid_namespace']
        and isinstance(holder.get('pid'), int)
    ):
      return (
          None
          if _alive(holder['pid'], holder.get('pid_start'))
          else f'process {holder["pid"]} is gone'
      )
    if age > self._stale_after_s:
      return f'its heartbeat stopped {age:.0f} s ago'
    return None

  def _take_over(self, raw: bytes) -> bool:
    """Remove the stale lock `raw`; False if another process replaced it meanwhile."""
    aside = self.path.with_name(f'{LOCK_FILE}.stale-{self._token}')
    try:
      os.rename(self.path, aside)
    except FileNotFoundError:
      return False
    try:
      if aside.read_bytes() == raw:
        return True
      with contextlib.suppress(FileExistsError):  # Someone else's fresh lock: put it back.
        os.link(aside, self.path)
      return False
    finally:
      aside.unlink(missing_ok=True)

  # -- holding it -----------------------------------------------------------------------

  def _ours(self) -> bool:
    _, holder, _ = self._read()
    return bool(holder) and holder.get('token') == self._token

  def _renew(self) -> None:
    while not self._stop.wait(self._heartbeat_s):
      try:
        if not self._ours():
          return
        os.utime(self.path)
      except OSError:
        pass  # A filesystem hiccup: the next heartbeat tries again.

  def check(self) -> None:
    """`WorkdirBusyError` if another training has taken this run's workdir meanwhile."""
    if not self._held or self._ours():
      return
    raw, holder, _ = self._read()
    if raw is None and self._create():  # Removed by hand: taken again.
      self._warn(f'{self.path} was removed while this training ran; took it again.')
      return
    raise WorkdirBusyError(
        f'{self.workdir} was taken over by {describe(holder)} while this training ran (its '
        'lock had not been renewed); stopping without writing more.'
    )

  def release(self) -> None:
    """Stop renewing and remove the lock file if it is still this run's."""
    self._stop.set()
    if self._thread is not None:
      self._thread.join()
    if self._held and self._ours():
      self.path.unlink(missing_ok=True)
    self._held = False

  def __enter__(self) -> WorkdirLock:
    return self.acquire()

  def __exit__(self, *exc_info: Any) -> None:
    self.release()


@contextlib.contextmanager
def hold(workdir: str | os.PathLike[str], **kwargs: Any) -> Iterator[WorkdirLock | None]:
  """The workdir for one (possibly multi-host) training; process 0 holds the lock.

  Every process raises the same `WorkdirBusyError` if process 0 could not take it.
  Yields the lock on process 0, None elsewhere.
  """
  import jax

  lock = WorkdirLock(workdir, **kwargs) if jax.process_index() == 0 else None
  error: Exception | None = None
  if lock is not None:
    try:
      lock.acquire()
    except (WorkdirBusyError, WorkdirError) as e:
      error = e
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils

    taken = int(multihost_utils.broadcast_one_to_all(np.int32(error is None)))
    if not taken and error is None:
      error = WorkdirBusyError(
          f'{Path(workdir).absolute()}: process 0 could not take the '
          'workdir for this training (its log says why).'
      )
  if error is not None:
    raise error
  try:
    yield lock
  finally:
    if lock is not None:
      lock.release()
