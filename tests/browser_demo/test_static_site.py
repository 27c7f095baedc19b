"""The demo's site builder and server without a browser: nothing a user has in a site folder is
lost (issue 38), bad options are one line, and the server stays quiet and cleans up.

The builder's tests need the demo's npm packages (onnxruntime-web, which the site copies):
they skip without them, unless ESNET_REQUIRE_BROWSER=1, as in tests/browser_demo/test_demo.py.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from conftest import REPO, random_variables, subprocess_env, write_onnx_export
from esnet_jax.browser_demo import static_site
from esnet_jax import demo
from esnet_jax.errors import DemoError, OptionError

REQUIRED = os.environ.get('ESNET_REQUIRE_BROWSER') == '1'
USER_FILES = {
    '_headers': b'/*\n  Cross-Origin-Opener-Policy: same-origin\n',
    'CNAME': b'demo.example.org\n',
    'model/notes.txt': b'which weights: mine\n',
    'ort/local/readme.md': b'# kept\n',
}


@pytest.fixture
def packages():
  try:
    static_site.check_packages()
  except DemoError as e:
    if REQUIRED:
      pytest.fail(f'ESNET_REQUIRE_BROWSER=1: {e}')
    pytest.skip(str(e))


def _write_export(path: Path, seed: int) -> Path:
  pytest.importorskip('onnx')
  meta = {
      'class_names': [f'c{i}' for i in range(11)],
      'colours': [[i, 20 * i, 7] for i in range(11)],
  }
  return write_onnx_export(path, random_variables(11, seed), meta)


@pytest.fixture(scope='module')
def exports(tmp_path_factory) -> tuple[Path, Path]:
  """Two exports of different weights, `a/m.onnx` and `b/m.onnx`."""
  root = tmp_path_factory.mktemp('exports')
  (root / 'a').mkdir()
  (root / 'b').mkdir()
  return _write_export(root / 'a' / 'm.onnx', 0), _write_export(root / 'b' / 'm.onnx', 1)


def _files(folder: Path) -> dict[str, bytes]:
  """Every file under FOLDER (links as their target's path), by relative path."""
  found = {}
  for path in sorted(folder.rglob('*')):
    if path.is_symlink():
      found[str(path.relative_to(folder))] = os.readlink(path).encode()
    elif path.is_file():
      found[str(path.relative_to(folder))] = path.read_bytes()
  return found


def _site_with_user_files(tmp_path: Path, model: Path) -> Path:
  site = static_site.build_site(tmp_path / 'site', model=str(model))
  for name, data in USER_FILES.items():
    (site / name).parent.mkdir(parents=True, exist_ok=True)
    (site / name).write_bytes(data)
  return site


def _no_partial_folders(folder: Path) -> None:
  assert not [p.name for p in folder.iterdir() if '.partial-' in p.name]


def test_a_rebuild_replaces_its_own_files_and_keeps_the_users(tmp_path, packages, exports):
  site = _site_with_user_files(tmp_path, exports[0])
  inode = site.stat().st_ino
  assert demo.main(['--model', str(exports[1]), '--build', str(site)]) == 0
  found = _files(site)
  for name, data in USER_FILES.items():
    assert found[name] == data, name
  assert found['model/esnet.onnx'] == exports[1].read_bytes() != exports[0].read_bytes()
  assert set(found) == {*USER_FILES, *static_site.SITE_FILES, static_site.MARKER}
  marker = json.loads(found[static_site.MARKER])
  assert marker['files'] == sorted(static_site.SITE_FILES)
  assert site.stat().st_ino == inode  # The same folder: a host's root or a link to it holds.
  # The site's own model as --model: read before anything of the site is replaced.
  assert demo.main(['--model', str(site / 'model/esnet.onnx'), '--build', str(site)]) == 0
  assert _files(site) == found
  _no_partial_folders(tmp_path)


@pytest.mark.parametrize('fault', ['typo', 'malformed_json', 'json_disagrees'])
def test_a_failed_rebuild_leaves_the_earlier_site_as_it_was(
    tmp_path, packages, exports, capsys, fault
):
  site = _site_with_user_files(tmp_path, exports[0])
  before = _files(site)
  model = tmp_path / 'other' / 'm.onnx'
  model.parent.mkdir()
  if fault != 'typo':
    model.write_bytes(exports[1].read_bytes())
    meta = json.loads(Path(f'{exports[1]}.json').read_text())
    meta['num_classes'] = 8
    Path(f'{model}.json').write_text(
        '{"mean": [1, 2' if fault == 'malformed_json' else json.dumps(meta)
    )
  capsys.readouterr()
  assert demo.main(['--model', str(model), '--build', str(site)]) == 2
  err = capsys.readouterr().err
  assert err.startswith(f"error: --model='{model}': expected ") and err.count('\n') == 1, err
  expected = {
      'typo': 'an existing .onnx file',
      'malformed_json': 'to hold the JSON esnet_jax.deploy.export wrote',
      'json_disagrees': 'the graph gives 11 classes, m.onnx.json says 8',
  }
  assert expected[fault] in err
  assert _files(site) == before
  _no_partial_folders(tmp_path)


def test_a_failing_export_of_a_checkpoint_leaves_the_earlier_site_as_it_was(
    tmp_path, packages, exports, capsys
):
  site = _site_with_user_files(tmp_path, exports[0])
  before = _files(site)
  status = demo.main(['--checkpoint', str(tmp_path / 'typo.npz'), '--build', str(site)])
  assert status != 0 and 'typo.npz' in capsys.readouterr().err
  assert _files(site) == before
  _no_partial_folders(tmp_path)


def test_a_stale_file_of_the_builder_goes_and_an_old_marker_claims_the_layout(
    tmp_path, packages, exports
):
  site = _site_with_user_files(tmp_path, exports[0])
  # A file an earlier version wrote that this one does not: listed, so removed, with its folder.
  (site / 'ort' / 'old').mkdir()
  (site / 'ort' / 'old' / 'ort.wasm').write_bytes(b'old build')
  (tmp_path / 'outside.txt').write_bytes(b'not the site')
  files = [*static_site.SITE_FILES, 'ort/old/ort.wasm', '../outside.txt', '/etc/hostname']
  (site / static_site.MARKER).write_text(json.dumps({'files': files}))
  static_site.build_site(site, model=str(exports[1]))
  assert not (site / 'ort' / 'old').exists()
  assert (tmp_path / 'outside.txt').read_bytes() == b'not the site'
  assert {n: _files(site)[n] for n in USER_FILES} == USER_FILES
  # An earlier version's plain-text marker: its known layout is the builder's, the rest the user's.
  (site / static_site.MARKER).write_text(
      'esnet-jax browser demo: python -m esnet_jax.demo --build\n'
  )
  static_site.build_site(site, model=str(exports[0]))
  assert (site / 'model/esnet.onnx').read_bytes() == exports[0].read_bytes()
  assert {n: _files(site)[n] for n in USER_FILES} == USER_FILES
  assert json.loads((site / static_site.MARKER).read_text())['files'] == sorted(
      static_site.SITE_FILES
  )


def test_a_users_file_where_the_site_writes_is_refused_by_name(tmp_path, packages, exports):
  site = _site_with_user_files(tmp_path, exports[0])
  marker = json.loads((site / static_site.MARKER).read_text())
  marker['files'].remove('style.css')  # The user's own style.css, say.
  (site / static_site.MARKER).write_text(json.dumps(marker))
  before = _files(site)
  with pytest.raises(DemoError, match=r'--build .*site: .*site/style.css is not a file an earlier'):
    static_site.build_site(site, model=str(exports[1]))
  assert _files(site) == before
  # A folder of other files and no marker: refused, untouched.
  other = tmp_path / 'photos'
  (other / 'model').mkdir(parents=True)
  (other / 'model' / 'esnet.onnx').write_bytes(b'mine')
  with pytest.raises(DemoError, match=r'--build .*photos: expected an empty folder'):
    static_site.build_site(other, model=str(exports[1]))
  assert _files(other) == {'model/esnet.onnx': b'mine'}
  _no_partial_folders(tmp_path)


def test_build_follows_a_link_to_a_folder_and_refuses_a_dangling_one(tmp_path, packages, exports):
  site = _site_with_user_files(tmp_path, exports[0])
  link = tmp_path / 'link'
  link.symlink_to(site)
  assert static_site.build_site(link, model=str(exports[1])) == link
  assert link.is_symlink() and (site / 'model/esnet.onnx').read_bytes() == exports[1].read_bytes()
  assert {n: _files(site)[n] for n in USER_FILES} == USER_FILES
  dangling = tmp_path / 'dangling'
  dangling.symlink_to(tmp_path / 'nowhere')
  loop = tmp_path / 'loop'
  loop.symlink_to(loop)
  for bad in (dangling, loop):
    with pytest.raises(DemoError, match=rf'--build .*{bad.name}: is a symbolic link to .* leads'):
      static_site.build_site(bad, model=str(exports[1]))
  assert not (tmp_path / 'nowhere').exists()
  _no_partial_folders(tmp_path)


def test_a_new_site_folder_is_made_whole_with_its_parents(tmp_path, packages, exports):
  site = static_site.build_site(tmp_path / 'a' / 'b' / 'site', model=str(exports[0]))
  assert set(_files(site)) == {*static_site.SITE_FILES, static_site.MARKER}
  assert (site.stat().st_mode & 0o777) == (0o777 & ~_umask())  # Not mkdtemp's 0o700.
  _no_partial_folders(tmp_path / 'a' / 'b')


def _umask() -> int:
  mask = os.umask(0)
  os.umask(mask)
  return mask


def _demo(*args: str, **env: str) -> subprocess.CompletedProcess:
  """`python -m esnet_jax.demo ARGS`; the timeout ends a regression that would serve forever."""
  return subprocess.run(
      [sys.executable, '-m', 'esnet_jax.demo', *args],
      cwd=REPO,
      env=subprocess_env(**env),
      capture_output=True,
      text=True,
      timeout=120,
  )


@pytest.mark.end_to_end
@pytest.mark.parametrize(
    'args, message',
    [
        (['--build', ''], "--build '': expected a folder name, not an empty one."),
        (['--build', '/dev/null/site'], '--build /dev/null/site: /dev/null is not a folder'),
        (['--port', '99999'], '--port=99999: expected a port number in 0..65535'),
        (['--port', '-1', '--build', 'site'], '--port=-1: expected a port number in 0..65535'),
    ],
    ids=['empty-build', 'build-under-a-file', 'port-too-big', 'negative-port'],
)
def test_bad_build_and_port_values_are_one_line_before_any_work(tmp_path, args, message):
  # A --model that does not exist: the option's error must come first.
  done = _demo('--model', str(tmp_path / 'nowhere.onnx'), *args)
  assert done.returncode == 2 and done.stdout == ''
  assert done.stderr.startswith(f'error: {message}') and done.stderr.count('\n') == 1, done.stderr
  assert list(tmp_path.iterdir()) == []


def test_the_server_lists_no_folders(tmp_path):
  (tmp_path / 'index.html').write_text('<p>demo</p>')
  (tmp_path / 'model').mkdir()
  (tmp_path / 'model' / 'esnet.onnx').write_bytes(b'onnx')
  server = static_site.serve(tmp_path, port=0)
  server.start()
  try:
    with urllib.request.urlopen(server.url) as response:
      assert response.read() == b'<p>demo</p>'
    with urllib.request.urlopen(server.url + 'model/esnet.onnx') as response:
      assert response.read() == b'onnx'
    for path in ('model/', 'model'):
      with pytest.raises(urllib.error.HTTPError, match='404'):
        urllib.request.urlopen(server.url + path)
  finally:
    server.shutdown()
    server.server_close()
  with pytest.raises(OptionError, match=r'--port=65536: expected a port number in 0..65535'):
    static_site.serve(tmp_path, port=65536)


def _handlers_running() -> int:
  return sum('process_request_thread' in t.name for t in threading.enumerate())


@pytest.mark.parametrize('verbose', [False, True])
def test_visitors_who_hang_up_are_no_error(tmp_path, capsys, verbose):
  (tmp_path / 'big.wasm').write_bytes(bytes(32 << 20))  # More than the sockets buffer.
  server = static_site.serve(tmp_path, port=0, verbose=verbose)
  server.start()
  try:
    for _ in range(100):
      with socket.create_connection(server.server_address[:2]) as client:
        client.sendall(b'GET /big.wasm HTTP/1.1\r\nHost: x\r\n\r\n')
        assert client.recv(1024).startswith(b'HTTP/1.0 200')
        # Close with a reset, as a closed tab does, while the server is still sending.
        client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
    deadline = time.monotonic() + 60
    while _handlers_running() and time.monotonic() < deadline:
      time.sleep(0.05)
    assert not _handlers_running()
  finally:
    server.shutdown()
    server.server_close()
  err = capsys.readouterr().err
  assert 'Traceback' not in err
  if verbose:  # One line per visitor who hung up (and the request log).
    assert err.count(' hung up (') == 100, err[-2000:]
    assert err.count('"GET /big.wasm HTTP/1.1" 200') == 100
  else:
    assert err == ''


@pytest.mark.end_to_end
@pytest.mark.parametrize(
    'stop, weights',
    [(signal.SIGTERM, '--checkpoint'), (signal.SIGINT, '--model')],
    ids=['SIGTERM-checkpoint', 'SIGINT-model'],
)
def test_stopping_the_server_removes_its_temporary_site(tmp_path, packages, exports, stop, weights):
  source = 'pretrained:camvid' if weights == '--checkpoint' else str(exports[0])
  tmpdir = tmp_path / 'tmp'
  tmpdir.mkdir()
  process = subprocess.Popen(
      [sys.executable, '-m', 'esnet_jax.demo', weights, source, '--port', '0'],
      cwd=REPO,
      env=subprocess_env(TMPDIR=str(tmpdir)),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
      # Ctrl-C as a terminal delivers it: a test run started in the background of a
      # shell without job control inherits SIGINT ignored, which the server would keep.
      preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
  )
  try:
    line = process.stdout.readline()
    assert line.startswith('ESNet demo at '), line + process.stderr.read()[-2000:]
    url = line.split()[3]
    with urllib.request.urlopen(url) as response:
      assert response.status == 200
    [temporary] = tmpdir.iterdir()
    assert (temporary / 'site' / 'model' / 'esnet.onnx').is_file()
    process.send_signal(stop)
    _, err = process.communicate(timeout=60)
  finally:
    if process.poll() is None:
      process.kill()
      process.communicate()
  assert process.returncode == 0 and err == '', err[-2000:]
  assert list(tmpdir.iterdir()) == []
