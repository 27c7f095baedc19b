"""What every inference engine is: normalised float32 NHWC images in, float32 logits out.

An engine runs the deployed network (`inference.deployed_network`'s function: BatchNorm
folded, weights embedded) and nothing else: normalisation, padding to multiples of 8,
test-time augmentation and the argmax stay with the caller (`inference.Segmenter`), so
every engine gives the same class maps up to its precision's rounding.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any, Mapping

import numpy as np

PRECISIONS = ('float32', 'bfloat16', 'int8')


@dataclasses.dataclass(frozen=True)
class EngineSettings:
  """How to build an engine, beside the weights: the same for every engine.

  `kernels` and `fold_bn` matter to JAX (the ONNX files are always folded); `threads`
  (None: the runtime's default) to ONNX Runtime and OpenVINO; `calibration` (a dataset
  config or a folder of images) is what INT8 is calibrated on when no INT8 file of
  these weights is shipped or cached.
  """

  precision: str = 'float32'
  kernels: str = 'auto'
  fold_bn: bool = True
  threads: int | None = None
  calibration: str = ''
  calibration_images: int = 32


class Engine(abc.ABC):
  """A running network: `engine(images)` -> logits, both float32 NHWC, as numpy arrays."""

  name: str = ''
  # The precisions the engine can run, in general (`available` says whether here).
  precisions: tuple[str, ...] = ()
  # Its place in `engines.AUTO_ORDER` per precision, lower first, from the speed measured on
  # CPUs (docs/benchmarks.md); a precision it lacks here, auto never gives it.
  auto_rank: Mapping[str, int] = {}

  def __init__(
      self, variables: Mapping[str, Any], meta: Mapping[str, Any], settings: EngineSettings
  ):
    self.settings = settings
    self.precision = settings.precision

  @classmethod
  @abc.abstractmethod
  def unavailable(cls, precision: str) -> str | None:
    """Why the engine cannot run `precision` here (a package or a CPU feature missing), or None."""

  @abc.abstractmethod
  def __call__(self, images: np.ndarray) -> np.ndarray:
    """Logits (N, H, W, classes) of normalised images (N, H, W, 3), H and W multiples of 8."""

  def describe(self) -> str:
    """One line for logs and JSON: engine, precision and what else decides its speed."""
    return f'{self.name} {self.precision}'
