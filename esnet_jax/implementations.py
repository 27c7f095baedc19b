"""Which implementation computes ESNet: the one place that chooses.

`config.model.kernels` (and `--kernels` of the benchmark, layer timing and
predict; `kernels=` of `Segmenter`) takes 'auto', 'xla' or 'native':

- 'xla': the pure Flax model (`esnet_jax.models`), XLA's operations;
- 'native': the model with its blocks computed by the compiled CPU kernels
  (`esnet_jax.kernels`); an error when they cannot be had here;
- 'auto' (default): 'native' in float32 where the kernels built on a CPU
  backend, 'xla' otherwise.

Either way the variables and the function are the same. The kernel-backed
blocks choose per platform when a program is lowered (`ops` uses
`jax.lax.platform_dependent`), so a program lowered for a GPU or TPU holds no
custom call of this package even when 'native' blocks were injected.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from esnet_jax.models import ESNet
from esnet_jax.errors import KernelsUnavailableError

CHOICES = ('auto', 'xla', 'native')
# The compute dtypes (`config.model.dtype`, `--dtype`); parameters stay float32.
DTYPES = ('float32', 'bfloat16')


def use_kernels(kernels: str, dtype: Any = jnp.float32) -> bool:
  """Whether `kernels` ('auto' | 'xla' | 'native') means the compiled CPU kernels here."""
  if kernels not in CHOICES:
    raise ValueError(
        f"kernels must be one of {', '.join(map(repr, CHOICES))}; " f'got {kernels!r}.'
    )
  if kernels == 'xla':
    return False
  float32 = jnp.dtype(dtype) == jnp.float32
  if kernels == 'auto':
    if not float32:
      return False
    from esnet_jax.kernels import build

    return build.available()
  if not float32:
    raise KernelsUnavailableError(
        f"kernels='native' computes in float32 only; got dtype {jnp.dtype(dtype).name} "
        f"(use kernels='auto' or 'xla')."
    )
  from esnet_jax.kernels import build

  reason = build.unavailable_reason()
  if reason is not None:
    raise KernelsUnavailableError(
        f"kernels='native' cannot be had here: {reason} " f"(use kernels='auto' or 'xla')."
    )
  return True


def esnet(num_classes: int = 19, *, kernels: str = 'auto', **kwargs: Any) -> ESNet:
  """`ESNet(num_classes, **kwargs)` built from the blocks `kernels` selects."""
  if not use_kernels(kernels, kwargs.get('dtype', jnp.float32)):
    return ESNet(num_classes, **kwargs)
  from esnet_jax.kernels import layers

  if kwargs.get('bn_folded', False):
    parts = dict(
        conv_transpose=layers.KernelConvTranspose2x,
        fcu=layers.FusedFCU,
        pfcu=layers.FusedPFCU,
        conv=layers.KernelConv,
    )
  else:
    parts = dict(
        conv=layers.KernelConv,
        norm=layers.KernelBatchNorm,
        conv_transpose=layers.KernelConvTranspose2x,
    )
  return ESNet(num_classes, **kwargs, **parts)


def uses_kernels(model: ESNet) -> bool:
  """Whether `model` was built with the compiled kernels' blocks."""
  return model.conv is not nn.Conv
