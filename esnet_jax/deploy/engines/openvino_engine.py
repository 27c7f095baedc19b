"""The OpenVINO engine: the same ONNX files compiled by OpenVINO's CPU plugin.

Why OpenVINO: it is the CPU runtime deployers use, and on CPUs with 8-bit dot products
(AVX-512 VNNI, AVX-VNNI, AMX) it runs the package's INT8 QDQ file about twice as fast as
ONNX Runtime; with AVX512_BF16 or AMX its bf16 precision hint computes the float32 file in
bfloat16. Each input shape is compiled once (a static shape: OpenVINO's dynamic shapes
run slower) with the latency hint; the INT8 file runs in INT8 wherever the CPU has any
8-bit dot product (AVX2's `vpmaddubsw` included), in float32 otherwise.
"""

from __future__ import annotations

import importlib.util
import sys
from typing import Any, Mapping

import numpy as np

from esnet_jax.deploy.engines import artifacts
from esnet_jax.deploy.engines.base import Engine, EngineSettings

_MISSING = object()


def import_openvino() -> Any:
  """The `openvino` module, imported without its telemetry.

  Why: `import openvino` imports its model converter, which sends a usage event to Google
  Analytics from a forked process (the `openvino-telemetry` package) unless the user has
  opted out. A segmentation tool has no business sending that, and offline it only forks
  a process for nothing. Hiding `openvino_telemetry` during the import makes the converter
  take its own no-op stub; the package is importable again afterwards. If the caller
  imported openvino first, that import (and its choice) stands.
  """
  if 'openvino' in sys.modules:
    return sys.modules['openvino']
  saved = sys.modules.get('openvino_telemetry', _MISSING)
  sys.modules['openvino_telemetry'] = None  # `import openvino_telemetry` raises ImportError.
  try:
    import openvino  # pylint: disable=g-import-not-at-top
  finally:
    if saved is _MISSING:
      del sys.modules['openvino_telemetry']
    else:
      sys.modules['openvino_telemetry'] = saved
  return openvino


# OpenVINO's names for the precision hint.
_HINTS = {'float32': 'f32', 'bfloat16': 'bf16', 'int8': 'f32'}


def cpu_capabilities() -> tuple[str, ...]:
  """OpenVINO's CPU plugin's OPTIMIZATION_CAPABILITIES here ('FP32', 'BF16', 'INT8', ...)."""
  ov = import_openvino()
  return tuple(ov.Core().get_property('CPU', 'OPTIMIZATION_CAPABILITIES'))


class OpenVinoEngine(Engine):
  """An OpenVINO CPU model compiled per input shape."""

  name = 'openvino'
  precisions = ('float32', 'bfloat16', 'int8')
  auto_rank = {'float32': 0, 'bfloat16': 0, 'int8': 0}

  def __init__(
      self, variables: Mapping[str, Any], meta: Mapping[str, Any], settings: EngineSettings
  ):
    super().__init__(variables, meta, settings)
    ov = import_openvino()

    self.path = artifacts.onnx_file(variables, meta, settings)
    self._core = ov.Core()
    self._model = self._core.read_model(str(self.path))
    self._config = {
        'INFERENCE_PRECISION_HINT': _HINTS[settings.precision],
        'PERFORMANCE_HINT': 'LATENCY',
    }
    if settings.threads:
      self._config['INFERENCE_NUM_THREADS'] = settings.threads
    self._compiled: dict[Any, Any] = {}  # Per input shape (and, for `classes`, mean and std).

  @classmethod
  def unavailable(cls, precision: str) -> str | None:
    if importlib.util.find_spec('openvino') is None:
      return 'openvino is not installed (pip install "esnet-jax[openvino]")'
    if precision not in cls.precisions:
      return f'OpenVINO runs {", ".join(cls.precisions)}, not {precision}'
    if precision == 'bfloat16' and 'BF16' not in cpu_capabilities():
      return 'this CPU has no bfloat16 instructions (AVX512_BF16 or AMX) for OpenVINO'
    return None

  def _request(self, shape: tuple[int, ...]) -> Any:
    request = self._compiled.get(shape)
    if request is None:
      model = self._model.clone()
      model.reshape({model.inputs[0].get_any_name(): list(shape)})
      compiled = self._core.compile_model(model, 'CPU', self._config)
      request = self._compiled[shape] = compiled.create_infer_request()
    return request

  def __call__(self, images: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(images, np.float32)
    request = self._request(x.shape)
    request.infer({0: x})
    return np.array(request.get_output_tensor(0).data)

  def _classes_request(self, shape: tuple[int, ...], mean: np.ndarray, std: np.ndarray) -> Any:
    key = (shape, tuple(map(float, mean)), tuple(map(float, std)))
    request = self._compiled.get(key)
    if request is None:
      ov = import_openvino()
      import openvino.opset13 as ops  # pylint: disable=g-import-not-at-top
      from openvino.preprocess import PrePostProcessor  # pylint: disable=g-import-not-at-top

      model = self._model.clone()
      model.reshape({model.inputs[0].get_any_name(): list(shape)})
      ppp = PrePostProcessor(model)
      ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout('NHWC'))
      ppp.input().model().set_layout(ov.Layout('NHWC'))
      ppp.input().preprocess().convert_element_type(ov.Type.f32).mean(list(key[1])).scale(
          list(key[2])
      )
      model = ppp.build()
      top = ops.topk(
          model.get_results()[0].input_value(0),
          ops.constant(np.int64(1)),
          axis=-1,
          mode='max',
          sort='none',
          index_element_type=ov.Type.i32,
      )
      classes = ops.squeeze(top.output(1), ops.constant(np.array([3], np.int64)))
      model = ov.Model([ops.result(classes.output(0))], model.get_parameters(), 'classes')
      compiled = self._core.compile_model(model, 'CPU', self._config)
      request = self._compiled[key] = compiled.create_infer_request()
    return request

  def classes(self, images: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Class maps (N, H, W) int32 of uint8 images (N, H, W, 3), H and W multiples of 8.

    Normalisation and the argmax run inside the compiled graph (OpenVINO's pre-processing
    and a TopK): no float32 copy of the input or of the logits crosses into Python, which
    took a 640x368 INT8 call from 42 to 33 ms (`engines.views` uses it when no
    test-time views or probabilities are asked). The same arithmetic as `views.predict`:
    (pixel - mean) / std in float32, the first maximum.
    """
    x = np.ascontiguousarray(images, np.uint8)
    request = self._classes_request(x.shape, mean, std)
    request.infer({0: x})
    return np.array(request.get_output_tensor(0).data)
