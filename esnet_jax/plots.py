"""`python -m esnet_jax.plots`: the training curves, confusion matrix and per-class IoU of a workdir.

The work is `esnet_jax.training.plots`; this module is its command line."""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from esnet_jax.system import runner
from esnet_jax.training.plots import write_plots


@runner.command(FileNotFoundError, KeyError, json.JSONDecodeError)
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.plots',
      description='Plot training curves, the confusion matrix and per-class IoU of a '
      'workdir into WORKDIR/plots/.',
  )
  parser.add_argument('--workdir', required=True)
  parser.add_argument(
      '--eval-json', help='evaluation JSON (default: the newest in ' 'WORKDIR/eval)'
  )
  args = parser.parse_args(argv)
  paths = write_plots(args.workdir, args.eval_json)
  for path in paths:
    print(f'Wrote {path}')
  return 0


if __name__ == '__main__':
  runner.run(main)
