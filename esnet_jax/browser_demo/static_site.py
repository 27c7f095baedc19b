"""The browser demo's site: its files (page, onnxruntime-web, the exported model) and its server.

Why a site of plain files: the page runs the model on the visitor's own device with
onnxruntime-web, so any static host can serve it (`python -m esnet_jax.demo --build DIR`);
the package's own server (Python's `http.server`, no new dependency) adds the
cross-origin-isolation headers that WebAssembly threads need (SharedArrayBuffer) and the
MIME types of `.mjs` and `.wasm`; it lists no folders (a folder without `index.html` is
404, as on a static host) and is quiet when a visitor hangs up mid-file.

Layout: `index.html`, `demo.js`, `style.css` (from `esnet_jax/browser_demo/web/`), `ort/` (the
onnxruntime-web build the page imports: its WebGPU bundle, which also runs WebAssembly),
`model/esnet.onnx` with `model/esnet.onnx.json` (`esnet_jax.deploy.export`'s contract: mean,
std, class names, colours), and `.esnet-demo`, the marker: JSON whose `files` lists the
paths (relative, `/`-separated) this builder wrote.

Rebuilding a folder, and why so: a site folder also holds the user's own files (`_headers`
with the COOP/COEP headers a static host needs, `CNAME`, notes), and a rebuild must never
lose them nor break the earlier site when it fails (a mistyped `--model`, a checkpoint that
cannot be read). So:

- `--build DIR` is a folder name: an empty one, a file, or a path under a file is refused.
  A symbolic link to a folder is followed (the link stays; its target is the site folder,
  with the same rules); a link to nothing is refused.
- DIR must be missing, empty, or hold a marker; a non-empty folder without one is refused,
  untouched.
- The new site is written whole into a fresh folder beside DIR (`.DIR.partial-XXXXXXXX`,
  on DIR's filesystem; inside DIR where DIR is a mount point), and only once everything
  succeeded does it replace anything: a missing DIR is that folder renamed; an existing DIR
  keeps its identity and gets each new file by an atomic rename. Any failure before that
  removes the temporary folder and leaves DIR exactly as it was.
- In an existing DIR only files the marker lists are replaced, and those it lists that the
  new build no longer writes are removed; every other file, at any depth, is kept byte for
  byte. A path the new build writes that holds a file the marker does not list (or a folder
  or link where the site needs a folder) is refused, named, before any export work.
- A marker without a readable list (an earlier version's plain-text one, or an edited one)
  claims the builder's layout above, no more; listed paths outside DIR are ignored.
- While the files are renamed into DIR its marker lists the old and the new files, so a
  rebuild interrupted there still knows every file it wrote.
"""

from __future__ import annotations

import functools
import http
import http.server
import json
import os
import shutil
import sys
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from esnet_jax.deploy import onnx_contract
from esnet_jax.system import output_files
from esnet_jax.errors import DemoError, OptionError

WEB = Path(__file__).parent / 'web'
NODE_MODULES = WEB / 'node_modules'
ORT_DIST = NODE_MODULES / 'onnxruntime-web' / 'dist'
# The bundle demo.js imports, and the WebAssembly build it loads (WebGPU and CPU in one).
ORT_FILES = (
    'ort.webgpu.min.mjs',
    'ort-wasm-simd-threaded.asyncify.mjs',
    'ort-wasm-simd-threaded.asyncify.wasm',
)
PAGE_FILES = ('index.html', 'demo.js', 'style.css')
MODEL_FILES = ('model/esnet.onnx', 'model/esnet.onnx.json')
# Every file a build writes besides the marker, relative to the site folder.
SITE_FILES = (*PAGE_FILES, *(f'ort/{name}' for name in ORT_FILES), *MODEL_FILES)
MARKER = '.esnet-demo'
_MARKER_TITLE = 'esnet-jax browser demo: python -m esnet_jax.demo --build'


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


def _target(out: str | os.PathLike[str]) -> Path:
  """OUT checked as a folder name, with symbolic links resolved: the folder to write."""
  if os.fspath(out) and os.path.islink(out) and not os.path.exists(out):
    raise DemoError(
        f'--build {out}: is a symbolic link to {os.readlink(out)}, which leads to nothing '
        '(missing, or a loop); expected a folder or a link to one'
    )
  return output_files.resolved(output_files.check_output_folder(out, '--build'))


