"""One report of what a GPU does with ESNet: `python -m esnet_jax.benchmark --suite gpu --json OUT`.

Made for a GPU lent for a few minutes: one command records the device, its
driver and CUDA versions, inference at the paper's 1024x512 (batch 1, the unit
of its 63 FPS, and batch 8) and at 2048x1024, in float32 and bfloat16, the
pmapped train step at 512x1024 with 8 images per device in both dtypes, compile
times, peak device memory and the custom calls of every program (none of them
may be one of this package's CPU kernels). `--smoke` swaps in tiny sizes and
runs on any backend: that is how the tests run it on a CPU.
"""

from __future__ import annotations

import importlib.metadata
import subprocess
import time
from typing import Any, Callable, Sequence

import jax

from esnet_jax.benchmarking import machine, runners
from esnet_jax.config.options import DTYPES

# (height, width, batch) of the inference cases and of the train step (batch per device).
INFERENCE_CASES = ((512, 1024, 1), (512, 1024, 8), (1024, 2048, 1))
TRAIN_CASE = (512, 1024, 8)
SMOKE_INFERENCE_CASES = ((32, 64, 1), (32, 64, 2))
SMOKE_TRAIN_CASE = (32, 64, 1)


def _nvidia_smi() -> dict[str, str] | None:
  """Name, driver and memory of GPU 0 as nvidia-smi reports them, if it is there."""
  try:
    out = subprocess.run(
        ['nvidia-smi', '--query-gpu=name,driver_version,memory.total', '--format=csv,noheader'],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout
  except (OSError, subprocess.SubprocessError):
    return None
  fields = [f.strip() for f in out.splitlines()[0].split(',')] if out.strip() else []
  return dict(zip(('name', 'driver_version', 'memory_total'), fields)) if fields else None


def _cuda_versions() -> dict[str, Any]:
  """The CUDA runtime, driver and library versions that jaxlib's CUDA plugin reports."""
  from jax._src import lib  # No public API has these; jax.print_environment_info reads the same.

  module = getattr(lib, 'cuda_versions', None)
  if module is None:
    return {}
  found = {}
  for name in (
      'cuda_runtime_get_version',
      'cuda_driver_get_version',
      'cudnn_get_version',
      'cublas_get_version',
      'cusolver_get_version',
      'cufft_get_version',
      'cusparse_get_version',
      'cuda_device_count',
  ):
    fn = getattr(module, name, None)
    if fn is not None:
      try:
        found[name.removesuffix('_get_version')] = fn()
      except Exception as e:  # pylint: disable=broad-except
        found[name.removesuffix('_get_version')] = f'unavailable: {e}'
  return found


def environment() -> dict[str, Any]:
  """What ran the report: device, driver, CUDA, JAX."""
  device = jax.devices()[0]
  plugins = {}
  for name in ('jax-cuda13-plugin', 'jax-cuda12-plugin', 'jax-cuda13-pjrt', 'jax-cuda12-pjrt'):
    try:
      plugins[name] = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
      pass
  return {
      **machine.describe(device),
      'platform_version': getattr(device.client, 'platform_version', None),
      'nvidia_smi': _nvidia_smi(),
      'cuda': _cuda_versions(),
      'plugins': plugins,
  }


def _check_platform(smoke: bool) -> str:
  """The platform JAX runs on, refused unless it is a GPU or `smoke` allows any."""
  platform = jax.devices()[0].platform
  if not smoke and platform != 'gpu':
    raise ValueError(
        f'--suite gpu times a GPU, but JAX runs on {platform!r} here '
        f'({jax.devices()[0].device_kind}); install the `cuda12` or `cuda13` '
        'extra, or add --smoke for the tiny sizes any backend runs.'
    )
  return platform


def _inference_entry(
    height: int, width: int, batch: int, dtype: str, r: dict[str, Any]
) -> dict[str, Any]:
  """The report's fields of one inference case, picked from its benchmark result."""
  return {
      'height': height,
      'width': width,
      'batch': batch,
      'dtype': dtype,
      'fps': r['fps'],
      'latency_ms_p50': r['latency_ms_p50'],
      'latency_ms_p90': r['latency_ms_p90'],
      'latency_ms_min': r['latency_ms_min'],
      'compile_s': r['compile_s'],
      'flops': r['flops'],
      'peak_memory_bytes': r['peak_memory_bytes'],
      'peak_memory_source': r['peak_memory_source'],
      'custom_call_targets': r['custom_call_targets'],
  }


def _train_entry(
    height: int, width: int, batch: int, dtype: str, r: dict[str, Any]
) -> dict[str, Any]:
  """The report's fields of one train-step case, picked from its benchmark result."""
  return {
      'height': height,
      'width': width,
      'batch_per_device': batch,
      'dtype': dtype,
      'devices': r['devices'],
      'images_per_sec': r['jax_images_per_sec'],
      'step_ms_p50': r['jax_step_ms_p50'],
      'step_ms_min': r['jax_step_ms_min'],
      'compile_s': r['compile_s'],
      'peak_memory_bytes': r['peak_memory_bytes'],
      'peak_memory_source': r['peak_memory_source'],
      'custom_call_targets': r['custom_call_targets'],
  }


def _measure_inference(
    cases: Sequence[tuple[int, int, int]],
    dtypes: Sequence[str],
    runs: int,
    warmup: int,
    progress: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
  """Every inference case in every dtype, each reported to `progress` as it finishes."""
  entries = []
  for dtype in dtypes:
    for height, width, batch in cases:
      r = runners.run_inference_benchmark(
          height=height, width=width, batch=batch, dtype=dtype, runs=runs, warmup=warmup
      )
      entries.append(_inference_entry(height, width, batch, dtype, r))
      if progress:
        progress(_inference_line(entries[-1]))
  return entries


def _measure_train(
    case: tuple[int, int, int],
    dtypes: Sequence[str],
    train_runs: int,
    progress: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
  """The train step on every local device in every dtype, each reported as it finishes."""
  height, width, batch = case
  entries = []
  for dtype in dtypes:
    r = runners.run_train_benchmark(
        height=height,
        width=width,
        batch=batch,
        dtype=dtype,
        devices=jax.local_device_count(),
        runs=train_runs,
        warmup=min(2, train_runs),
    )
    entries.append(_train_entry(height, width, batch, dtype, r))
    if progress:
      progress(_train_line(entries[-1]))
  return entries


def _cpu_kernel_calls(entries: Sequence[dict[str, Any]]) -> list[str]:
  """The custom-call targets of this package's CPU kernels in any entry, sorted and unique."""
  return sorted(
      {
          t
          for entry in entries
          for t in entry['custom_call_targets']
          if t.startswith(machine.KERNEL_TARGET_PREFIX)
      }
  )


def run_gpu_report(
    *,
    smoke: bool = False,
    runs: int = 30,
    warmup: int = 3,
    train_runs: int = 10,
    dtypes: Sequence[str] = DTYPES,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
  """Every measurement of the report, as a JSON-ready dict.

  `progress`, if given, gets one line per case as soon as it is measured, so that a
  lease that ends mid-report still leaves the cases it finished.

  Raises ValueError on a backend other than a GPU unless `smoke` (tiny sizes,
  any backend). `ok` is false if any program held one of this package's CPU
  kernels, which a GPU program must never do.
  """
  platform = _check_platform(smoke)
  start = time.perf_counter()
  report: dict[str, Any] = {
      'suite': 'gpu',
      'smoke': smoke,
      'environment': environment(),
      'inference': [],
      'train': [],
  }
  report['inference'] = _measure_inference(
      SMOKE_INFERENCE_CASES if smoke else INFERENCE_CASES, dtypes, runs, warmup, progress
  )
  report['train'] = _measure_train(
      SMOKE_TRAIN_CASE if smoke else TRAIN_CASE, dtypes, train_runs, progress
  )
  kernel_calls = _cpu_kernel_calls(report['inference'] + report['train'])
  report.update(
      {
          'cpu_kernel_calls': kernel_calls,
          'ok': platform != 'gpu' or not kernel_calls,
          'wall_s': time.perf_counter() - start,
      }
  )
  return report


def format_report(report: dict[str, Any]) -> str:
  """The report as a few readable lines (the JSON holds everything)."""
  env = report['environment']
  smi = env['nvidia_smi'] or {}
  lines = [
      f"{env['device_kind']} ({env['platform']}) x{env['device_count']}, driver "
      f"{smi.get('driver_version', '?')}, CUDA {env['cuda'] or '?'}, jax "
      f"{env['jax_version']} / jaxlib {env['jaxlib_version']}"
  ]
  lines += [_inference_line(e) for e in report['inference']]
  lines += [_train_line(e) for e in report['train']]
  peak = max(e['peak_memory_bytes'] for e in report['inference'] + report['train'])
  lines.append(
      f'peak memory {peak / 2**30:.2f} GiB; CPU kernel calls: '
      f"{', '.join(report['cpu_kernel_calls']) or 'none'}; {report['wall_s']:.0f} s"
  )
  return '\n'.join(lines)


def _inference_line(e: dict[str, Any]) -> str:
  return (
      f"inference {e['width']}x{e['height']} batch {e['batch']} {e['dtype']:>8}: "
      f"{e['fps']:8.1f} images/s, p50 {e['latency_ms_p50']:.2f} ms, compile "
      f"{e['compile_s']:.1f} s"
  )


def _train_line(e: dict[str, Any]) -> str:
  return (
      f"train {e['width']}x{e['height']} {e['batch_per_device']}/device x"
      f"{e['devices']} {e['dtype']:>8}: {e['images_per_sec']:8.1f} images/s, compile "
      f"{e['compile_s']:.1f} s"
  )
