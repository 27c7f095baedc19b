"""`python -m esnet_jax.layer_timing`: time each block of ESNet in JAX beside PyTorch.

The work is `esnet_jax.benchmarking.layer_timing`; this module is its command line."""

from __future__ import annotations

import argparse
from typing import Sequence

from esnet_jax.benchmarking import report
from esnet_jax.benchmarking.layer_timing import format_table, run_layer_timing
from esnet_jax.model import implementations
from esnet_jax.system import runner


@runner.command(ValueError)
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.layer_timing',
      description='Median latency of each ESNet block in JAX (and in the PyTorch original).',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument('--height', type=int, default=512)
  parser.add_argument('--width', type=int, default=1024)
  parser.add_argument('--batch', type=int, default=1)
  parser.add_argument('--runs', type=int, default=20, help='timed rounds')
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--compare-torch', action='store_true')
  parser.add_argument(
      '--kernels',
      choices=implementations.CHOICES,
      default='auto',
      help='who computes the blocks (esnet_jax.model.implementations)',
  )
  parser.add_argument('--json', metavar='PATH', help='also write the result as JSON')
  args = parser.parse_args(argv)
  settings = ('height', 'width', 'batch', 'runs', 'warmup', 'compare_torch', 'kernels')
  result = run_layer_timing(**{name: getattr(args, name) for name in settings})
  print(format_table(result))
  if args.json:
    report.write_json(args.json, result)
  return 0


if __name__ == '__main__':
  runner.run(main)
