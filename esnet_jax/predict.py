"""`python -m esnet_jax.predict`: segment images, folders, globs, videos and live sources.

The work is `esnet_jax.inference.segmenter.predict`; this module is its command line."""

from __future__ import annotations

import argparse
from typing import Sequence

from esnet_jax.system import runner, output_files
from esnet_jax.model import implementations
from esnet_jax.config import options
from esnet_jax.deploy.engines import ENGINE_CHOICES, PRECISIONS
from esnet_jax.inference.predict import run_options, write_demo_image
from esnet_jax.config.options import PALETTES, PredictOptions


def _parse_scales(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(s) for s in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.predict',
      description='Segment images, folders, globs and videos with a trained ESNet.',
  )
  parser.add_argument(
      '--checkpoint',
      help='pretrained:camvid (shipped weights), a '
      'training workdir, orbax checkpoint, or .pth/.pt/.npz/.safetensors '
      'PyTorch weights',
  )
  parser.add_argument(
      '--which',
      default='latest',
      choices=('latest', 'best'),
      help="a workdir's latest or best checkpoint",
  )
  parser.add_argument(
      '--input',
      nargs='+',
      help='image or video files, folders, globs; live sources: a camera (/dev/video0) or a '
      'stream URL (rtsp://, rtmp://, http(s)://, udp://, tcp://)',
  )
  parser.add_argument('--output', help='output folder')
  parser.add_argument(
      '--alpha', type=float, default=0.5, help='opacity of the class colours in the overlay (0..1)'
  )
  parser.add_argument(
      '--batch-size', type=int, default=4, help='images of the same size segmented together'
  )
  parser.add_argument(
      '--max-frames',
      type=int,
      default=None,
      metavar='N',
      help='stop each video after N frames (a live source runs until Ctrl-C otherwise)',
  )
  parser.add_argument(
      '--duration',
      type=float,
      default=None,
      metavar='S',
      help='stop each video after S seconds of it',
  )
  parser.add_argument(
      '--flip', action='store_true', help='test-time augmentation: average with the mirrored image'
  )
  parser.add_argument(
      '--scales',
      type=_parse_scales,
      default=(1.0,),
      help='test-time augmentation: comma-separated scales, e.g. 0.75,1,1.25',
  )
  parser.add_argument(
      '--dtype',
      choices=options.DTYPES,
      default='float32',
      help='compute dtype (as --precision, which supersedes it)',
  )
  parser.add_argument(
      '--engine',
      choices=ENGINE_CHOICES,
      default='auto',
      help='what runs the network (esnet_jax.deploy.engines): auto = the fastest installed for '
      'the precision (OpenVINO, then ONNX Runtime, then JAX)',
  )
  parser.add_argument(
      '--precision',
      choices=PRECISIONS,
      default=None,
      help='float32 (default), bfloat16 or int8; bf16 and INT8 change outputs slightly',
  )
  parser.add_argument(
      '--threads', type=int, default=None, help="ONNX Runtime's or OpenVINO's threads"
  )
  parser.add_argument(
      '--calibration',
      default='',
      help='with --precision int8 for weights that ship no INT8 file: a dataset config or '
      'a folder of images to calibrate on (once; the file is cached)',
  )
  parser.add_argument(
      '--kernels',
      choices=implementations.CHOICES,
      default='auto',
      help='who computes the network (esnet_jax.model.implementations): the '
      "compiled CPU kernels where they build ('auto'), XLA only, or the "
      "kernels or an error ('native')",
  )
  parser.add_argument(
      '--palette',
      choices=PALETTES,
      default='checkpoint',
      help="colours: the checkpoint's own, or a dataset's (class counts " 'must agree)',
  )
  parser.add_argument(
      '--cityscapes-submission',
      action='store_true',
      help='write only Cityscapes labelIds PNGs for the benchmark server',
  )
  parser.add_argument(
      '--demo-image',
      metavar='PNG',
      help='just write a generated street scene to PNG (for trying predict)',
  )
  parser.add_argument(
      '--demo-size',
      type=int,
      nargs=2,
      default=(256, 512),
      metavar=('H', 'W'),
      help='size of the --demo-image',
  )
  parser.add_argument('--demo-seed', type=int, default=0, help='scene of the --demo-image')
  return parser


@runner.command()
def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if not args.demo_image:
    missing = [f'--{name}' for name in ('checkpoint', 'input', 'output') if not getattr(args, name)]
    if missing:
      parser.error(f'the following arguments are required: {", ".join(missing)}')
  if args.demo_image:
    output_files.check_output_file(args.demo_image, '--demo-image')
    print(f'Wrote {write_demo_image(args.demo_image, tuple(args.demo_size), args.demo_seed)}')
    return 0
  report = run_options(PredictOptions.from_args(args))
  return 1 if report.failed else 0


if __name__ == '__main__':
  runner.run(main)
