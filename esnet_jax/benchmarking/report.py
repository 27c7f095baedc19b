"""The benchmark's results as people read them: tables, the profile, the JSON file."""

from __future__ import annotations

import json
import os
from typing import Any, Mapping

from esnet_jax.benchmarking import profiling

_Row = tuple[str, str]


def _run_rows(result: Mapping[str, Any]) -> list[_Row]:
  """The rows every result has: the network, the machine and the JAX timings."""
  h, w = result['height'], result['width']
  return [
      (
          'network',
          f"ESNet({result['num_classes']}) {w}x{h} batch {result['batch']} "
          f"{result['dtype']} {'BN folded' if result['fold_bn'] else 'with BN'}"
          f"{', native kernels' if result['native_kernels'] else ''}",
      ),
      ('device', f"{result['device_kind']} ({result['platform']}), {result['threads']} threads"),
      ('cpu', f"{result['cpu_model']}, {result['cpu_isa']}"),
      ('jax / jaxlib', f"{result['jax_version']} / {result['jaxlib_version']}"),
      ('XLA_FLAGS', result['xla_flags'] or '(none)'),
      ('params', f"{result['params']:,}"),
      ('FLOPs per call', f"{result['flops'] / 1e9:.2f} G"),
      ('compile', f"{result['compile_s']:.2f} s"),
      (
          'latency p50 / p90 / p99',
          f"{result['latency_ms_p50']:.1f} / "
          f"{result['latency_ms_p90']:.1f} / "
          f"{result['latency_ms_p99']:.1f} ms",
      ),
      ('latency min', f"{result['latency_ms_min']:.1f} ms ({result['runs']} runs)"),
      ('throughput', f"{result['fps']:.2f} images/s"),
      ('host->device uint8', f"{result['h2d_ms']:.2f} ms"),
      (
          'normalise / argmax',
          f"{result['preprocess_ms']:.2f} / " f"{result['postprocess_ms']:.2f} ms",
      ),
      ('device->host classes', f"{result['d2h_ms']:.2f} ms"),
      (
          'peak memory',
          f"{result['peak_memory_bytes'] / 2**20:.0f} MiB " f"({result['peak_memory_source']})",
      ),
  ]


def _torch_rows(result: Mapping[str, Any]) -> list[_Row]:
  """The PyTorch rows, present only where the result compared PyTorch."""
  rows: list[_Row] = []
  if 'torch_nchw_ms_p50' in result:
    rows += [
        ('torch', f"{result['torch_version']}, {result['torch_threads']} threads, eager"),
        (
            'torch NCHW p50',
            f"{result['torch_nchw_ms_p50']:.1f} ms "
            f"(jax/torch {result['ratio_jax_torch_nchw']:.2f})",
        ),
        (
            'torch channels_last p50',
            f"{result['torch_channels_last_ms_p50']:.1f} ms "
            f"(jax/torch {result['ratio_jax_torch_channels_last']:.2f})",
        ),
        ('max |jax - torch| logits', f"{result['torch_max_abs_diff']:.2e}"),
    ]
  if 'torch_channels_last_autocast_ms_p50' in result:
    rows.append(
        (
            'torch channels_last bf16 autocast p50',
            f"{result['torch_channels_last_autocast_ms_p50']:.1f} ms "
            f"(jax/torch {result['ratio_jax_torch_channels_last_autocast']:.2f})",
        )
    )
  return rows


def _onnxruntime_rows(result: Mapping[str, Any]) -> list[_Row]:
  """The ONNX Runtime rows (float32 and INT8), present only where the result compared it."""
  if 'onnxruntime_ms_p50' not in result:
    return []
  return [
      (
          'onnxruntime',
          f"{result['onnxruntime_version']}, {result['onnxruntime_threads']} "
          f"threads, {result['onnxruntime_providers'][0]}, on esnet_jax.deploy.export's "
          'ONNX',
      ),
      (
          'onnxruntime p50',
          f"{result['onnxruntime_ms_p50']:.1f} ms "
          f"(jax/onnxruntime {result['ratio_jax_onnxruntime']:.2f})",
      ),
      ('max |jax - onnxruntime| logits', f"{result['onnxruntime_max_abs_diff']:.2e}"),
      (
          'onnxruntime INT8 p50',
          f"{result['onnxruntime_int8_ms_p50']:.1f} ms "
          f"(jax/onnxruntime INT8 {result['ratio_jax_onnxruntime_int8']:.2f}; "
          'calibrated on the timed input: speed only)',
      ),
      (
          'max |jax - onnxruntime INT8| logits',
          f"{result['onnxruntime_int8_max_abs_diff']:.2e}",
      ),
  ]


