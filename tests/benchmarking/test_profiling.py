"""esnet_jax.benchmarking.profiling: per-operation totals of a jax.profiler trace."""

from __future__ import annotations

import gzip
import json

import pytest


def test_op_totals_pair_library_calls_with_their_end_events(tmp_path):
  from esnet_jax.benchmarking import profiling

  events = [
      {'ph': 'X', 'name': 'ThunkExecutor::Execute', 'ts': 0, 'dur': 100},
      {'ph': 'X', 'name': 'convolution.3', 'ts': 10, 'dur': 1},
      {'ph': 'X', 'name': 'end: convolution.3', 'ts': 40, 'dur': 2},  # finishes at 42
      {'ph': 'X', 'name': 'add_fusion.1', 'ts': 50, 'dur': 5},
      {'ph': 'X', 'name': 'end: add_fusion.1', 'ts': 90, 'dur': 1},  # ignored: a fusion
      {'ph': 'X', 'name': 'add_fusion.7', 'ts': 60, 'dur': 3},
      {'ph': 'X', 'name': '$python frame', 'ts': 0, 'dur': 500},
      {'ph': 'M', 'name': 'thread_name'},
  ]
  path = tmp_path / 'x.trace.json.gz'
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)
  rows = {row['op']: row for row in profiling.op_totals(path, calls=2)}
  assert set(rows) == {'convolution', 'add_fusion'}
  assert rows['convolution']['ms_per_call'] == pytest.approx(32 / 2 / 1e3)
  assert rows['convolution']['async'] and not rows['add_fusion']['async']
  assert rows['add_fusion']['ms_per_call'] == pytest.approx(8 / 2 / 1e3)
  assert rows['add_fusion']['count_per_call'] == 1
