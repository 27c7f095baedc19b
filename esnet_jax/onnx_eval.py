"""`python -m esnet_jax.onnx_eval`: the mIoU of an exported ONNX file on a dataset split.

The work is `esnet_jax.evaluation.onnx_eval`; this module is its command line."""

from __future__ import annotations

import argparse
import json
from typing import Sequence

from esnet_jax.evaluation.onnx_eval import evaluate
from esnet_jax.system import output_files, runner


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.onnx_eval',
      description='mIoU of an exported ONNX file on a dataset split, with ONNX Runtime.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument('--model', required=True, help='FILE.onnx written by esnet_jax.deploy.export')
  parser.add_argument('--config', required=True, help='a dataset config, e.g. configs/camvid.py')
  parser.add_argument('--split', default=None, help="the split (default: the config's eval split)")
  parser.add_argument(
      '--threads', type=int, default=None, help="ONNX Runtime's intra-op threads (its default)"
  )
  parser.add_argument('--json', default=None, help='also write the result to this file')
  return parser


@runner.command()
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.json:  # Before the evaluation, which may take minutes.
    output_files.check_output_file(
        args.json,
        '--json',
        [
            ('--model', args.model),
            ("--model's JSON", f'{args.model}.json'),
            ('--config', args.config),
        ],
    )
  result = evaluate(args.model, args.config, args.split, args.threads)
  width = max(len(name) for name in result['iou'])
  for name, value in result['iou'].items():
    print(f'{name:<{width}}  {100 * value:5.1f}')
  print(
      f"{result['dataset']} {result['split']} ({result['images']} images), {args.model}: "
      f"mIoU {100 * result['miou']:.2f}%, {result['ms_per_image']:.0f} ms per image"
  )
  if args.json:
    output_files.write_text(args.json, json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  runner.run(main)
