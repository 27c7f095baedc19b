"""The JAX engine: the Flax network compiled by XLA, with the package's CPU kernels where built."""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.model import deployed
from esnet_jax.deploy.engines.base import Engine, EngineSettings


class JaxEngine(Engine):
  """`inference.deployed_network` jitted; one compilation per input shape."""

  name = 'jax'
  precisions = ('float32', 'bfloat16')
  auto_rank = {'float32': 2, 'bfloat16': 1}

  def __init__(
      self, variables: Mapping[str, Any], meta: Mapping[str, Any], settings: EngineSettings
  ):
    super().__init__(variables, meta, settings)
    dtype = jnp.bfloat16 if settings.precision == 'bfloat16' else jnp.float32
    self.model, model_variables = deployed.deployed_network(
        variables, kernels=settings.kernels, dtype=dtype, fold_bn=settings.fold_bn
    )
    self.variables = jax.device_put(model_variables)
    self._apply = jax.jit(lambda v, x: self.model.apply(v, x, train=False).astype(jnp.float32))

  @classmethod
  def unavailable(cls, precision: str) -> str | None:
    if precision not in cls.precisions:
      return f'JAX runs {" and ".join(cls.precisions)}, not {precision}'
    return None

  def __call__(self, images: np.ndarray) -> np.ndarray:
    return np.asarray(self._apply(self.variables, jnp.asarray(images, jnp.float32)))
