"""ESNet live in the browser: a page that segments an image, a video or the webcam on the
visitor's own device (onnxruntime-web: WebGPU, else WebAssembly with SIMD and threads).

  python -m esnet_jax.demo --checkpoint pretrained:camvid [--port 8000] [--host 127.0.0.1]
  python -m esnet_jax.demo --model camvid.int8.onnx            # an export of esnet_jax.export
  python -m esnet_jax.demo --checkpoint CKPT --build site/     # static files for any host

The first run needs the demo's npm packages: `npm ci --prefix esnet_jax/demo_web` (the
error says so). Serving listens first (a port in use fails before the export), then
exports the checkpoint's ONNX (H and W symbolic, so the page's input size can change)
into a temporary site and serves it until Ctrl-C or SIGTERM, either of which removes the
temporary site and exits 0 (stopping a server as asked is its success); a SIGTERM before
serving began removes it too and exits 143. `--build` writes the same site to a folder and
exits; a rebuild keeps the user's own files there (`_headers`, `CNAME`) and a failed one
leaves the earlier site as it was (`esnet_jax.demo_site` says how). A static host must
send `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy:
require-corp` for WebAssembly threads; without them the page runs on one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator, Sequence

from esnet_jax import cli, demo_site
from esnet_jax.errors import EsnetError

# The status of a run ended by SIGTERM before it finished its work (128 + SIGTERM).
TERMINATED_STATUS = 143


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


class _Terminated(BaseException):
  """SIGTERM, raised in the main thread so that `with` blocks (a temporary site) clean up.

  A BaseException, as KeyboardInterrupt is: no `except Exception` on the way swallows it.
  """


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[Callable[[], None]]:
  """Within, the first SIGTERM raises _Terminated; later ones, and any after the yielded
  `disarm()`, are ignored so that a cleanup under way finishes. Outside the main thread
  (where Python runs signal handlers) it does nothing."""
  if threading.current_thread() is not threading.main_thread():
    yield lambda: None
    return
  armed = [True]

  def on_sigterm(signum: int, frame: object) -> None:
    del signum, frame
    if armed[0]:
      armed[0] = False
      raise _Terminated

  def disarm() -> None:
    armed[0] = False

  previous = signal.signal(signal.SIGTERM, on_sigterm)
  try:
    yield disarm
  finally:
    signal.signal(signal.SIGTERM, previous)


def _serve(args: argparse.Namespace, disarm: Callable[[], None]) -> None:
  """Listens, builds the site in a temporary folder, serves it until Ctrl-C or SIGTERM."""
  with tempfile.TemporaryDirectory(prefix='esnet_demo_') as tmp:
    site = Path(tmp) / 'site'
    server = demo_site.serve(site, args.host, args.port, verbose=args.verbose)
    try:
      demo_site.build_site(site, checkpoint=args.checkpoint, model=args.model)
      print(f'ESNet demo at {server.url} (Ctrl-C stops it)', flush=True)
      try:
        server.serve_forever()
      except (KeyboardInterrupt, _Terminated):
        pass
      finally:
        disarm()
    finally:
      server.server_close()


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    demo_site.check_port(args.port)
    with _sigterm_raises() as disarm:
      if args.build is None:
        _serve(args, disarm)
        return 0
      site = demo_site.build_site(args.build, checkpoint=args.checkpoint, model=args.model)
  except _Terminated:
    return TERMINATED_STATUS
  except (EsnetError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return getattr(e, 'exit_status', 2)
  print(f"Wrote the demo site to {site}; serve it with the headers in this module's help.")
  return 0


if __name__ == '__main__':
  cli.run(main)
