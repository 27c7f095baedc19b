"""ESNet live in the browser: a page that segments an image, a video or the webcam on the
visitor's own device (onnxruntime-web: WebGPU, else WebAssembly with SIMD and threads).

  python -m esnet_jax.demo --checkpoint pretrained:camvid [--port 8000] [--host 127.0.0.1]
  python -m esnet_jax.demo --model camvid.int8.onnx            # an export of esnet_jax.deploy.export
  python -m esnet_jax.demo --checkpoint CKPT --build site/     # static files for any host

The first run needs the demo's npm packages: `npm ci --prefix esnet_jax/browser_demo/web` (the
error says so). Serving listens first (a port in use fails before the export), then
exports the checkpoint's ONNX (H and W symbolic, so the page's input size can change)
into a temporary site and serves it until Ctrl-C or SIGTERM, either of which removes the
temporary site and exits 0 (stopping a server as asked is its success); a SIGTERM before
serving began removes it too and exits 143. `--build` writes the same site to a folder and
exits; a rebuild keeps the user's own files there (`_headers`, `CNAME`) and a failed one
leaves the earlier site as it was (`esnet_jax.browser_demo.static_site` says how). A static host must
send `Cross-Origin-Opener-Policy: same-origin` and `Cross-Origin-Embedder-Policy:
require-corp` for WebAssembly threads; without them the page runs on one thread.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import tempfile
import threading
from pathlib import Path
from typing import Callable, Iterator

from esnet_jax.browser_demo import static_site

# The status of a run ended by SIGTERM before it finished its work (128 + SIGTERM).
TERMINATED_STATUS = 143


class Terminated(BaseException):
  """SIGTERM, raised in the main thread so that `with` blocks (a temporary site) clean up.

  A BaseException, as KeyboardInterrupt is: no `except Exception` on the way swallows it.
  """


@contextlib.contextmanager
def sigterm_raises() -> Iterator[Callable[[], None]]:
  """Within, the first SIGTERM raises Terminated; later ones, and any after the yielded
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
      raise Terminated

  def disarm() -> None:
    armed[0] = False

  previous = signal.signal(signal.SIGTERM, on_sigterm)
  try:
    yield disarm
  finally:
    signal.signal(signal.SIGTERM, previous)


def serve(args: argparse.Namespace, disarm: Callable[[], None]) -> None:
  """Listens, builds the site in a temporary folder, serves it until Ctrl-C or SIGTERM."""
  with tempfile.TemporaryDirectory(prefix='esnet_demo_') as tmp:
    site = Path(tmp) / 'site'
    server = static_site.serve(site, args.host, args.port, verbose=args.verbose)
    try:
      static_site.build_site(site, checkpoint=args.checkpoint, model=args.model)
      print(f'ESNet demo at {server.url} (Ctrl-C stops it)', flush=True)
      try:
        server.serve_forever()
      except (KeyboardInterrupt, Terminated):
        pass
      finally:
        disarm()
    finally:
      server.server_close()
