"""`python -m esnet_jax.convert`: ESNet weights between the original PyTorch layout and orbax.

`--torch ESNet.pth --out DIR` writes an orbax checkpoint that
`esnet_jax.inference.segmenter.Segmenter.from_checkpoint(DIR)` restores; `--checkpoint WORKDIR
--which best --out-torch esnet.npz` goes the other way (how the shipped
`esnet_jax/weights/pretrained/*.npz` files are made).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from esnet_jax.weights import checkpoints, pretrained, resolver

from esnet_jax.model.esnet import num_classes_of
from esnet_jax.system import runner, output_files
from esnet_jax.errors import OutputError


def check_outputs(args: argparse.Namespace) -> None:
  """Refuses, before anything is read, an output that is the input or cannot be written.

  `--out` must be, or be able to become, a folder other than the `--torch` file;
  `--out-torch` a file other than what `--checkpoint` names (for `pretrained:NAME`,
  the shipped weights file).

  Raises:
    OutputError: naming the option, and the input where it is the input.
  """
  if args.torch:
    if output_files.resolved(args.out) == output_files.resolved(args.torch):
      raise OutputError(
          f'--out {args.out}: is --torch {args.torch}, which this command reads; refusing to '
          'overwrite it (choose another output folder).'
      )
    output_files.check_output_folder(args.out, '--out')
    return
  source = ('--checkpoint', args.checkpoint)
  if resolver.is_pretrained(args.checkpoint):
    name = args.checkpoint[len(resolver.PRETRAINED_PREFIX) :]
    source = (f"--checkpoint {args.checkpoint}'s file", pretrained.get(name).path)
  output_files.check_output_file(args.out_torch, '--out-torch', [source])
  if Path(args.out_torch).suffix.lower() not in resolver.TORCH_OUTPUT_SUFFIXES:
    raise OutputError(f'--out-torch {args.out_torch}: expected a .npz, .pth or .pt file name.')


@runner.command(FileNotFoundError, FileExistsError)
def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.convert',
      description='Convert ESNet weights between the original PyTorch layout and orbax. '
      'Either --torch FILE --out DIR, or --checkpoint SRC --out-torch FILE.',
  )
  parser.add_argument('--torch', help='PyTorch weights to read: .pth, .pt, .npz, .safetensors')
  parser.add_argument('--out', help='with --torch: output orbax checkpoint directory')
  parser.add_argument(
      '--checkpoint',
      help='weights to write in the PyTorch layout: a '
      'training workdir, orbax checkpoint, or pretrained:NAME',
  )
  parser.add_argument(
      '--which',
      default='latest',
      choices=('latest', 'best'),
      help="with --checkpoint: a workdir's latest or best checkpoint",
  )
  parser.add_argument('--out-torch', help='with --checkpoint: output .npz, .pth or .pt file')
  args = parser.parse_args(argv)
  if (
      bool(args.torch) == bool(args.checkpoint)
      or bool(args.torch) != bool(args.out)
      or (bool(args.checkpoint) != bool(args.out_torch))
  ):
    parser.error('give either --torch FILE --out DIR, or --checkpoint SRC --out-torch FILE')
  check_outputs(args)
  if args.torch:
    variables = resolver.load_torch_weights(args.torch)
    num_classes = num_classes_of(variables)
    out = checkpoints.save_variables(
        args.out, variables, num_classes=num_classes, meta={'source': os.path.abspath(args.torch)}
    )
    print(f'Wrote ESNet({num_classes}) variables to {out}')
  else:
    loaded = resolver.load(args.checkpoint, args.which)
    resolver.save_torch_weights(loaded.variables, args.out_torch)
    print(f'Wrote the PyTorch state dict of {loaded.source} to {args.out_torch}')
  return 0


if __name__ == '__main__':
  runner.run(main)
