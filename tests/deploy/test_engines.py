"""Inference engines (esnet_jax.deploy.engines): each engine's logits and class maps against JAX float32,
the `auto` choice, test-time views around an engine, and the cache of ONNX files."""

from __future__ import annotations

import numpy as np
import pytest

from esnet_jax.deploy import engines
from esnet_jax.deploy.engines import artifacts, views
from esnet_jax.errors import OptionError
from esnet_jax.inference.segmenter import Segmenter
from esnet_jax.data.transforms import MEAN_RGB, STD_RGB

from conftest import random_variables

MEAN, STD = np.asarray(MEAN_RGB, np.float32), np.asarray(STD_RGB, np.float32)


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
  monkeypatch.setenv(artifacts.CACHE_ENV, str(tmp_path / 'cache'))


@pytest.fixture(scope='module')
def variables():
  return random_variables(11, seed=3)


def _images(n=2, h=36, w=52, seed=0):
  return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), np.uint8)


def _runnable(precision):
  return [name for name in engines.ENGINES if engines.unavailable(name, precision) is None]


# Float32 engines compute the same function: logits within float32 rounding of the
# reordered sums (measured max |diff| ~1e-5 on these inputs), so the class maps agree
# everywhere but at near-ties. bfloat16 keeps 8 bits of mantissa: class maps agree on
# at least 99% of pixels (measured 99.6-99.7% on random weights, whose logits are close).
FLOAT32_LOGITS_ATOL = 1e-3
BF16_AGREEMENT = 0.99


@pytest.mark.parametrize('name', ['onnxruntime', 'openvino'])
def test_float32_engines_equal_jax(name, variables):
  if engines.unavailable(name, 'float32'):
    pytest.skip(engines.unavailable(name, 'float32'))
  x = (_images().astype(np.float32) - MEAN) / STD
  x = np.pad(x, ((0, 0), (0, 4), (0, 4), (0, 0)))
  reference = engines.build(variables, {}, 'jax')(x)
  got = engines.build(variables, {}, name)(x)
  assert got.shape == reference.shape == (2, 40, 56, 11)
  np.testing.assert_allclose(got, reference, atol=FLOAT32_LOGITS_ATOL)
  assert (got.argmax(-1) == reference.argmax(-1)).mean() > 0.999


@pytest.mark.parametrize('name', ['jax', 'openvino'])
def test_bfloat16_engines_nearly_equal_jax_float32(name, variables):
  if engines.unavailable(name, 'bfloat16'):
    pytest.skip(engines.unavailable(name, 'bfloat16'))
  images = _images()
  reference = Segmenter(variables).predict(images)
  engine = engines.build(variables, {}, name, engines.EngineSettings(precision='bfloat16'))
  classes, _ = views.predict(engine, images, mean=MEAN, std=STD)
  assert (classes == reference).mean() >= BF16_AGREEMENT


def test_views_around_an_engine_equal_segmenter_tta(variables):
  """Scales and flip around ONNX Runtime give Segmenter's (JAX) augmented class maps."""
  if engines.unavailable('onnxruntime', 'float32'):
    pytest.skip(engines.unavailable('onnxruntime', 'float32'))
  images = _images(1, 44, 60, seed=1)
  tta = dict(scales=(0.5, 1.0, 1.5), flip=True)
  want, want_probs = Segmenter(variables, **tta).predict(images, return_probs=True)
  engine = engines.build(variables, {}, 'onnxruntime')
  got, probs = views.predict(engine, images, mean=MEAN, std=STD, with_probs=True, **tta)
  assert (got == want).mean() > 0.999
  np.testing.assert_allclose(probs, want_probs, atol=1e-4)
  np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_auto_takes_the_first_engine_that_runs_the_precision():
  for precision, order in engines.AUTO_ORDER.items():
    runnable = [name for name in order if engines.unavailable(name, precision) is None]
    if runnable:
      assert engines.resolve('auto', precision) == runnable[0]
    else:
      with pytest.raises(OptionError, match='precision'):
        engines.resolve('auto', precision)


