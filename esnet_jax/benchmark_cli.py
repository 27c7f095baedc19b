"""`python -m esnet_jax.benchmark`: the command line of `esnet_jax.benchmark`.

Parses the flags, refuses the ones that do not go together, runs the inference
benchmark, the train step (`--train`) or the GPU report (`--suite gpu`,
`esnet_jax.gpu_report`), prints the report and writes `--json`. Also
`--config.mode=benchmark` of `esnet_jax.main` (`benchmark_from_config`), which
reads the same settings from `config.benchmark` and `config.model.kernels`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Mapping, Sequence

from esnet_jax import checkpointing, gpu_report, host_memory, implementations, profiling, xla_flags
from esnet_jax.benchmark import (
    DTYPES,
    MIN_RUNS,
    format_report,
    run_inference_benchmark,
    run_train_benchmark,
)
from esnet_jax.errors import WeightsError

# Untimed calls after compiling, unless --warmup (or config.benchmark.warmup) says.
DEFAULT_WARMUP = 5


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.benchmark',
      description='Time compiled ESNet inference (optionally beside the PyTorch original). '
      'Only the network call is in the timed region; host<->device copies '
      'and pre/post-processing are timed and reported separately.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument('--height', type=int, default=512, help='input height (multiple of 8)')
  parser.add_argument('--width', type=int, default=1024, help='input width (multiple of 8)')
  parser.add_argument(
      '--suite',
      choices=('gpu',),
      default=None,
      help="'gpu': the whole GPU report (esnet_jax.gpu_report: device, "
      'driver, CUDA, inference at 1024x512 and 2048x1024, the pmapped '
      'train step, float32 and bfloat16, compile times, peak memory); '
      'the size options do not apply',
  )
  parser.add_argument(
      '--smoke',
      action='store_true',
      help='with --suite gpu: tiny sizes, on any backend (a check that the '
      'report runs, not a measurement)',
  )
  parser.add_argument(
      '--train', action='store_true', help='time the training step (images/s) instead of inference'
  )
  parser.add_argument(
      '--devices',
      type=int,
      default=1,
      help='with --train: pmap the step over this many local devices ' '(--batch images each)',
  )
  parser.add_argument(
      '--compare-jit',
      action='store_true',
      help='with --train: also time the same step under jit over a mesh of '
      'the same devices (esnet_jax.mesh_step), alternating with pmap',
  )
  parser.add_argument(
      '--batch', type=int, default=None, help='images per call (default 1; 8 with --train)'
  )
  parser.add_argument(
      '--dtype',
      choices=tuple(DTYPES),
      default='float32',
      help='compute dtype (parameters stay float32)',
  )
  parser.add_argument(
      '--runs',
      type=int,
      default=MIN_RUNS,
      help=f'timed calls; fewer than {MIN_RUNS} is allowed (for smoke tests) '
      'but prints a warning, since tail percentiles become unreliable',
  )
  parser.add_argument(
      '--warmup', type=int, default=DEFAULT_WARMUP, help='untimed calls after compiling'
  )
  parser.add_argument(
      '--fold-bn',
      action=argparse.BooleanOptionalAction,
      default=True,
      help='fold BatchNorm into the convolutions, as Segmenter does',
  )
  parser.add_argument(
      '--kernels',
      choices=implementations.CHOICES,
      default='auto',
      help='who computes the network: the compiled CPU kernels '
      "(esnet_jax.kernels) where they build ('auto', as Segmenter and "
      "training do), XLA only ('xla'), or the kernels or an error "
      "('native')",
  )
  parser.add_argument(
      '--num-classes',
      type=int,
      default=None,
      help='classes of the random-weight network (19 when not given); '
      "with --checkpoint, must match the checkpoint's",
  )
  parser.add_argument(
      '--checkpoint',
      default=None,
      help='time these weights (training workdir or orbax checkpoint) ' 'instead of random ones',
  )
  parser.add_argument(
      '--compare-torch',
      action='store_true',
      help='also time the PyTorch original (NCHW and channels_last, eager) '
      'with the same weights, alternating with JAX; needs torch',
  )
  parser.add_argument(
      '--compare-onnxruntime',
      action='store_true',
      help="also time ONNX Runtime (CPU, JAX's thread count) on the ONNX "
      'export of the same weights, alternating with JAX; float32 only; '
      'needs the export extra (onnx, onnxruntime, onnxscript, torch)',
  )
  parser.add_argument('--seed', type=int, default=0, help='seed of random weights and input')
  parser.add_argument(
      '--json', default=None, metavar='PATH', help='also write the results to this JSON file'
  )
  parser.add_argument(
      '--trace',
      default=None,
      metavar='DIR',
      help='after timing, record a jax.profiler trace of 3 more JAX calls in '
      'DIR and print the operations that took the most time',
  )
  return parser


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
  """CLI entry point; returns the result dict (also printed, and written with --json)."""
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.smoke and not args.suite:
    parser.error('--smoke belongs to --suite gpu')
  if args.suite and args.train:
    parser.error('--suite gpu times the train step itself; drop --train')
  if not args.train and (args.devices != 1 or args.compare_jit):
    parser.error('--devices and --compare-jit time the train step: add --train')
  if args.train and args.compare_onnxruntime:
    parser.error('--compare-onnxruntime times inference only, not --train')
  if args.suite:
    return _gpu_suite(args)
  if args.train:  # As `esnet_jax.main` does for training, before JAX starts its threads.
    host_memory.keep_freed_memory()
  if args.trace:
    xla_flags.request_flags((profiling.TRACE_FLAG,))
  if args.train:
    try:
      result = run_train_benchmark(
          height=args.height,
          width=args.width,
          batch=args.batch or 8,
          dtype=args.dtype,
          devices=args.devices,
          runs=args.runs,
          warmup=args.warmup,
          compare_torch=args.compare_torch,
          compare_jit=args.compare_jit,
          seed=args.seed,
          trace_dir=args.trace,
          kernels=args.kernels,
      )
    except ValueError as e:
      sys.exit(f'error: {e}')
    print(json.dumps({k: v for k, v in result.items() if k != 'trace_ops'}, indent=2))
    _print_trace(result)
    if args.json:
      _write_json(args.json, result)
    return result
  if args.runs < MIN_RUNS:
    print(
        f'warning: --runs {args.runs} < {MIN_RUNS}: tail percentiles are unreliable.',
        file=sys.stderr,
    )
  try:
    result = run_inference_benchmark(
        height=args.height,
        width=args.width,
        batch=args.batch or 1,
        dtype=args.dtype,
        runs=args.runs,
        warmup=args.warmup,
        fold_bn=args.fold_bn,
        num_classes=args.num_classes,
        checkpoint=args.checkpoint,
        compare_torch=args.compare_torch,
        compare_onnxruntime=args.compare_onnxruntime,
        seed=args.seed,
        trace_dir=args.trace,
        kernels=args.kernels,
    )
  except (ImportError, WeightsError) as e:  # A missing package, unreadable weights: exit 2.
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except (ValueError, checkpointing.CheckpointNotFoundError) as e:
    sys.exit(f'error: {e}')
  print(format_report(result))
  _print_trace(result)
  if args.json:
    _write_json(args.json, result)
  return result


def _write_json(path: str | os.PathLike[str], result: Mapping[str, Any]) -> None:
  with open(path, 'w') as f:
    json.dump(result, f, indent=2)
    f.write('\n')


def _gpu_suite(args: argparse.Namespace) -> dict[str, Any]:
  try:
    report = gpu_report.run_gpu_report(smoke=args.smoke)
  except ValueError as e:
    sys.exit(f'error: {e}')
  print(gpu_report.format_report(report))
  if args.json:
    _write_json(args.json, report)
  if not report['ok']:
    sys.exit(f"error: GPU programs held CPU kernel calls: {', '.join(report['cpu_kernel_calls'])}")
  return report


def _print_trace(result: Mapping[str, Any]) -> None:
  if 'trace_ops' in result:
    print(f"\nprofile of 3 more JAX calls ({result['trace_file']}):")
    print(profiling.format_op_totals(result['trace_ops'], result['trace_ms_per_call']))


def benchmark_from_config(config: Any, workdir: str | os.PathLike[str]) -> dict[str, Any]:
  """`--config.mode=benchmark` of `esnet_jax.main`: `config.benchmark` -> workdir/benchmark.json."""
  b = config.benchmark
  result = run_inference_benchmark(
      height=b.height,
      width=b.width,
      batch=b.batch,
      dtype=b.dtype,
      runs=b.runs,
      warmup=b.get('warmup', DEFAULT_WARMUP),
      kernels=config.model.kernels,
      fold_bn=b.fold_bn,
      compare_torch=b.compare_torch,
      compare_onnxruntime=b.get('compare_onnxruntime', False),
      checkpoint=b.checkpoint or None,
      num_classes=b.num_classes or None,
  )
  print(format_report(result))
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, 'benchmark.json'), result)
  return result


def run_main() -> int:
  """`main` as a command: the results are for callers; success is status 0."""
  main()
  return 0
