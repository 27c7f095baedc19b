"""`python -m esnet_jax.benchmark`: time ESNet inference, the train step, or a GPU.

  python -m esnet_jax.benchmark [--height 512 --width 1024 --batch 1] [--compare-torch]
      [--compare-onnxruntime] [--kernels auto|xla|native] [--json PATH] [--trace DIR]
  python -m esnet_jax.benchmark --train [--devices N] [--compare-jit] [--compare-torch]
  python -m esnet_jax.benchmark --engines [--sizes 512x1024,360x480] [--checkpoint W]
      [--threads N] [--runs R] [--json PATH]
  python -m esnet_jax.benchmark --suite gpu [--smoke] --json OUT

or `python -m esnet_jax.main --config configs/benchmark.py --workdir W`
(`config.benchmark.*` and `config.model.kernels`; the same `BenchmarkOptions`).

What is timed: one call of the compiled deployed network on device-resident,
already normalised float32 images (`esnet_jax.benchmarking.runners`); host and
device copies and pre/post-processing are timed apart. The results name the
machine: `cpu_model`, `cpu_isa` (the widest SIMD set the compiled kernels know)
and `native_kernels`, whether the package's compiled kernels are in the timed
program. Timings are medians; on shared machines repeat a measurement before
trusting it.

`--engines` times every engine of `esnet_jax.deploy.engines` (JAX, ONNX Runtime, OpenVINO) at
every precision it runs here (float32, bfloat16, INT8), side by side in one run, on
`pretrained:camvid` unless `--checkpoint` (`esnet_jax.benchmarking.engine_runs`): the
engine call alone, at each of `--sizes`, alternating call by call; the table marks the
fastest, `auto`'s choice per precision and what the tools run by default.
"""

from __future__ import annotations

import argparse
from typing import Any, Sequence

from esnet_jax.system import runner
from esnet_jax.model import implementations
from esnet_jax.benchmarking import suite
from esnet_jax.config.options import DEFAULT_WARMUP, DTYPES, MIN_RUNS, BenchmarkOptions


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
      help="'gpu': the whole GPU report (esnet_jax.benchmarking.gpu_report: device, "
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
      'the same devices (esnet_jax.training.mesh_step), alternating with pmap',
  )
  parser.add_argument(
      '--batch', type=int, default=None, help='images per call (default 1; 8 with --train)'
  )
  parser.add_argument(
      '--dtype',
      choices=DTYPES,
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
      help='time these weights (a workdir, checkpoint, weights file or pretrained:NAME) instead '
      f'of random ones; with --engines, {BenchmarkOptions.ENGINE_CHECKPOINT} when not given',
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
      'needs the export extra (onnx, onnxruntime)',
  )
  parser.add_argument(
      '--engines',
      action='store_true',
      help='time every engine (jax, onnxruntime, openvino) at every precision it runs here '
      '(float32, bfloat16, int8) side by side, at each of --sizes, on --checkpoint '
      f'(default {BenchmarkOptions.ENGINE_CHECKPOINT}, whose INT8 file ships)',
  )
  parser.add_argument(
      '--sizes',
      default=None,
      metavar='HxW[,HxW...]',
      help=f'with --engines: the input sizes (default {BenchmarkOptions.ENGINE_SIZES})',
  )
  parser.add_argument(
      '--threads',
      type=int,
      default=None,
      help="with --engines: ONNX Runtime's and OpenVINO's threads (default: theirs); "
      "JAX's are the CPUs this process may use",
  )
  parser.add_argument('--seed', type=int, default=0, help='seed of random weights and input')
  parser.add_argument(
      '--json', default=None, metavar='PATH', help='also write the results to this JSON file'
  )
  parser.add_argument(
      '--trace',
      dest='trace_dir',
      default=None,
      metavar='DIR',
      help='after timing, record a jax.profiler trace of 3 more JAX calls in '
      'DIR and print the operations that took the most time',
  )
  return parser


@runner.command(ValueError)
def main(argv: Sequence[str] | None = None) -> dict[str, Any] | int:
  """CLI entry point; returns the result dict (also printed, and written with --json), or
  an error's exit status after its one `error:` line."""
  return suite.run(BenchmarkOptions.from_args(build_parser().parse_args(argv)))


def run_main() -> int:
  """`main` as a command: the results are for callers; success is status 0."""
  result = main()
  return result if isinstance(result, int) else 0


if __name__ == '__main__':
  runner.run(run_main)