def _listed(text: str) -> set[str] | None:
  """The paths a marker's JSON lists, those inside the site only; None if it lists none."""
  try:
    files = json.loads(text).get('files')
  except (ValueError, AttributeError):
    return None
  if not isinstance(files, list):
    return None
  inside = set()
  for name in files:
    if not isinstance(name, str) or '\\' in name:
      continue
    path = PurePosixPath(name)
    if not path.is_absolute() and '..' not in path.parts and str(path) == name:
      inside.add(name)
  inside.discard(MARKER)
  return inside


def _earlier_files(out: Path, target: Path, staging: Path | None = None) -> set[str]:
  """The files an earlier build wrote in TARGET (none if it is missing or empty but for STAGING).

  Raises:
    DemoError: TARGET holds files but no marker.
  """
  if not target.is_dir() or all(entry == staging for entry in target.iterdir()):
    return set()
  marker = target / MARKER
  if not marker.is_file() or marker.is_symlink():
    raise DemoError(
        f'--build {out}: expected an empty folder or an earlier demo site (it holds other '
        f'files and no {MARKER}, and the demo will not overwrite them)'
    )
  try:
    listed = _listed(marker.read_text())
  except (OSError, UnicodeDecodeError):
    listed = None
  return set(SITE_FILES) if listed is None else listed


def _check_paths(out: Path, target: Path, earlier: set[str]) -> None:
  """Refuses (naming it) anything in TARGET where the new site would write that is not its own."""
  for name in SITE_FILES:
    path = PurePosixPath(name)
    for folder in reversed(path.parents[:-1]):
      there = target / folder
      if os.path.lexists(there) and (there.is_symlink() or not there.is_dir()):
        raise DemoError(
            f'--build {out}: {Path(out, folder)} is not a folder, and the site needs one '
            'there; refusing to replace it (move it away, or build elsewhere)'
        )
    there = target / path
    if os.path.lexists(there) and (
        name not in earlier or there.is_dir() and not there.is_symlink()
    ):
      raise DemoError(
          f'--build {out}: {Path(out, path)} is not a file an earlier build wrote (its '
          f'{MARKER} does not list it); refusing to overwrite it (move it away, or build '
          'elsewhere)'
      )


def _write_marker(path: Path, files: set[str] | tuple[str, ...]) -> None:
  text = json.dumps({'written_by': _MARKER_TITLE, 'files': sorted(files)}, indent=1) + '\n'
  output_files.write_text(path, text)


def _staging(out: Path, target: Path) -> Path:
  """A fresh folder for the new site, on the filesystem TARGET is (or will be) on."""
  if target.is_dir():
    parent = target.parent
    if parent.stat().st_dev != target.stat().st_dev:  # A mount point: its own filesystem.
      parent = target
  else:
    parent = next(p for p in target.parents if p.is_dir())
  staging = parent / output_files.partial_name(target).name
  try:
    staging.mkdir()
  except OSError as e:
    raise DemoError(
        f'--build {out}: cannot make the folder the site is built in first, {staging} '
        f'({e.strerror})'
    ) from None
  return staging


def _model(site: Path, checkpoint: str | None, model: str | None) -> None:
  """Writes `model/` in SITE: MODEL's copy, or CHECKPOINT exported to ONNX with symbolic H, W."""
  target = site / 'model' / 'esnet.onnx'
  target.parent.mkdir()
  if model is not None:
    meta = dict(onnx_contract.read_export(model, '--model').meta)
    shutil.copyfile(model, target)
  else:
    from esnet_jax.deploy import export
    from esnet_jax.deploy import export_options  # pylint: disable=g-import-not-at-top

    settings = export_options.ExportOptions(
        checkpoint=checkpoint, format='onnx', height=None, width=None, out=str(target)
    )
    _, meta_path = export.run_options(settings)
    meta = json.loads(meta_path.read_text())
  for key in ('class_names', 'colours', 'mean', 'std'):
    if key not in meta:
      raise DemoError(
          f'{model or checkpoint}: its export JSON has no {key!r}, which the page needs'
      )
  for key in ('class_names', 'colours'):
    if not isinstance(meta[key], list) or len(meta[key]) != meta.get('num_classes'):
      raise DemoError(
          f'{model or checkpoint}: its export JSON gives {key!r} for other than its '
          f"{meta.get('num_classes')} classes, which the page colours and names"
      )
  meta.pop('source', None)  # A path on the building machine: not for a published site.
  (site / 'model' / 'esnet.onnx.json').write_text(json.dumps(meta, indent=1) + '\n')


