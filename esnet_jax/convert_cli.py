"""`python -m esnet_jax.convert`: ESNet weights between the original PyTorch layout and orbax.

`--torch ESNet.pth --out DIR` writes an orbax checkpoint that
`esnet_jax.inference.Segmenter.from_checkpoint(DIR)` restores; `--checkpoint WORKDIR
--which best --out-torch esnet.npz` goes the other way (how the shipped
`esnet_jax/pretrained/*.npz` files are made).
"""

from __future__ import annotations

import argparse
import os
import sys

from esnet_jax import checkpointing, cli, convert, weights
from esnet_jax.errors import EsnetError


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
  try:
    if args.torch:
      variables = weights.load_torch_weights(args.torch)
      num_classes = convert.num_classes_of(variables)
      out = checkpointing.save_variables(
          args.out, variables, num_classes=num_classes, meta={'source': os.path.abspath(args.torch)}
      )
      print(f'Wrote ESNet({num_classes}) variables to {out}')
    else:
      loaded = weights.load(args.checkpoint, args.which)
      weights.save_torch_weights(loaded.variables, args.out_torch)
      print(f'Wrote the PyTorch state dict of {loaded.source} to {args.out_torch}')
  except (EsnetError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return getattr(e, 'exit_status', 2)
  return 0


if __name__ == '__main__':
  cli.run(main)
