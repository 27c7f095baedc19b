"""Where a compiled call spends its time: a `jax.profiler` trace and its per-op totals.

`python -m esnet_jax.benchmark [--train] --trace DIR` records a trace of a few
calls after the timed runs and prints the XLA operations that took the most time,
summed per kind (`convolution.12` and `convolution.40` both count as
`convolution`). The trace itself opens in TensorBoard's profile plugin or in
Perfetto (the `*.trace.json.gz` file).

XLA:CPU names its kernels in a trace only when `--xla_cpu_enable_xprof_traceme=true`
is in `XLA_FLAGS` before JAX starts; the benchmark CLI adds it when `--trace` is
given. XLA's own kernels (fusions) are timed by their trace events. Library
calls (convolutions, matmuls) run asynchronously and are timed from dispatch to
their `end:` event, which includes time queued behind other work; operations that
overlap (independent branches on both cores) count fully each, so the per-op
totals can exceed the wall time.
"""

from __future__ import annotations

import collections
import gzip
import json
import re
import time
from pathlib import Path
from typing import Any, Callable

import jax

TRACE_FLAG = '--xla_cpu_enable_xprof_traceme=true'
# Events of the runtime around the compiled program, not operations inside it.
_RUNTIME_EVENT = re.compile(r'^(\$|[A-Z]|end: )')
_INSTANCE_SUFFIX = re.compile(r'\.\d+$')
# Convolutions and matmuls run in libraries (Eigen) on the runtime's thread pool: their
# trace event covers only the dispatch, and an `end: <name>` event marks completion.
_LIBRARY_CALL = re.compile(r'^(conv|dot|custom)')


def record_trace(
    call: Callable[[], Any], directory: str | Path, calls: int = 3
) -> tuple[Path, float]:
  """Run `call` (which must block until done) `calls` times under `jax.profiler.trace`.

  Returns the Chrome-format trace file written under `directory` and the wall
  seconds of the traced calls.
  """
  directory = Path(directory)
  with jax.profiler.trace(str(directory)):
    start = time.perf_counter()
    for _ in range(calls):
      call()
    wall = time.perf_counter() - start
  files = sorted(
      directory.glob('plugins/profile/*/*.trace.json.gz'), key=lambda path: path.stat().st_mtime
  )
  if not files:
    raise RuntimeError(f'jax.profiler wrote no *.trace.json.gz under {directory}.')
  return files[-1], wall


def op_totals(trace_file: str | Path, calls: int) -> list[dict[str, Any]]:
  """Per-kind time of the operations in a trace, per call, largest first.

  Each entry: `op` (HLO instruction name without its `.N` suffix), `ms_per_call`,
  `count_per_call`, and `async`: True for library calls, which are timed from
  dispatch to completion and so include time spent queued behind other work.
  """
  with gzip.open(trace_file, 'rt') as f:
    events = [e for e in json.load(f)['traceEvents'] if e.get('ph') == 'X']
  ends: dict[str, list[float]] = collections.defaultdict(list)
  for event in events:
    if event['name'].startswith('end: '):
      ends[event['name'][5:]].append(event['ts'] + event['dur'])
  for times in ends.values():
    times.sort()
  seen: collections.Counter[str] = collections.Counter()
  totals: dict[str, float] = collections.defaultdict(float)
  counts: collections.Counter[str] = collections.Counter()
  asynchronous: set[str] = set()
  for event in sorted(events, key=lambda e: e['ts']):
    name = event['name']
    if _RUNTIME_EVENT.match(name):
      continue
    finish = event['ts'] + event['dur']
    kind = _INSTANCE_SUFFIX.sub('', name)
    if _LIBRARY_CALL.match(kind) and seen[name] < len(ends.get(name, ())):
      finish = max(finish, ends[name][seen[name]])
      asynchronous.add(kind)
    seen[name] += 1
    totals[kind] += finish - event['ts']
    counts[kind] += 1
  rows = [
      {
          'op': kind,
          'ms_per_call': total / calls / 1e3,
          'count_per_call': counts[kind] / calls,
          'async': kind in asynchronous,
      }
      for kind, total in totals.items()
  ]
  return sorted(rows, key=lambda row: -row['ms_per_call'])


def format_op_totals(rows: list[dict[str, Any]], wall_ms_per_call: float, top: int = 12) -> str:
  """A table of the `top` rows of `op_totals`, with the traced wall time per call."""
  lines = [
      f'traced: {wall_ms_per_call:.1f} ms per call (wall); ops running at the same time '
      'count fully each;',
      '* = library call, timed from dispatch to completion '
      '(includes time queued behind other work)',
      f'{"op":<42} {"ms/call":>9} {"count":>7}',
  ]
  for row in rows[:top]:
    name = row['op'][:40] + (' *' if row['async'] else '')
    lines.append(f'{name:<42} {row["ms_per_call"]:>9.1f} {row["count_per_call"]:>7.0f}')
  return '\n'.join(lines)
