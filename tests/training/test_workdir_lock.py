"""One training per workdir: the lock file, its heartbeat, and taking over stale ones."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from esnet_jax.training import workdir_lock
from esnet_jax.errors import WorkdirBusyError, WorkdirError


def _lock(workdir, warnings=None, **kwargs) -> workdir_lock.WorkdirLock:
  return workdir_lock.WorkdirLock(
      workdir, warn=(warnings if warnings is not None else []).append, **kwargs
  )


def _write_lock(workdir, age_s: float = 0.0, **fields) -> None:
  path = workdir / workdir_lock.LOCK_FILE
  workdir.mkdir(parents=True, exist_ok=True)
  holder = {
      'host': socket.gethostname(),
      'pid': os.getpid(),
      'started': '2026-12-01T00:00:00',
      'token': 'theirs',
      **fields,
  }
  path.write_text(json.dumps(holder))
  then = time.time() - age_s
  os.utime(path, (then, then))


def _dead_pid() -> int:
  proc = subprocess.Popen([sys.executable, '-c', 'pass'])
  proc.wait()  # Reaped: the pid runs nothing now.
  return proc.pid


def test_the_lock_names_its_holder_and_a_second_one_refuses_until_it_is_released(tmp_path):
  workdir = tmp_path / 'run'
  first = _lock(workdir).acquire()  # Makes the workdir.
  holder = json.loads((workdir / 'train.lock').read_text())
  assert holder['host'] == socket.gethostname() and holder['pid'] == os.getpid()
  assert holder['started'] and holder['token']
  with pytest.raises(WorkdirBusyError) as err:
    _lock(workdir).acquire()
  message = str(err.value)
  assert message.startswith(
      f'{workdir} is in use by another training: process {os.getpid()} '
      f'on {socket.gethostname()}, started {holder["started"]}'
  )
  assert 'another --workdir' in message and '\n' not in message
  first.check()  # Still its own.
  first.release()
  assert not (workdir / 'train.lock').exists()
  with _lock(workdir):
    assert (workdir / 'train.lock').exists()
  assert not (workdir / 'train.lock').exists()


@pytest.mark.end_to_end
def test_a_lock_whose_process_is_gone_is_taken_over_with_one_warning(tmp_path):
  pid = _dead_pid()
  _write_lock(tmp_path, pid=pid, pid_namespace=workdir_lock._pid_namespace())
  warnings = []
  lock = _lock(tmp_path, warnings).acquire()
  assert json.loads((tmp_path / 'train.lock').read_text())['pid'] == os.getpid()
  assert len(warnings) == 1 and f'left by process {pid} on {socket.gethostname()}' in warnings[0]
  assert warnings[0].endswith(f'process {pid} is gone.')
  lock.release()


def test_a_pid_now_running_another_process_is_not_the_holder(tmp_path):
  """The pid is alive (this test's), but it started later than the lock's holder."""
  _write_lock(tmp_path, pid_namespace=workdir_lock._pid_namespace(), pid_start='1')
  warnings = []
  _lock(tmp_path, warnings).acquire().release()
  assert len(warnings) == 1 and 'is gone' in warnings[0]


def test_another_hosts_lock_is_taken_over_only_when_its_heartbeat_has_stopped(tmp_path):
  _write_lock(tmp_path, host='elsewhere', age_s=30)
  with pytest.raises(WorkdirBusyError, match=r'process \d+ on elsewhere.*renewed 30 s ago'):
    _lock(tmp_path, stale_after_s=60).acquire()
  _write_lock(tmp_path, host='elsewhere', age_s=90)
  warnings = []
  _lock(tmp_path, warnings, stale_after_s=60).acquire().release()
  assert len(warnings) == 1 and 'its heartbeat stopped 90 s ago' in warnings[0]


def test_a_lock_from_before_a_restart_or_unreadable_is_taken_over(tmp_path):
  _write_lock(tmp_path, boot_id='another boot')
  warnings = []
  _lock(tmp_path, warnings).acquire().release()
  (tmp_path / 'train.lock').write_bytes(b'\0' * 40)  # A disk fault.
  _lock(tmp_path, warnings).acquire().release()
  assert [w.split(': ')[-1] for w in warnings] == [
      'this machine has restarted since.',
      'the lock file is unreadable.',
  ]


def test_the_heartbeat_renews_the_lock_and_a_run_notices_a_takeover(tmp_path):
  lock = _lock(tmp_path, heartbeat_s=0.05).acquire()
  path = tmp_path / 'train.lock'
  os.utime(path, (time.time() - 1000, time.time() - 1000))
  deadline = time.monotonic() + 10
  while time.time() - path.stat().st_mtime > 100:
    assert time.monotonic() < deadline, 'the heartbeat did not renew the lock'
    time.sleep(0.02)
  warnings = []
  path.unlink()  # Removed by hand: the run takes it again at its next check.
  lock._warn = warnings.append
  lock.check()
  assert path.exists() and 'was removed while this training ran' in warnings[0]
  _write_lock(tmp_path, host='elsewhere', pid=7)  # Another run judged it stale.
  with pytest.raises(WorkdirBusyError, match=r'taken over by process 7 on elsewhere.*stopping'):
    lock.check()
  lock.release()
  assert json.loads(path.read_text())['host'] == 'elsewhere'  # Theirs is left alone.


def test_a_workdir_that_is_a_file_is_one_error(tmp_path):
  (tmp_path / 'notes').write_text('x')
  with pytest.raises(WorkdirError, match=r'--workdir .*/notes is a file; expected a directory'):
    _lock(tmp_path / 'notes').acquire()
