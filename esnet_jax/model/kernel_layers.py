"""ESNet's building blocks computed by the CPU kernels (`ops`), as Flax modules.

Each has the variables (names, shapes, initialisers) and the function of the
pure block it replaces in `esnet_jax.model.esnet`, so weights, checkpoints and
converted PyTorch state dicts load unchanged; `esnet_jax.model.implementations`
injects them. They compute in their `dtype` (float32, or bfloat16 where the CPU has
bf16 dot products) with float32 parameters; shapes the kernels do not cover use XLA's
operations.
"""

from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from esnet_jax.model import esnet
from esnet_jax.kernels import build, ops

Dtype = Any


def _same_padding(
    kernel_size: Sequence[int], dilation: Sequence[int]
) -> tuple[tuple[int, int], tuple[int, int]]:
  return tuple(((k - 1) // 2 * d,) * 2 for k, d in zip(kernel_size, dilation))


class KernelConv(nn.Module):
  """`nn.Conv` (explicit padding): factorised convolutions by `ops.factorized_conv`,
  others with their kernel gradient from `ops.conv`."""

  features: int
  kernel_size: Sequence[int]
  strides: Sequence[int] = (1, 1)
  padding: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))
  kernel_dilation: Sequence[int] = (1, 1)
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    x = x.astype(self.dtype or x.dtype)
    kh, kw = self.kernel_size
    kernel = self.param(
        'kernel', nn.initializers.lecun_normal(), (kh, kw, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    padding = tuple(tuple(p) for p in self.padding)
    factorized = (
        min(kh, kw) == 1
        and max(kh, kw) > 1
        and tuple(self.strides) == (1, 1)
        and padding == _same_padding(self.kernel_size, self.kernel_dilation)
    )
    # `ops.conv` pads other channel counts in bfloat16 (the first layer's 13 outputs).
    native_conv = self.features % 16 == 0 or x.dtype == jnp.bfloat16
    if self.is_initializing():
      pass
    elif factorized and self.features % 16 == 0:
      vertical = kw == 1
      dilation = self.kernel_dilation[0 if vertical else 1]
      return ops.factorized_conv(x, kernel, bias, vertical, dilation)
    elif tuple(self.kernel_dilation) == (1, 1) and native_conv:
      return ops.conv(x, kernel, padding, tuple(self.strides), bias)
    return jax.lax.conv_general_dilated(
        x,
        kernel.astype(x.dtype),
        tuple(self.strides),
        padding,
        rhs_dilation=tuple(self.kernel_dilation),
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    ) + bias.astype(x.dtype)


class KernelBatchNorm(nn.Module):
  """`nn.BatchNorm` on the last axis (same variables and function) whose training-mode
  statistics and gradients come from `ops.batch_norm_train`; a multiple of 16 channels."""

  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    dtype = self.dtype or x.dtype
    if self.use_running_average or self.is_initializing():
      y = (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
      return y.astype(dtype)
    if c % 16:
      raise ValueError(f'KernelBatchNorm needs a multiple of 16 channels; got {c}.')
    y, mean, var = ops.batch_norm_train(x.astype(dtype), scale, bias, self.epsilon, self.axis_name)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


class KernelConvTranspose2x(esnet.ConvTranspose2x):
  """`ConvTranspose2x`: the 2x2 16-channel case (ESNet's output layer) by
  `ops.upsample16`; the others (a multiple of 16 outputs) by `ops.conv_phases` in
  bfloat16, in float32 as phases with kernel gradients from `ops.conv`."""

  def transpose(self, x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    if (
        (self.kernel_size, self.padding, x.shape[-1]) == (2, 0, 16)
        and self.features <= build.MAX_UPSAMPLE_FEATURES
        and not self.is_initializing()
    ):
      return ops.upsample16(x, kernel, bias)
    x = x.astype(self.dtype or x.dtype)
    # In bfloat16 the phases go to the kernel, written interleaved: XLA:CPU's bf16
    # interleave is slow. Its float32 one is not; there XLA keeps it (`phase_conv`).
    bf16_pairs = x.dtype == jnp.bfloat16 and x.shape[-1] % 2 == 0
    if self.features % 16 == 0 and bf16_pairs and not self.is_initializing():
      return self._phases(x, kernel, bias)
    return super().transpose(x, kernel, bias)

  def phase_conv(
      self, x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]
  ) -> jax.Array:
    if self.features % 16 or self.is_initializing():
      return super().phase_conv(x, kernel, padding)
    return ops.conv(x, kernel, padding)

  def _phases(self, x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """The four phases by `ops.conv_phases`, each written into its pixels of the output."""
    kernels, paddings = ops.transposed_phases(kernel, (self.padding, self.padding))
    return ops.conv_phases(x, kernels, paddings, bias)


class _FactorizedParams(nn.Module):
  """The variables of a factorised `nn.Conv` (same names, shapes, initialisers), unapplied."""

  features: int
  kernel_size: tuple[int, int]

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
    kernel = self.param(
        'kernel',
        nn.initializers.lecun_normal(),
        self.kernel_size + (in_features, self.features),
        jnp.float32,
    )
    return kernel, self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)


def _pair(c: int, k: int, name: str) -> tuple[jax.Array, jax.Array]:
  vertical = name.startswith('conv3x1')
  return _FactorizedParams(c, (k, 1) if vertical else (1, k), name=name)(c)


def _first_pair(unit: nn.Module, x: jax.Array, k: int, train: bool) -> jax.Array:
  """The unit's first (kx1, ReLU, 1xk, folded BN, ReLU) pair, fused; only in BN-folded
  inference (the unit's `norm` None, `train` False)."""
  if unit.norm is not None or train:
    raise ValueError(
        f'{type(unit).__name__} is for BN-folded inference ' '(norm=None, train=False).'
    )
  c = x.shape[-1]
  y = ops.conv_kx1(x, *_pair(c, k, 'conv3x1_1'), vertical=True, relu=True)
  return ops.conv_kx1(y, *_pair(c, k, 'conv1x3_1'), vertical=False, relu=True)


class FusedFCU(nn.Module):
  """A BN-folded `FCU` in inference: four `ops.conv_kx1` calls with bias, ReLU and the
  residual fused (the fields of `FCU`; `norm` must be None, dropout is inactive)."""

  kernel_size: int
  dropout: float
  norm: Any
  dilation: int = 1
  dtype: Dtype | None = None
  conv: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c, k, d = x.shape[-1], self.kernel_size, self.dilation
    y = _first_pair(self, x, k, train)
    y = ops.conv_kx1(y, *_pair(c, k, 'conv3x1_2'), vertical=True, dilation=d, relu=True)
    return ops.conv_kx1(
        y, *_pair(c, k, 'conv1x3_2'), vertical=False, dilation=d, relu=True, residual=x
    )


class FusedPFCU(nn.Module):
  """A BN-folded `PFCU` in inference: eight fused `ops.conv_kx1` calls; each branch's
  last convolution adds itself to the running sum, the last applies the ReLU."""

  dropout: float
  norm: Any
  dilations: Sequence[int] = esnet.PFCU_DILATIONS
  dtype: Dtype | None = None
  conv: Any = None

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    y = _first_pair(self, x, 3, train)
    out = x
    for i, rate in enumerate(self.dilations):
      b = ops.conv_kx1(y, *_pair(c, 3, f'conv3x1_2{rate}'), vertical=True, dilation=rate, relu=True)
      out = ops.conv_kx1(
          b,
          *_pair(c, 3, f'conv1x3_2{rate}'),
          vertical=False,
          dilation=rate,
          residual=out,
          relu=i == len(self.dilations) - 1,
      )
    return out
