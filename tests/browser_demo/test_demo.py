"""The browser demo: its site, its server, and the page in headless Chromium as a visitor uses it.

The browser tests need Node.js, the demo's npm packages (`npm ci --prefix esnet_jax/browser_demo/web`)
and Chromium; without them they skip, unless ESNET_REQUIRE_BROWSER=1 (CI sets it), where
they fail. ESNET_DEMO_SCREENSHOT=PATH keeps the screenshot of the CamVid image (the README's).
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, random_variables, subprocess_env, write_onnx_export
from esnet_jax.browser_demo import driver, static_site
from esnet_jax import demo
from esnet_jax.inference import segmenter, predict
from esnet_jax.benchmarking import browser
from esnet_jax.errors import DemoError, OptionError

REQUIRED = os.environ.get('ESNET_REQUIRE_BROWSER') == '1'


def _need(check) -> None:
  try:
    check()
  except DemoError as e:
    if REQUIRED:
      pytest.fail(f'ESNET_REQUIRE_BROWSER=1: {e}')
    pytest.skip(str(e))


@pytest.fixture
def packages():
  _need(static_site.check_packages)


@pytest.fixture
def chromium(packages):
  _need(driver.check_driver)


def _export(tmp_path: Path, num_classes: int = 4) -> Path:
  pytest.importorskip('onnx')
  meta = {'class_names': [f'c{i}' for i in range(num_classes)]}
  meta['colours'] = [[60 * i, 255 - 60 * i, 7] for i in range(num_classes)]
  meta['source'] = '/somewhere/on/the/build/machine.npz'
  return write_onnx_export(tmp_path / 'm.onnx', random_variables(num_classes), meta)


def test_site_holds_the_page_the_runtime_and_the_model(tmp_path, packages):
  model = _export(tmp_path)
  site = static_site.build_site(tmp_path / 'site', model=str(model))
  for name in (*static_site.PAGE_FILES, *(f'ort/{n}' for n in static_site.ORT_FILES)):
    assert (site / name).stat().st_size > 0, name
  assert (site / 'model/esnet.onnx').read_bytes() == model.read_bytes()
  meta = json.loads((site / 'model/esnet.onnx.json').read_text())
  assert meta['class_names'] == ['c0', 'c1', 'c2', 'c3'] and 'source' not in meta
  assert meta['input']['shape'] == ['batch', 'height', 'width', 3]
  # A rebuild replaces an earlier site; a folder of other files is refused, untouched.
  assert static_site.build_site(site, model=str(model)) == site
  other = tmp_path / 'photos'
  other.mkdir()
  (other / 'keep.jpg').write_bytes(b'mine')
  with pytest.raises(DemoError, match=r'--build .*photos: expected an empty folder'):
    static_site.build_site(other, model=str(model))
  assert (other / 'keep.jpg').read_bytes() == b'mine'


def test_a_model_without_its_json_or_both_sources_are_refused(tmp_path, packages):
  bare = tmp_path / 'bare.onnx'
  bare.write_bytes(b'x')
  with pytest.raises(
      OptionError, match=r"--model='.*bare.onnx': expected .* bare.onnx.json beside"
  ):
    static_site.build_site(tmp_path / 'site', model=str(bare))
  assert not (tmp_path / 'site').exists()
  with pytest.raises(DemoError, match=r'one of --checkpoint and --model'):
    static_site.build_site(tmp_path / 'site2')


def test_without_the_npm_packages_the_command_says_what_to_run(tmp_path, monkeypatch, capsys):
  monkeypatch.setattr(static_site, 'ORT_DIST', tmp_path / 'nothing')
  status = demo.main(['--checkpoint', 'pretrained:camvid', '--build', str(tmp_path / 'site')])
  err = capsys.readouterr().err
  assert status == 2
  assert (
      err.startswith('error: the browser demo needs onnxruntime-web') and 'npm ci --prefix' in err
  )
  assert str(static_site.WEB) in err and not (tmp_path / 'site').exists()


def test_server_sends_cross_origin_isolation_and_the_right_types(tmp_path, packages):
  site = static_site.build_site(tmp_path / 'site', model=str(_export(tmp_path)))
  server = static_site.serve(site, port=0)
  server.start()
  try:
    expected = {
        '': 'text/html',
        'demo.js': 'text/javascript',
        'ort/ort.webgpu.min.mjs': 'text/javascript',
        'ort/ort-wasm-simd-threaded.asyncify.wasm': 'application/wasm',
        'model/esnet.onnx': 'application/octet-stream',
        'model/esnet.onnx.json': 'application/json',
    }
    for path, mime in expected.items():
      with urllib.request.urlopen(server.url + path) as response:
        headers = response.headers
        body = response.read()
      assert headers['Content-Type'].startswith(mime), path
      assert headers['Cross-Origin-Opener-Policy'] == 'same-origin', path
      assert headers['Cross-Origin-Embedder-Policy'] == 'require-corp', path
      assert len(body) > 0
  finally:
    server.shutdown()
    server.server_close()


def test_a_port_in_use_is_named(tmp_path):
  with socket.socket() as taken:
    taken.bind(('127.0.0.1', 0))
    taken.listen()
    port = taken.getsockname()[1]
    with pytest.raises(DemoError, match=rf'--port {port}: cannot listen there .* --port'):
      static_site.serve(tmp_path, port=port)


def _camvid_val_image(camvid_root: Path) -> Path:
  return sorted((camvid_root / 'val').glob('*.png'))[0]


@pytest.fixture
def served_demo(tmp_path_factory):
  """`python -m esnet_jax.demo --checkpoint pretrained:camvid --port 0`, the README's command;
  stopped (SIGTERM) at the end, it must exit 0 and remove its temporary site."""
  tmpdir = tmp_path_factory.mktemp('demo_tmpdir')
  process = subprocess.Popen(
      [sys.executable, '-m', 'esnet_jax.demo', '--checkpoint', 'pretrained:camvid', '--port', '0'],
      cwd=REPO,
      env=subprocess_env(TMPDIR=str(tmpdir)),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )
  try:
    line = process.stdout.readline()
    if not line.startswith('ESNet demo at '):
      process.kill()
      pytest.fail(f'the demo did not start: {line} {process.stderr.read()[-2000:]}')
    yield line.split()[3]
  finally:
    process.terminate()
    process.wait(timeout=30)
  assert process.returncode == 0 and list(tmpdir.iterdir()) == []


@pytest.mark.end_to_end
def test_the_page_segments_a_camvid_image_as_segmenter_predict_does(
    chromium, served_demo, camvid_root, tmp_path
):
  image_path = _camvid_val_image(camvid_root)
  shot = Path(os.environ.get('ESNET_DEMO_SCREENSHOT') or tmp_path / 'demo.png')
  found = driver.drive(
      'segment', served_demo, image=str(image_path), size='360x480', screenshot=str(shot)
  )
  assert (found['height'], found['width']) == (360, 480)
  assert found['backend'] == 'wasm' and found['isolated'], found
  assert found['threads'] == min(os.cpu_count(), 8)
  page = np.frombuffer(base64.b64decode(found['classes_base64']), np.uint8).reshape(360, 480)
  image = predict.load_image(image_path)
  expected = np.asarray(segmenter.Segmenter.from_pretrained('camvid').predict(image))
  agreement = float((page == expected).mean())
  assert agreement >= 0.995, agreement
  assert len(np.unique(page)) >= 5  # a street scene, not one class everywhere
  assert found['legend'][:3] == ['Sky', 'Building', 'Pole']
  assert Image.open(shot).size[0] >= 480


@pytest.mark.end_to_end
def test_bad_input_and_cameras_show_a_message_never_a_blank_canvas(chromium, served_demo, tmp_path):
  av = pytest.importorskip('av')
  (tmp_path / 'notes.txt').write_text('not a picture')
  (tmp_path / 'broken.png').write_bytes(np.random.default_rng(0).bytes(4000))
  (tmp_path / 'broken.mp4').write_bytes(np.random.default_rng(1).bytes(20000))
  clip = tmp_path / 'clip.webm'
  with av.open(str(clip), 'w') as container:
    stream = container.add_stream('libvpx', rate=10)
    stream.width, stream.height, stream.pix_fmt = 320, 240, 'yuv420p'
    for i in range(20):
      frame = av.VideoFrame.from_ndarray(np.full((240, 320, 3), 10 * i, np.uint8), format='rgb24')
      container.mux(stream.encode(frame))
    container.mux(stream.encode())
  files = {name: str(tmp_path / name) for name in ('notes.txt', 'broken.png', 'broken.mp4')}
  found = driver.drive('inputs', served_demo, files={**files, 'clip.webm': str(clip)})
  expected = {
      'notes.txt': 'notes.txt is not an image or a video (its type: text/plain).',
      'broken.png': 'Could not read broken.png as an image: the browser cannot decode it',
      'broken.mp4': 'The browser cannot play the video broken.mp4',
      'camera_refused': 'Camera permission was refused',
      'camera_missing': 'No camera was found on this device.',
  }
  for name, message in expected.items():
    assert found[name]['state'] == 'error' and found[name]['visible'], (name, found[name])
    assert found[name]['message'].startswith(message), (name, found[name])
  for name in ('clip.webm', 'camera_live'):  # A video file and a (fake) camera play live.
    assert found[name]['state'] == 'running' and not found[name]['visible'], found[name]
    assert found[name]['frames'] >= 3 and found[name]['fps_text'].endswith(' FPS'), found[name]


@pytest.mark.end_to_end
def test_browser_benchmark_times_the_page_at_each_size(chromium, tmp_path, capsys, monkeypatch):
  out = tmp_path / 'browser.json'
  monkeypatch.chdir(tmp_path)  # --image relative to the caller's folder, not the driver's.
  Image.fromarray(np.full((40, 56, 3), 120, np.uint8)).save(tmp_path / 'photo.png')
  args = ['--sizes', '64x96,32x48', '--runs', '2', '--threads', '1', '--json', str(out)]
  args += ['--image', 'photo.png']
  assert browser.main(args) == 0
  result = json.loads(out.read_text())
  assert [(r['height'], r['width']) for r in result['rows']] == [(64, 96), (32, 48)]
  for row in result['rows']:
    assert row['backend'] == 'wasm' and row['threads'] == 1 and row['runs'] == 2
    assert 0 < row['ms_min'] <= row['ms_p50']
  assert 'HeadlessChrome' in result['browser']
  assert f"{result['cpu_model']}, {result['cpu_isa']}" in capsys.readouterr().out


def test_browser_benchmark_names_a_missing_image(tmp_path, capsys):
  assert browser.main(['--image', str(tmp_path / 'nowhere.png')]) == 2
  assert f"image='{tmp_path / 'nowhere.png'}': expected an image file" in capsys.readouterr().err


@pytest.mark.parametrize('sizes', ['360x481', 'big', '0x8'])
def test_browser_benchmark_bad_sizes_name_the_option(sizes):
  with pytest.raises(OptionError, match=rf"sizes='{sizes}': expected HxW"):
    browser._sizes(sizes)  # pylint: disable=protected-access


def test_without_node_or_chromium_the_check_says_what_to_install(monkeypatch, tmp_path):
  monkeypatch.delenv('ESNET_CHROMIUM', raising=False)
  monkeypatch.setattr(driver.shutil, 'which', lambda name: None)
  with pytest.raises(DemoError, match='needs Node.js: apt install nodejs npm'):
    driver.check_driver()
  monkeypatch.setattr(
      driver.shutil, 'which', lambda name: f'/usr/bin/{name}' if name == 'node' else None
  )
  monkeypatch.setattr(static_site, 'NODE_MODULES', tmp_path)
  with pytest.raises(DemoError, match='needs playwright-core: run `npm ci --prefix'):
    driver.check_driver()
  (tmp_path / 'playwright-core').mkdir()
  with pytest.raises(DemoError, match='needs Chromium: apt install chromium'):
    driver.check_driver()
