"""Which implementation computes ESNet: the one place that chooses.

`config.model.kernels` (and `--kernels` of the benchmark, layer timing and
predict; `kernels=` of `Segmenter`) takes 'auto', 'xla' or 'native':

- 'xla': the pure Flax model (`esnet_jax.model.esnet`), XLA's operations;
- 'native': the model with its blocks computed by the compiled CPU kernels
  (`esnet_jax.kernels`); an error when they cannot be had here;
- 'auto' (default): 'native' where the kernels built on a CPU backend, 'xla'
  otherwise. In bfloat16 'native' needs the CPU's bf16 dot products (AVX512_BF16,
  `build.bf16_dot()`); on a CPU without them 'auto' computes in float32 with the
  kernels, said once on the `esnet_jax` logger: XLA's bfloat16 convolutions on the CPU
  are slower than the float32 kernels (1.6x on an AVX-512 CPU, docs/benchmarks.md), so
  asking for bfloat16 never makes a run slower than float32.

Either way the variables and the function are the same. The kernel-backed
blocks choose per platform when a program is lowered (`ops` uses
`jax.lax.platform_dependent`), so a program lowered for a GPU or TPU holds no
custom call of this package even when 'native' blocks were injected.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from esnet_jax.model.esnet import ESNet
from esnet_jax.errors import KernelsUnavailableError

CHOICES = ('auto', 'xla', 'native')
# The compute dtypes (`config.model.dtype`, `--dtype`); parameters stay float32.
DTYPES = ('float32', 'bfloat16')


def _check_choice(kernels: str) -> None:
  if kernels not in CHOICES:
    raise ValueError(
        f"kernels must be one of {', '.join(map(repr, CHOICES))}; " f'got {kernels!r}.'
    )


def use_kernels(kernels: str, dtype: Any = jnp.float32) -> bool:
  """Whether `kernels` ('auto' | 'xla' | 'native') means the compiled CPU kernels here,
  computing in `dtype`."""
  _check_choice(kernels)
  if kernels == 'xla':
    return False
  from esnet_jax.kernels import build

  bfloat16 = jnp.dtype(dtype) == jnp.bfloat16
  if kernels == 'auto':
    return build.available() and (not bfloat16 or build.bf16_dot())
  reason = build.unavailable_reason()
  if reason is None and bfloat16 and not build.bf16_dot():
    reason = "bfloat16 needs the CPU's bf16 dot products (AVX512_BF16), which this CPU lacks;"
  if reason is not None:
    raise KernelsUnavailableError(
        f"kernels='native' cannot be had here: {reason} " f"(use kernels='auto' or 'xla')."
    )
  return True


def compute_dtype(kernels: str, dtype: Any) -> Any:
  """The dtype a model asked to compute in `dtype` with `kernels` computes in here:
  float32 for bfloat16 with 'auto' where the kernels run but the CPU has no bf16 dot
  products (said once on the `esnet_jax` logger), else `dtype`."""
  _check_choice(kernels)
  if kernels != 'auto' or jnp.dtype(dtype) != jnp.bfloat16:
    return dtype
  from esnet_jax.kernels import build

  if build.available() and not build.bf16_dot():
    _say_bfloat16_runs_in_float32()
    return jnp.float32
  return dtype


@functools.cache
def _say_bfloat16_runs_in_float32() -> None:
  logging.getLogger('esnet_jax').warning(
      'esnet_jax: this CPU has no bfloat16 dot products (AVX512_BF16); computing in float32 '
      "with the CPU kernels, which is faster here than XLA's bfloat16 (kernels='xla' forces "
      'bfloat16).'
  )


def esnet(num_classes: int = 19, *, kernels: str = 'auto', **kwargs: Any) -> ESNet:
  """`ESNet(num_classes, **kwargs)` built from the blocks `kernels` selects (in bfloat16
  on a CPU without bf16 dot products, 'auto' computes in float32: `compute_dtype`)."""
  if 'dtype' in kwargs:
    kwargs['dtype'] = compute_dtype(kernels, kwargs['dtype'])
  if not use_kernels(kernels, kwargs.get('dtype', jnp.float32)):
    return ESNet(num_classes, **kwargs)
  from esnet_jax.model import kernel_layers

  if kwargs.get('bn_folded', False):
    parts = dict(
        conv_transpose=kernel_layers.KernelConvTranspose2x,
        fcu=kernel_layers.FusedFCU,
        pfcu=kernel_layers.FusedPFCU,
        conv=kernel_layers.KernelConv,
    )
  else:
    parts = dict(
        conv=kernel_layers.KernelConv,
        norm=kernel_layers.KernelBatchNorm,
        conv_transpose=kernel_layers.KernelConvTranspose2x,
    )
  return ESNet(num_classes, **kwargs, **parts)


def uses_kernels(model: ESNet) -> bool:
  """Whether `model` was built with the compiled kernels' blocks."""
  return model.conv is not nn.Conv
