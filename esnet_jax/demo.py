"""ESNet live in the browser: a page that segments an image, a video or the webcam on the
visitor's own device (onnxruntime-web: WebGPU, else WebAssembly with SIMD and threads).

  python -m esnet_jax.demo --checkpoint pretrained:camvid [--port 8000] [--host 127.0.0.1]
  python -m esnet_jax.demo --model camvid.int8.onnx            # an export of esnet_jax.export
  python -m esnet_jax.demo --checkpoint CKPT --build site/     # static files for any host

The first run needs the demo's npm packages: `npm ci --prefix esnet_jax/demo_web` (the
error says so). Serving exports the checkpoint's ONNX (H and W symbolic, so the page's
input size can change) into a temporary site and serves it until Ctrl-C; `--build`
writes the same site to a folder and exits. A static host must send
`Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy:
require-corp` for WebAssembly threads; without them the page runs on one thread.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from typing import Sequence

from esnet_jax import cli, demo_site
from esnet_jax.errors import EsnetError


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
  weights.add_argument('--model', help='an ONNX file of esnet_jax.export (its .json beside it)')
  parser.add_argument('--host', default='127.0.0.1', help='address to listen on')
  parser.add_argument('--port', type=int, default=8000, help='port (0: any free one)')
  parser.add_argument('--build', metavar='DIR', help='write the site to DIR and exit')
  parser.add_argument('--verbose', action='store_true', help='log every request')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    if args.build:
      site = demo_site.build_site(args.build, checkpoint=args.checkpoint, model=args.model)
      print(f"Wrote the demo site to {site}; serve it with the headers in this module's help.")
      return 0
    with tempfile.TemporaryDirectory(prefix='esnet_demo_') as tmp:
      site = demo_site.build_site(f'{tmp}/site', checkpoint=args.checkpoint, model=args.model)
      server = demo_site.serve(site, args.host, args.port, verbose=args.verbose)
      print(f'ESNet demo at {server.url} (Ctrl-C stops it)', flush=True)
      try:
        server.serve_forever()
      except KeyboardInterrupt:
        pass
      finally:
        server.server_close()
  except (EsnetError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return getattr(e, 'exit_status', 2)
  return 0


if __name__ == '__main__':
  cli.run(main)
