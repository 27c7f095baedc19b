"""glibc malloc settings for the training process: freed memory is kept for reuse.

XLA:CPU allocates a train step's temporaries (1.5 GB for ESNet at 4x360x480)
with malloc on its worker threads. glibc serves a block that size from a fresh
mmap, outside the thread's arena, and unmaps it on free, so every step touches
1.5 GB of new pages: ~370k minor page faults, a step of ~2.2 s instead of
~1.75 s on the benchmark machine (README, training section). With one arena, no
mmap and no trimming, the block comes from the heap and is reused, with no page
faults after the first step; the price is that the process keeps its peak
memory until it exits, which a training process does anyway.

`python -m esnet_jax.main` and `python -m esnet_jax.benchmark --train` call
`keep_freed_memory()` first thing, before JAX starts its threads. A setting the
user made through glibc's environment variables (`MALLOC_ARENA_MAX`, ...) is
left alone, `ESNET_JAX_NO_MALLOC_TUNING=1` turns all of them off, and other C
libraries are not touched.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform
from typing import Mapping

OPT_OUT_ENV = 'ESNET_JAX_NO_MALLOC_TUNING'
# (mallopt parameter, its number in glibc's malloc.h, value, glibc's environment variable)
SETTINGS: tuple[tuple[str, int, int, str], ...] = (
    ('M_ARENA_MAX', -8, 1, 'MALLOC_ARENA_MAX'),  # worker threads share the main heap
    ('M_MMAP_MAX', -4, 0, 'MALLOC_MMAP_MAX_'),  # large blocks come from the heap too
    ('M_TRIM_THRESHOLD', -1, -1, 'MALLOC_TRIM_THRESHOLD_'),  # -1: never trim the heap
    ('M_TOP_PAD', -2, 64 << 20, 'MALLOC_TOP_PAD_'),  # grow the heap 64 MB at a time
)


def keep_freed_memory(environ: Mapping[str, str] = os.environ) -> list[str]:
  """Apply `SETTINGS` with glibc's `mallopt`; returns the names of those applied.

  Nothing is applied on another C library, with `ESNET_JAX_NO_MALLOC_TUNING`
  set (to anything but '' or '0'), or for a setting whose environment
  variable the user set. Call before JAX creates its threads: a thread keeps
  the arena it was given at its first allocation.
  """
  if environ.get(OPT_OUT_ENV, '') not in ('', '0') or platform.libc_ver()[0] != 'glibc':
    return []
  libc = ctypes.CDLL(ctypes.util.find_library('c'))
  applied = []
  for name, parameter, value, env in SETTINGS:
    if env not in environ and libc.mallopt(parameter, value) == 1:
      applied.append(name)
  return applied