def _write_site(site: Path, checkpoint: str | None, model: str | None) -> None:
  """Every file of the site, marker included, into the empty folder SITE; the model first, the
  part most likely to fail (a mistyped path, an unreadable checkpoint)."""
  _model(site, checkpoint, model)
  for name in PAGE_FILES:
    shutil.copyfile(WEB / name, site / name)
  (site / 'ort').mkdir()
  for name in ORT_FILES:
    shutil.copyfile(ORT_DIST / name, site / 'ort' / name)
  _write_marker(site / MARKER, SITE_FILES)


def _move_in(staging: Path, target: Path, earlier: set[str]) -> None:
  """Puts the finished site in STAGING into TARGET, replacing only the files in EARLIER."""
  if not target.exists():
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(staging, target)
    return
  _write_marker(target / MARKER, earlier | set(SITE_FILES))
  for name in SITE_FILES:
    (target / name).parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging / name, target / name)
  for name in sorted(earlier - set(SITE_FILES)):
    stale = target / name
    if stale.parent.resolve() != stale.parent:  # Through a link: not a file of this folder.
      continue
    if stale.is_symlink() or stale.is_file():
      stale.unlink()
    for folder in PurePosixPath(name).parents[:-1]:  # Folders it leaves empty go too.
      try:
        (target / folder).rmdir()
      except OSError:
        break
  os.replace(staging / MARKER, target / MARKER)


def build_site(
    out: str | os.PathLike[str], *, checkpoint: str | None = None, model: str | None = None
) -> Path:
  """Writes the demo site for CHECKPOINT's weights (exported here) or an exported MODEL to OUT.

  OUT's earlier site, and the user's files in it, are kept as the module docstring says.

  Raises:
    OutputError: OUT is empty, a file, or under a file.
    OptionError: MODEL is not an export whose JSON and graph agree.
    DemoError: onnxruntime-web is not installed, OUT holds other files or a user's file
      where the site writes, the export lacks what the page needs; export errors (a
      checkpoint that cannot be read) propagate as they are.
  """
  if (checkpoint is None) == (model is None):
    raise DemoError('expected one of --checkpoint and --model')
  target = _target(out)
  out = Path(out)
  check_packages()
  _check_paths(out, target, _earlier_files(out, target))
  staging = _staging(out, target)
  try:
    _write_site(staging, checkpoint, model)
    earlier = _earlier_files(out, target, staging)  # Again: the export may take minutes.
    _check_paths(out, target, earlier)
    _move_in(staging, target, earlier)
  finally:
    shutil.rmtree(staging, ignore_errors=True)
  return out


def check_port(port: int) -> None:
  """Raise OptionError unless PORT is a TCP port number (0: any free one)."""
  if not 0 <= port <= 65535:
    raise OptionError('--port', port, 'a port number in 0..65535 (0: any free one)')


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

  def list_directory(self, path: str | os.PathLike[str]) -> None:
    """No folder listings (a folder without index.html is 404), as on a static host."""
    del path
    self.send_error(http.HTTPStatus.NOT_FOUND, 'File not found')

  def log_message(self, format: str, *args: Any) -> None:  # pylint: disable=redefined-builtin
    if self.server.verbose:
      super().log_message(format, *args)


class DemoServer(http.server.ThreadingHTTPServer):
  """The site's server; `url` is its address, `start()` serves in a background thread.

  A visitor who hangs up mid-file (a closed tab, a reload) is no error: nothing is printed,
  or one line with `verbose`; any other failure of a request prints its traceback.
  """

  daemon_threads = True

  def __init__(self, site: Path, host: str, port: int, verbose: bool = False):
    check_port(port)
    try:
      super().__init__((host, port), functools.partial(_Handler, directory=str(site)))
    except OSError as e:
      raise DemoError(
          f'--host {host} --port {port}: cannot listen there ({e.strerror}); pass another '
          '--port (0 picks a free one)'
      ) from e
    self.verbose = verbose
    self.url = f'http://{host}:{self.server_address[1]}/'

  def handle_error(self, request: Any, client_address: tuple[str, int]) -> None:
    error = sys.exc_info()[1]
    if not isinstance(error, ConnectionError):
      super().handle_error(request, client_address)
    elif self.verbose:
      host, port = client_address[:2]
      print(f'{host}:{port} hung up ({type(error).__name__})', file=sys.stderr, flush=True)

  def start(self) -> threading.Thread:
    thread = threading.Thread(target=self.serve_forever, daemon=True)
    thread.start()
    return thread


def serve(
    site: str | os.PathLike[str], host: str = '127.0.0.1', port: int = 8000, **kw
) -> DemoServer:
  """A DemoServer for SITE (not yet serving)."""
  return DemoServer(Path(site), host, port, **kw)
