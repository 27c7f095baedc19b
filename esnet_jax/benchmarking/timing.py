"""Timing primitives of the benchmarks: alternating contenders, medians, I/O steps, memory.

Every timed function here blocks until its result is ready; the figures are
seconds (or ms where the name says), and which machine produced them is
`esnet_jax.benchmarking.machine`'s to say.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.benchmarking import profiling
from esnet_jax.data.transforms import MEAN_RGB, STD_RGB


def summary(seconds: Sequence[float], prefix: str) -> dict[str, float]:
  """`{prefix}_p50/_p90/_p99/_min` in ms of a list of seconds."""
  ms = np.asarray(seconds) * 1e3
  return {
      f'{prefix}_p50': float(np.median(ms)),
      f'{prefix}_p90': float(np.percentile(ms, 90)),
      f'{prefix}_p99': float(np.percentile(ms, 99)),
      f'{prefix}_min': float(ms.min()),
  }


def time_alternating(
    calls: Mapping[str, Callable[[], Any]], runs: int, warmup: int, seed: int = 0
) -> dict[str, list[float]]:
  """Seconds per call of each function: `runs` rounds, each calling every function once.

  Interleaving the contenders spreads load from other processes and thermal
  drift evenly over them; shuffling the order every round keeps any one
  contender from always following the same other one (a framework's worker
  threads may still be spinning down when the next call starts). Each call
  must block until its result is ready.
  """
  for call in calls.values():
    for _ in range(warmup):
      call()
  names = list(calls)
  order = np.random.default_rng(seed)
  times: dict[str, list[float]] = {name: [] for name in names}
  for _ in range(runs):
    for name in order.permutation(names):
      start = time.perf_counter()
      calls[name]()
      times[name].append(time.perf_counter() - start)
  return times


def median_ms(fn: Callable[[], Any], runs: int) -> float:
  """Median ms of `runs` calls of `fn`, after one untimed call."""
  fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def io_timings(images: np.ndarray, logits: jax.Array, runs: int) -> dict[str, float]:
  """Median ms of the steps around the network that a deployment also pays for."""
  mean, std = np.asarray(MEAN_RGB, np.float32), np.asarray(STD_RGB, np.float32)
  preprocess = jax.jit(lambda u8: (u8.astype(jnp.float32) - mean) / std)
  postprocess = jax.jit(lambda y: jnp.argmax(y, axis=-1).astype(jnp.int32))
  on_device = jax.device_put(images)
  d2h = []
  for _ in range(runs + 1):
    # A fresh array each time: jax caches an array's host copy after the first read.
    classes = postprocess(logits).block_until_ready()
    start = time.perf_counter()
    np.asarray(classes)
    d2h.append(time.perf_counter() - start)
  return {
      'h2d_ms': median_ms(lambda: jax.device_put(images).block_until_ready(), runs),
      'preprocess_ms': median_ms(lambda: preprocess(on_device).block_until_ready(), runs),
      'postprocess_ms': median_ms(lambda: postprocess(logits).block_until_ready(), runs),
      'd2h_ms': float(np.median(d2h[1:]) * 1e3),
  }


def peak_memory(device: jax.Device) -> tuple[int, str]:
  """Peak device memory where the backend tracks it, else the process's peak RSS."""
  stats = device.memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device peak_bytes_in_use'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # ru_maxrss is in KiB on Linux and in bytes on macOS.
  return int(rss if sys.platform == 'darwin' else rss * 1024), 'process peak RSS'


def trace(
    call: Callable[[], Any], trace_dir: str | os.PathLike[str], calls: int = 3
) -> dict[str, Any]:
  """Trace `calls` more calls; the trace file, its wall time and its top operations."""
  trace_file, wall = profiling.record_trace(call, trace_dir, calls)
  return {
      'trace_file': str(trace_file),
      'trace_ms_per_call': wall / calls * 1e3,
      'trace_ops': profiling.op_totals(trace_file, calls)[:20],
  }
