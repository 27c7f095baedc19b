"""The network inference runs: trained variables turned into the deployed function.

`deployed_network` is the one place that turns trained variables into what inference
runs (the implementation `kernels` selects, the compute dtype, BatchNorm folded into the
convolutions: exact up to float rounding, and it removes the normalisation work from
every call); `tta_size` is the input size of a test-time scale. `inference.Segmenter`,
the engines (`esnet_jax.deploy.engines`), export, the benchmark and layer timing build on them.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax.numpy as jnp

from esnet_jax.model import folding, implementations
from esnet_jax.model.esnet import num_classes_of
from esnet_jax.model.esnet import ESNet


def deployed_network(
    variables: Mapping[str, Any],
    *,
    kernels: str = 'auto',
    dtype: Any = jnp.float32,
    fold_bn: bool = True,
) -> tuple[ESNet, dict[str, Any]]:
  """The network inference runs on `variables`, and the variables it takes.

  Args:
    variables: `{'params', 'batch_stats'}` of a trained `ESNet`.
    kernels: who computes it, 'auto' | 'xla' | 'native' (`esnet_jax.model.implementations`).
    dtype: compute dtype; parameters stay float32.
    fold_bn: merge every BatchNorm into the convolution before it.

  Returns:
    `(model, model_variables)`: call `model.apply(model_variables, x, train=False)`
    on normalised NHWC images whose sides are multiples of 8.
  """
  model = implementations.esnet(
      num_classes_of(variables), kernels=kernels, dtype=jnp.dtype(dtype), bn_folded=fold_bn
  )
  if fold_bn:
    return model, folding.fold_batch_norm(variables, epsilon=model.bn_epsilon)
  return model, {k: variables[k] for k in ('params', 'batch_stats')}


def tta_size(height: int, width: int, scale: float) -> tuple[int, int]:
  """The input size test-time augmentation runs at for `scale`: multiples of 8, at least 8."""
  return (max(8, int(round(height * scale / 8)) * 8), max(8, int(round(width * scale / 8)) * 8))
