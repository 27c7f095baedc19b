"""The browser demo's site: its files (page, onnxruntime-web, the exported model) and its server.

Why a site of plain files: the page runs the model on the visitor's own device with
onnxruntime-web, so any static host can serve it (`python -m esnet_jax.demo --build DIR`);
the package's own server (Python's `http.server`, no new dependency) adds the
cross-origin-isolation headers that WebAssembly threads need (SharedArrayBuffer) and the
MIME types of `.mjs` and `.wasm`.

Layout: `index.html`, `demo.js`, `style.css` (from `esnet_jax/demo_web/`), `ort/` (the
onnxruntime-web build the page imports: its WebGPU bundle, which also runs WebAssembly),
`model/esnet.onnx` with `model/esnet.onnx.json` (`esnet_jax.export`'s contract: mean,
std, class names, colours), and `.esnet-demo`, which marks the folder as a demo site so
that a rebuild may replace it and nothing else is overwritten.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from esnet_jax.errors import DemoError

WEB = Path(__file__).parent / 'demo_web'
NODE_MODULES = WEB / 'node_modules'
ORT_DIST = NODE_MODULES / 'onnxruntime-web' / 'dist'
# The bundle demo.js imports, and the WebAssembly build it loads (WebGPU and CPU in one).
ORT_FILES = (
    'ort.webgpu.min.mjs',
    'ort-wasm-simd-threaded.asyncify.mjs',
    'ort-wasm-simd-threaded.asyncify.wasm',
)
PAGE_FILES = ('index.html', 'demo.js', 'style.css')
MARKER = '.esnet-demo'


def npm_command() -> str:
  """What installs the demo's pinned npm packages (onnxruntime-web, playwright-core)."""
  return f'npm ci --prefix {WEB}'


def check_packages() -> None:
  """Raise DemoError (what to run) unless onnxruntime-web is installed beside the page."""
  missing = [name for name in ORT_FILES if not (ORT_DIST / name).is_file()]
  if missing:
    node = '' if shutil.which('npm') else ' (npm comes with Node.js: apt install nodejs npm)'
    raise DemoError(
        f'the browser demo needs onnxruntime-web, installed with npm from the pinned '
        f'lock file: run `{npm_command()}`{node}'
    )


def _prepare_out(out: Path) -> None:
  if out.exists() and not out.is_dir():
    raise DemoError(f'--build {out}: expected a folder, not a file')
  if out.is_dir() and any(out.iterdir()) and not (out / MARKER).exists():
    raise DemoError(
        f'--build {out}: expected an empty folder or an earlier demo site (it holds other '
        'files, which the demo will not overwrite)'
    )
  if out.is_dir():
    shutil.rmtree(out)
  out.mkdir(parents=True)


def _model(out: Path, checkpoint: str | None, model: str | None) -> dict[str, Any]:
  from esnet_jax import export, options  # pylint: disable=g-import-not-at-top

  target = out / 'model' / 'esnet.onnx'
  target.parent.mkdir()
  if model is not None:
    source, meta_source = Path(model), Path(f'{model}.json')
    if not source.is_file() or not meta_source.is_file():
      raise DemoError(
          f'--model {model}: expected an ONNX file of esnet_jax.export with its '
          f'{meta_source.name} beside it'
      )
    shutil.copyfile(source, target)
    meta = json.loads(meta_source.read_text())
  else:
    settings = options.ExportOptions(
        checkpoint=checkpoint, format='onnx', height=None, width=None, out=str(target)
    )
    _, meta_path = export.run_options(settings)
    meta = json.loads(meta_path.read_text())
  for key in ('class_names', 'colours', 'mean', 'std'):
    if key not in meta:
      raise DemoError(
          f'{model or checkpoint}: its export JSON has no {key!r}, which the page needs'
      )
  meta.pop('source', None)  # A path on the building machine: not for a published site.
  (out / 'model' / 'esnet.onnx.json').write_text(json.dumps(meta, indent=1) + '\n')
  return meta


def build_site(
    out: str | os.PathLike[str], *, checkpoint: str | None = None, model: str | None = None
) -> Path:
  """Writes the demo site for CHECKPOINT's weights (exported here) or an exported MODEL to OUT.

  Raises:
    DemoError: onnxruntime-web is not installed, OUT holds other files, MODEL is not an
      export; export errors (a checkpoint that cannot be read) propagate as they are.
  """
  if (checkpoint is None) == (model is None):
    raise DemoError('expected one of --checkpoint and --model')
  check_packages()
  out = Path(out)
  _prepare_out(out)
  (out / MARKER).write_text('esnet-jax browser demo: python -m esnet_jax.demo --build\n')
  for name in PAGE_FILES:
    shutil.copyfile(WEB / name, out / name)
  (out / 'ort').mkdir()
  for name in ORT_FILES:
    shutil.copyfile(ORT_DIST / name, out / 'ort' / name)
  _model(out, checkpoint, model)
  return out


class _Handler(http.server.SimpleHTTPRequestHandler):
  """Static files with the headers WebAssembly threads need, and no caching."""

  extensions_map = {
      **http.server.SimpleHTTPRequestHandler.extensions_map,
      '.mjs': 'text/javascript',
      '.js': 'text/javascript',
      '.wasm': 'application/wasm',
      '.onnx': 'application/octet-stream',
      '.json': 'application/json',
  }

  def end_headers(self) -> None:
    self.send_header('Cross-Origin-Opener-Policy', 'same-origin')
    self.send_header('Cross-Origin-Embedder-Policy', 'require-corp')
    self.send_header('Cross-Origin-Resource-Policy', 'same-origin')
    self.send_header('Cache-Control', 'no-cache')
    super().end_headers()

  def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
    if self.server.verbose:
      super().log_message(format, *args)


class DemoServer(http.server.ThreadingHTTPServer):
  """The site's server; `url` is its address, `start()` serves in a background thread."""

  daemon_threads = True

  def __init__(self, site: Path, host: str, port: int, verbose: bool = False):
    try:
      super().__init__((host, port), functools.partial(_Handler, directory=str(site)))
    except OSError as e:
      raise DemoError(
          f'--host {host} --port {port}: cannot listen there ({e.strerror}); pass another '
          '--port (0 picks a free one)'
      ) from e
    self.verbose = verbose
    self.url = f'http://{host}:{self.server_address[1]}/'

  def start(self) -> threading.Thread:
    thread = threading.Thread(target=self.serve_forever, daemon=True)
    thread.start()
    return thread


def serve(
    site: str | os.PathLike[str], host: str = '127.0.0.1', port: int = 8000, **kw
) -> DemoServer:
  """A DemoServer for SITE (not yet serving)."""
  return DemoServer(Path(site), host, port, **kw)
