"""The training process's malloc settings: applied, respected, and page faults really gone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from conftest import REPO
from esnet_jax.system import host_memory

glibc_only = pytest.mark.skipif(platform.libc_ver()[0] != 'glibc', reason='glibc mallopt')

# Allocates, touches and frees a 256 MB block on a worker thread (as XLA:CPU does with a
# step's temporaries), twice; prints the settings applied and the second round's faults.
_FAULTS = """
import ctypes, ctypes.util, resource, sys, threading
from esnet_jax.system import host_memory
applied = host_memory.keep_freed_memory() if sys.argv[1] == 'tuned' else []
libc = ctypes.CDLL(ctypes.util.find_library('c'))
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
def round_faults():
  box = []
  def work():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    block = libc.malloc(256 << 20)
    ctypes.memset(block, 1, 256 << 20)
    libc.free(block)
    box.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  thread = threading.Thread(target=work)
  thread.start()
  thread.join()
  return box[0]
round_faults()
print(','.join(applied) or '-', round_faults())
"""


def _run(mode: str, **env_extra: str) -> tuple[list[str], int]:
  env = {
      k: v
      for k, v in os.environ.items()
      if k != host_memory.OPT_OUT_ENV and not k.startswith('MALLOC_')
  }
  env.update(env_extra, PYTHONPATH=str(REPO))
  out = subprocess.run(
      [sys.executable, '-c', _FAULTS, mode],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=120,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  names, faults = out.stdout.split()[-2:]
  return [n for n in names.split(',') if n != '-'], int(faults)


@pytest.mark.end_to_end
@glibc_only
def test_freed_blocks_are_reused_without_page_faults():
  applied, tuned = _run('tuned')
  assert applied == [name for name, *_ in host_memory.SETTINGS]
  _, default = _run('default')
  # 256 MB of fresh pages is ~65k faults (4 KB pages; fewer with transparent huge pages).
  assert tuned < 1000 < default, (tuned, default)


@pytest.mark.end_to_end
@glibc_only
def test_user_settings_and_opt_out_are_respected():
  applied, _ = _run('tuned', MALLOC_ARENA_MAX='4')
  assert 'M_ARENA_MAX' not in applied and 'M_MMAP_MAX' in applied
  assert host_memory.keep_freed_memory({host_memory.OPT_OUT_ENV: '1'}) == []
