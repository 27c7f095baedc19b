"""`python -m esnet_jax.export`: trained weights to a deployable file (ONNX, StableHLO, INT8).

The work is `esnet_jax.deploy.export`; this module is its command line."""

from __future__ import annotations

import argparse
from typing import Sequence

from esnet_jax.deploy.export_options import FORMATS, QUANTIZE_CHOICES, ExportOptions
from esnet_jax.system.checked_options import WHICH
from esnet_jax.deploy.export import _report, run_options
from esnet_jax.system import runner


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.export',
      description='Export ESNet (normalised float32 NHWC images -> logits) to StableHLO '
      'or ONNX.',
  )
  parser.add_argument(
      '--checkpoint',
      required=True,
      help='pretrained:NAME, training workdir, orbax checkpoint, or .pth/.npz weights',
  )
  parser.add_argument('--which', default='latest', choices=WHICH)
  parser.add_argument('--format', required=True, choices=FORMATS)
  size = (
      "a multiple of 8; required for stablehlo; for onnx it fixes the graph's %s "
      '(default: symbolic, any multiple of 8)'
  )
  parser.add_argument('--height', type=int, default=None, help=size % 'height')
  parser.add_argument('--width', type=int, default=None, help=size % 'width')
  parser.add_argument('--out', required=True, help='output file')
  parser.add_argument(
      '--batch', type=int, default=None, help='fixed batch size (default: symbolic)'
  )
  parser.add_argument(
      '--no-fold-bn', action='store_true', help='keep the BatchNorm layers instead of folding them'
  )
  parser.add_argument(
      '--quantize',
      default='none',
      choices=QUANTIZE_CHOICES,
      help='int8: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 '
      'activations), onnx only',
  )
  parser.add_argument(
      '--calibration',
      default='',
      help='with --quantize int8: a dataset config (its train split, e.g. configs/camvid.py) '
      'or a folder of images to calibrate on',
  )
  parser.add_argument(
      '--calibration-images',
      type=int,
      default=32,
      help='with --quantize int8: how many images of --calibration, evenly spaced (default 32)',
  )
  return parser


@runner.command()
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  _report(run_options(ExportOptions.from_args(args)))
  return 0


if __name__ == '__main__':
  runner.run(main)