def format_report(result: Mapping[str, Any]) -> str:
  """A two-column table of a `run_inference_benchmark` result."""
  rows = _run_rows(result) + _torch_rows(result) + _onnxruntime_rows(result)
  width_ = max(len(name) for name, _ in rows)
  return '\n'.join(f'{name:<{width_}}  {value}' for name, value in rows)


def print_trace(result: Mapping[str, Any]) -> None:
  """The top operations of a result's `jax.profiler` trace, if it has one."""
  if 'trace_ops' in result:
    print(f"\nprofile of 3 more JAX calls ({result['trace_file']}):")
    print(profiling.format_op_totals(result['trace_ops'], result['trace_ms_per_call']))


def write_json(path: str | os.PathLike[str], result: Mapping[str, Any]) -> None:
  """`result` as indented JSON in `path` (one helper writes every result file)."""
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
    f.write('\n')


def format_engines_report(result: Mapping[str, Any]) -> str:
  """The table of a `run_engines_benchmark` result: per size, fastest first, with marks."""
  flags = [name for name, have in result['cpu_flags'].items() if have]
  versions = ', '.join(
      f'{name} {result[f"{name}_version"]}'
      for name in ('jax', 'onnxruntime', 'openvino')
      if result[f'{name}_version']
  )
  threads = result['engine_threads'] or 'default'
  lines = [
      f"ESNet({result['num_classes']}) {result['checkpoint']}, batch {result['batch']}, "
      f"{result['runs']} rounds alternating, logits of normalised float32 images",
      f"cpu: {result['cpu_model']}, {result['cpu_isa']} ({' '.join(flags) or 'no flags read'}), "
      f"{result['threads']} threads (JAX), ONNX Runtime / OpenVINO threads: {threads}",
      versions,
      '',
  ]
  table = [
      (
          'size (HxW)',
          'engine',
          'precision',
          'p50 ms',
          'min ms',
          'p90 ms',
          'FPS',
          'first call ms',
          '',
      )
  ]
  for row in result['rows']:
    marks = [
        mark
        for mark, on in (
            ('fastest', row['fastest']),
            (f"auto {row['precision']}", row['auto']),
            ('default', row['default']),
        )
        if on
    ]
    table.append(
        (
            f"{row['height']}x{row['width']}",
            row['engine'],
            row['precision'],
            f"{row['ms_p50']:.1f}",
            f"{row['ms_min']:.1f}",
            f"{row['ms_p90']:.1f}",
            f"{row['fps']:.1f}",
            f"{row['first_call_s'] * 1e3:.0f}",
            ', '.join(marks),
        )
    )
  widths = [max(len(cell) for cell in column) for column in zip(*table)]
  numbers = range(3, 8)  # p50 to first call: right-aligned.
  lines += [
      '  '.join(
          cell.rjust(width) if i in numbers else cell.ljust(width)
          for i, (cell, width) in enumerate(zip(cells, widths))
      )
      for cells in table
  ]
  built = ', '.join(f"{b['engine']} {b['precision']} {b['build_s']:.2f} s" for b in result['built'])
  lines += [
      '',
      'auto: the engine each precision runs with --engine auto; default: what the tools run '
      'unless told (auto float32); first call: JAX and OpenVINO compile for the size then',
      f'built (files exported or read, sessions made) in: {built}',
  ]
  for skip in result['skipped']:
    lines.append(f"skipped {skip['engine']} {skip['precision']}: {skip['reason']}")
  return '\n'.join(line.rstrip() for line in lines)
