"""Which benchmark runs, from a `BenchmarkOptions`: inference, the train step, every engine or
the GPU suite, printed and written as JSON; `benchmark_from_config` for `--config.mode=benchmark`.
The command line is `esnet_jax.benchmark`."""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from esnet_jax.benchmarking import gpu_report, profiling, report
from esnet_jax.benchmarking.engine_runs import run_engines_benchmark
from esnet_jax.benchmarking.runners import run_inference_benchmark, run_train_benchmark
from esnet_jax.config.options import MIN_RUNS, BenchmarkOptions
from esnet_jax.system import host_memory, xla_flags


def run(options: BenchmarkOptions) -> dict[str, Any]:
  """Run what `options` asks for, print its report, write its JSON; the result."""
  if options.suite:
    return _gpu_suite(options)
  if options.train:  # As `esnet_jax.main` does for training, before JAX starts its threads.
    host_memory.keep_freed_memory()
  if options.trace_dir:
    xla_flags.request_flags((profiling.TRACE_FLAG,))
  if options.train:
    result = run_train_benchmark(options)
    print(json.dumps({k: v for k, v in result.items() if k != 'trace_ops'}, indent=2))
  else:
    if options.runs < MIN_RUNS:
      print(
          f'warning: --runs {options.runs} < {MIN_RUNS}: tail percentiles are unreliable.',
          file=sys.stderr,
      )
    if options.engines:
      result = run_engines_benchmark(options, progress=_progress)
      print(report.format_engines_report(result))
    else:
      result = run_inference_benchmark(options)
      print(report.format_report(result))
  report.print_trace(result)
  if options.json:
    report.write_json(options.json, result)
  return result


def _progress(line: str) -> None:
  print(line, file=sys.stderr, flush=True)


def _gpu_suite(options: BenchmarkOptions) -> dict[str, Any]:
  result = gpu_report.run_gpu_report(smoke=options.smoke, progress=_progress)
  print(gpu_report.format_report(result))
  if options.json:
    report.write_json(options.json, result)
  if not result['ok']:
    sys.exit(f"error: GPU programs held CPU kernel calls: {', '.join(result['cpu_kernel_calls'])}")
  return result


def benchmark_from_config(config: Any, workdir: str | os.PathLike[str]) -> dict[str, Any]:
  """`--config.mode=benchmark` of `esnet_jax.main`: `config.benchmark` -> workdir/benchmark.json."""
  os.makedirs(workdir, exist_ok=True)
  return run(BenchmarkOptions.from_config(config, workdir))
