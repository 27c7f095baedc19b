"""`python -m esnet_jax.demo`: serve (or `--build`) the browser demo, ESNet on the visitor's device.

  python -m esnet_jax.demo --checkpoint pretrained:camvid [--port 8000] [--host 127.0.0.1]
  python -m esnet_jax.demo --model camvid.int8.onnx            # an export of esnet_jax.export
  python -m esnet_jax.demo --checkpoint CKPT --build site/     # static files for any host

The site and its server are `esnet_jax.browser_demo`; this module is their command line.
"""

from __future__ import annotations

import argparse
from typing import Sequence

from esnet_jax.browser_demo import server, static_site
from esnet_jax.system import runner


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.demo',
      description="Serve (or --build) the browser demo: ESNet on the visitor's device.",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  weights = parser.add_mutually_exclusive_group(required=True)
  weights.add_argument(
      '--checkpoint', help='weights to export: pretrained:camvid, a workdir, a checkpoint, a .pth'
  )
  weights.add_argument(
      '--model', help='an ONNX file of esnet_jax.deploy.export (its .json beside it)'
  )
  parser.add_argument('--host', default='127.0.0.1', help='address to listen on')
  parser.add_argument('--port', type=int, default=8000, help='port, 0..65535 (0: any free one)')
  parser.add_argument(
      '--build',
      metavar='DIR',
      help="write the site to DIR and exit (the user's other files in DIR are kept)",
  )
  parser.add_argument(
      '--verbose', action='store_true', help='log every request, and each visitor who hangs up'
  )
  return parser


@runner.command()
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    static_site.check_port(args.port)
    with server.sigterm_raises() as disarm:
      if args.build is None:
        server.serve(args, disarm)
        return 0
      site = static_site.build_site(args.build, checkpoint=args.checkpoint, model=args.model)
  except server.Terminated:
    return server.TERMINATED_STATUS
  print(f"Wrote the demo site to {site}; serve it with the headers in this module's help.")
  return 0


if __name__ == '__main__':
  runner.run(main)