def test_an_engine_that_cannot_run_the_precision_is_one_option_error():
  with pytest.raises(OptionError, match=r"engine='onnxruntime'.*not bfloat16"):
    engines.resolve('onnxruntime', 'bfloat16')
  with pytest.raises(OptionError, match=r"engine='jax'.*not int8"):
    engines.resolve('jax', 'int8')
  with pytest.raises(OptionError, match=r"engine='tensorrt': expected one of auto, jax"):
    engines.resolve('tensorrt', 'float32')
  with pytest.raises(OptionError, match=r"precision='fp16'"):
    engines.resolve('auto', 'fp16')


def test_onnx_files_are_cached_by_weights(variables, tmp_path):
  first = artifacts.float32_onnx(variables, {})
  stamp = first.stat().st_mtime_ns
  assert artifacts.float32_onnx(variables, {}) == first and first.stat().st_mtime_ns == stamp
  other = random_variables(11, seed=4)
  assert artifacts.weights_key(other) != artifacts.weights_key(variables)
  assert artifacts.float32_onnx(other, {}) != first
  assert first.parent == tmp_path / 'cache' / 'engines'


def test_int8_without_a_shipped_cached_or_calibration_file_is_one_option_error(variables):
  with pytest.raises(OptionError, match=r'calibration.*no INT8 file of these weights'):
    artifacts.int8_onnx(variables, {})


def test_openvino_class_maps_from_uint8_in_its_graph_equal_the_float_path(variables):
  """OpenVINO's `classes` (normalisation and argmax inside the compiled graph) gives the
  class maps of the engine's float32 logits, and `views.predict` takes it only where it
  applies (one view, no probabilities, sides multiples of 8)."""
  if engines.unavailable('openvino', 'float32'):
    pytest.skip(engines.unavailable('openvino', 'float32'))
  engine = engines.build(variables, {}, 'openvino')
  images = _images(2, 40, 56, seed=5)
  x = (images.astype(np.float32) - MEAN) / STD
  fast = engine.classes(images, MEAN, STD)
  assert fast.shape == (2, 40, 56) and fast.dtype == np.int32
  assert (fast == engine(x).argmax(-1)).mean() > 0.999
  calls = []
  engine.classes = lambda *a: calls.append(a) or fast
  views.predict(engine, images, mean=MEAN, std=STD)
  views.predict(engine, images, mean=MEAN, std=STD, with_probs=True)
  views.predict(engine, images[:, :36, :52], mean=MEAN, std=STD)
  assert len(calls) == 1


@pytest.mark.end_to_end
def test_openvino_is_imported_without_its_telemetry(tmp_path):
  """`import openvino` alone sends a usage event from a forked process unless the user
  opted out (its consent and counters live in ~/intel); the engine's import takes the
  converter's no-op stub instead and leaves no trace in HOME."""
  import subprocess
  import sys

  if engines.unavailable('openvino', 'float32'):
    pytest.skip(engines.unavailable('openvino', 'float32'))
  code = (
      'from esnet_jax.deploy.engines import openvino_engine as o; o.import_openvino(); '
      'import openvino.tools.ovc.telemetry_utils as t; print(t.tm.__name__); '
      'import openvino_telemetry; print("importable")'
  )
  env = {'HOME': str(tmp_path), 'PATH': '/usr/bin:/bin'}
  done = subprocess.run(
      [sys.executable, '-c', code], capture_output=True, text=True, env=env, timeout=120
  )
  assert done.returncode == 0, done.stderr
  assert done.stdout.split() == ['openvino.tools.ovc.telemetry_stub', 'importable']
  assert not (tmp_path / 'intel').exists()


def test_the_engines_are_found_in_their_modules():
  """Adding an engine is one `*_engine` module: its class is found, named and ranked there."""
  import pkgutil  # pylint: disable=g-import-not-at-top

  modules = {m.name for m in pkgutil.iter_modules(engines.__path__) if m.name.endswith('_engine')}
  assert {cls.__module__.rsplit('.', 1)[-1] for cls in engines.ENGINES.values()} == modules
  assert engines.ENGINE_CHOICES == ('auto', *engines.ENGINES)
  for precision, order in engines.AUTO_ORDER.items():
    assert all(precision in engines.ENGINES[name].precisions for name in order)
