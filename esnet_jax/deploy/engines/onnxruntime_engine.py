"""The ONNX Runtime engine: the package's ONNX export (float32) or its INT8 QDQ file, on the CPU."""

from __future__ import annotations

import importlib.util
from typing import Any, Mapping

import numpy as np

from esnet_jax.deploy.engines import artifacts
from esnet_jax.deploy.engines.base import Engine, EngineSettings


class OnnxRuntimeEngine(Engine):
  """An `onnxruntime.InferenceSession` on the CPU provider, H and W symbolic."""

  name = 'onnxruntime'
  precisions = ('float32', 'int8')
  auto_rank = {'float32': 1, 'int8': 1}

  def __init__(
      self, variables: Mapping[str, Any], meta: Mapping[str, Any], settings: EngineSettings
  ):
    super().__init__(variables, meta, settings)
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top

    self.path = artifacts.onnx_file(variables, meta, settings)
    options = ort.SessionOptions()
    if settings.threads:
      options.intra_op_num_threads = settings.threads
    self.session = ort.InferenceSession(str(self.path), options, providers=['CPUExecutionProvider'])
    self.input_name = self.session.get_inputs()[0].name

  @classmethod
  def unavailable(cls, precision: str) -> str | None:
    if importlib.util.find_spec('onnxruntime') is None:
      return 'onnxruntime is not installed (pip install "esnet-jax[export]")'
    if precision not in cls.precisions:
      return f'ONNX Runtime runs the export in {" and ".join(cls.precisions)}, not {precision}'
    return None

  def __call__(self, images: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(images, np.float32)
    return self.session.run(None, {self.input_name: x})[0]
