"""ESNet (Wang, Zhou, Wu 2019, arXiv:1906.09826) as Flax linen modules.

Layout, names and numerics follow the authors' PyTorch layer definitions so that
their state dicts convert one-to-one (see `esnet_jax.convert`): module names mirror
the PyTorch attribute names (`encoder/layers_3/bn` is `encoder.layers.3.bn`).

Tensors are NHWC. BatchNorm uses eps 1e-3 and momentum 0.9 (PyTorch's 0.1) and
takes an `axis_name` for cross-replica statistics under `pmap`. With
`bn_folded=True` the network expects parameters produced by
`esnet_jax.folding.fold_batch_norm`: every BatchNorm is merged into the conv in
front of it, which removes the normalisation work from inference.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax import native_kernels

ModuleDef = Callable[..., nn.Module]
Dtype = Any

# Dropout rates of the original: encoder FCUs, PFCUs (decoder FCUs have none).
ENCODER_FCU_DROPOUT = 0.03
PFCU_DROPOUT = 0.3
PFCU_DILATIONS = (2, 5, 9)


def _spatial_dropout(rate: float, train: bool) -> nn.Dropout:
  """PyTorch `Dropout2d`: drops whole channels (mask shared over H and W)."""
  return nn.Dropout(rate, broadcast_dims=(1, 2), deterministic=not train)


def _factorized_conv(features: int, kernel: int, vertical: bool, dilation: int,
                     dtype: Dtype, name: str) -> nn.Conv:
  """A kx1 (vertical) or 1xk convolution with 'same' padding, as in the original."""
  pad = (kernel - 1) // 2 * dilation
  if vertical:
    return nn.Conv(features, (kernel, 1), padding=((pad, pad), (0, 0)),
                   kernel_dilation=(dilation, 1), dtype=dtype, name=name)
  return nn.Conv(features, (1, kernel), padding=((0, 0), (pad, pad)),
                 kernel_dilation=(1, dilation), dtype=dtype, name=name)


def _native_factorized_conv(features: int, kernel: int, vertical: bool, dilation: int,
                            dtype: Dtype, name: str) -> Callable[[jax.Array], jax.Array]:
  """`_factorized_conv` (same parameters) computed by `native_kernels.factorized_conv`."""
  del dtype  # float32 only.
  params = _ConvParams(features, (kernel, 1) if vertical else (1, kernel), name=name)
  return lambda x: native_kernels.factorized_conv(x, *params(x.shape[-1]), vertical, dilation)


def _use_native(requested: bool, x: jax.Array, dtype: Dtype | None, module: nn.Module) -> bool:
  """Whether a unit runs its factorised convolutions in `native_kernels`."""
  return (requested and x.dtype == jnp.float32 and dtype in (None, jnp.float32)
          and x.shape[-1] % 16 == 0 and not module.is_initializing())


def _maybe_norm(norm: ModuleDef | None, x: jax.Array, name: str) -> jax.Array:
  """BatchNorm, or nothing when the network runs on BN-folded parameters."""
  return x if norm is None else norm(name=name)(x)


def _phase_taps(kernel: int, padding: int, phase: int) -> tuple[int, list[int]]:
  """The taps of one output phase of a stride-2 transposed convolution.

  Output pixel 2m+a of a stride-2 transposed convolution with padding p sums
  x[m+d] * w[j] over the kernel indices j with a + p - j even, d = (a + p - j) / 2.
  The offsets d of one phase are consecutive; returns the smallest one and the
  kernel index of each offset in increasing order.
  """
  taps = sorted(((phase + padding - j) // 2, j) for j in range(kernel)
                if (phase + padding - j) % 2 == 0)
  return taps[0][0], [j for _, j in taps]


class ConvTranspose2x(nn.Module):
  """PyTorch `ConvTranspose2d(stride=2, padding, output_padding)` doubling H and W.

  The kernel is stored as (kH, kW, in, out) with PyTorch's scatter semantics
  (`y[2i - p + k] += x[i] * w[k]`). It is evaluated in sub-pixel form: each of
  the four output phases (row parity, column parity) is a small stride-1
  convolution with only that phase's taps, and the phases are interleaved. That
  is the same function as the input-dilated transposed convolution, with about
  half its multiply-adds for a 3x3 kernel (no zero taps) and a gradient several
  times cheaper on CPU. With `native=True` (float32) the 2x2, 16-channel case
  (ESNet's output layer) runs `native_kernels.upsample16` instead, and the
  phases of the others take their kernel gradients from `native_kernels.conv`.
  """
  features: int
  kernel_size: int
  padding: int
  dtype: Dtype | None = None
  native: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        (k, k, x.shape[-1], self.features), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    if (self.native and (k, self.padding, x.shape[-1]) == (2, 0, 16)
        and self.features <= native_kernels.MAX_UPSAMPLE_FEATURES
        and x.dtype == jnp.float32 and self.dtype in (None, jnp.float32)
        and not self.is_initializing()):
      return native_kernels.upsample16(x, kernel, bias)
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    native = (self.native and x.dtype == jnp.float32 and x.shape[-1] % 16 == 0
              and self.features % 16 == 0 and not self.is_initializing())
    rows = []
    for a in (0, 1):
      d_y, taps_y = _phase_taps(k, self.padding, a)
      row = []
      for b in (0, 1):
        d_x, taps_x = _phase_taps(k, self.padding, b)
        sub = kernel[np.asarray(taps_y)[:, None], np.asarray(taps_x)[None, :]]
        padding = ((-d_y, d_y + len(taps_y) - 1), (-d_x, d_x + len(taps_x) - 1))
        if native:
          row.append(native_kernels.conv(x, sub, padding))
        else:
          row.append(jax.lax.conv_general_dilated(
              x, sub.astype(dtype), window_strides=(1, 1), padding=padding,
              dimension_numbers=('NHWC', 'HWIO', 'NHWC')))
      rows.append(jnp.stack(row, axis=3))  # (n, h, w, b, c)
    y = jnp.stack(rows, axis=2)  # (n, h, a, w, b, c)
    n, h, _, w, _, c = y.shape
    return y.reshape(n, 2 * h, 2 * w, c) + bias.astype(dtype)


class NativeBatchNorm(nn.Module):
  """`nn.BatchNorm` on the last axis, with its variables, names and function, whose
  training-mode statistics and gradients come from `native_kernels.batch_norm_train`.

  ESNet uses it in place of `nn.BatchNorm` when built with `native_kernels=True`
  in float32; the inputs need a multiple of 16 channels (all of ESNet's do).
  """
  use_running_average: bool
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Dtype | None = None
  axis_name: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    if x.dtype != jnp.float32 or self.dtype not in (None, jnp.float32) or c % 16:
      raise ValueError(f'NativeBatchNorm needs float32 inputs with a multiple of 16 channels; '
                       f'got {x.dtype} with {c} (use nn.BatchNorm).')
    ra_mean = self.variable('batch_stats', 'mean', lambda s: jnp.zeros(s, jnp.float32), (c,))
    ra_var = self.variable('batch_stats', 'var', lambda s: jnp.ones(s, jnp.float32), (c,))
    scale = self.param('scale', nn.initializers.ones, (c,), jnp.float32)
    bias = self.param('bias', nn.initializers.zeros, (c,), jnp.float32)
    if self.use_running_average or self.is_initializing():
      return (x - ra_mean.value) * (jax.lax.rsqrt(ra_var.value + self.epsilon) * scale) + bias
    y, mean, var = native_kernels.batch_norm_train(x, scale, bias, self.epsilon, self.axis_name)
    ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
    ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
    return y


class DownsamplerBlock(nn.Module):
  """3x3 stride-2 conv to (features - in) channels beside a 2x2 max-pool, BN, ReLU.

  With `native=True` (float32, a multiple of 16 conv outputs) the conv's kernel
  gradient comes from `native_kernels.conv_wgrad`.
  """
  features: int
  norm: ModuleDef | None
  dtype: Dtype | None = None
  native: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    out_features = self.features - in_features
    padding = ((1, 1), (1, 1))
    if _use_native(self.native, x, self.dtype, self) and out_features % 16 == 0:
      kernel, bias = _ConvParams(out_features, (3, 3), name='conv')(in_features)
      conv = native_kernels.conv(x, kernel, padding, (2, 2)) + bias
    else:
      conv = nn.Conv(out_features, (3, 3), strides=(2, 2), padding=padding, dtype=self.dtype,
                     name='conv')(x)
    pool = nn.max_pool(x, (2, 2), strides=(2, 2))
    if self.norm is None:
      # Folded BN: the conv carries its share; the pooled channels keep an affine.
      scale = self.param('pool_scale', nn.initializers.ones, (in_features,), jnp.float32)
      shift = self.param('pool_bias', nn.initializers.zeros, (in_features,), jnp.float32)
      pool = pool * scale.astype(pool.dtype) + shift.astype(pool.dtype)
    y = jnp.concatenate([conv, pool.astype(conv.dtype)], axis=-1)
    return nn.relu(_maybe_norm(self.norm, y, 'bn'))


class _ConvParams(nn.Module):
  """The variables of an `nn.Conv` (same names, shapes, initialisers), returned unapplied."""
  features: int
  kernel_size: tuple[int, int]

  @nn.compact
  def __call__(self, in_features: int) -> tuple[jax.Array, jax.Array]:
    kernel = self.param('kernel', nn.initializers.lecun_normal(),
                        self.kernel_size + (in_features, self.features), jnp.float32)
    return kernel, self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)


class FCU(nn.Module):
  """Factorized convolution unit: two residual (kx1, ReLU, 1xk, BN) pairs.

  With `native=True` (float32), the convolutions run as
  `native_kernels.factorized_conv` (faster on CPU), and a BN-folded unit in
  inference as four calls of `native_kernels.conv_kx1` with bias, ReLU and
  residual fused: the same function.
  """
  kernel_size: int
  dropout: float
  norm: ModuleDef | None
  dilation: int = 1
  dtype: Dtype | None = None
  native: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c, k = x.shape[-1], self.kernel_size
    native = _use_native(self.native, x, self.dtype, self)
    if native and self.norm is None and not train:
      convs = [_ConvParams(c, (k, 1) if vertical else (1, k), name=name)(c) for name, vertical in
               (('conv3x1_1', True), ('conv1x3_1', False), ('conv3x1_2', True),
                ('conv1x3_2', False))]
      y = native_kernels.conv_kx1(x, *convs[0], vertical=True, relu=True)
      y = native_kernels.conv_kx1(y, *convs[1], vertical=False, relu=True)
      y = native_kernels.conv_kx1(y, *convs[2], vertical=True, dilation=self.dilation, relu=True)
      return native_kernels.conv_kx1(y, *convs[3], vertical=False, dilation=self.dilation,
                                     relu=True, residual=x)
    conv = functools.partial(_native_factorized_conv if native else _factorized_conv, c, k)
    y = conv(True, 1, self.dtype, 'conv3x1_1')(x)
    y = conv(False, 1, self.dtype, 'conv1x3_1')(nn.relu(y))
    y = nn.relu(_maybe_norm(self.norm, y, 'bn1'))
    y = conv(True, self.dilation, self.dtype, 'conv3x1_2')(y)
    y = conv(False, self.dilation, self.dtype, 'conv1x3_2')(nn.relu(y))
    y = _maybe_norm(self.norm, y, 'bn2')
    if self.dropout:
      y = _spatial_dropout(self.dropout, train)(y)
    return nn.relu(x + y)


class PFCU(nn.Module):
  """Parallel FCU: a factorized pair, then dilated branches sharing ONE BatchNorm.

  `native` as for `FCU` (BN-folded inference: eight fused `conv_kx1` calls).
  """
  dropout: float
  norm: ModuleDef | None
  dilations: Sequence[int] = PFCU_DILATIONS
  dtype: Dtype | None = None
  native: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    c = x.shape[-1]
    native = _use_native(self.native, x, self.dtype, self)
    if native and self.norm is None and not train:
      return self._fused(x)
    conv = functools.partial(_native_factorized_conv if native else _factorized_conv, c, 3)
    y = conv(True, 1, self.dtype, 'conv3x1_1')(x)
    y = conv(False, 1, self.dtype, 'conv1x3_1')(nn.relu(y))
    y = nn.relu(_maybe_norm(self.norm, y, 'bn1'))
    # The original applies the same `bn2` (and dropout module) to every branch.
    shared_bn = None if self.norm is None else self.norm(name='bn2')
    drop = _spatial_dropout(self.dropout, train) if self.dropout else None
    out = x
    for rate in self.dilations:
      b = conv(True, rate, self.dtype, f'conv3x1_2{rate}')(y)
      b = conv(False, rate, self.dtype, f'conv1x3_2{rate}')(nn.relu(b))
      if shared_bn is not None:
        b = shared_bn(b)
      if drop is not None:
        b = drop(b)
      out = out + b
    return nn.relu(out)

  def _fused(self, x: jax.Array) -> jax.Array:
    """BN-folded inference in `native_kernels.conv_kx1` calls: each branch's last
    convolution adds itself to the running sum, the last one applies the ReLU."""
    c = x.shape[-1]
    conv = lambda name, vertical: _ConvParams(c, (3, 1) if vertical else (1, 3), name=name)(c)
    y = native_kernels.conv_kx1(x, *conv('conv3x1_1', True), vertical=True, relu=True)
    y = native_kernels.conv_kx1(y, *conv('conv1x3_1', False), vertical=False, relu=True)
    out = x
    for i, rate in enumerate(self.dilations):
      b = native_kernels.conv_kx1(y, *conv(f'conv3x1_2{rate}', True), vertical=True,
                                  dilation=rate, relu=True)
      out = native_kernels.conv_kx1(b, *conv(f'conv1x3_2{rate}', False), vertical=False,
                                    dilation=rate, residual=out,
                                    relu=i == len(self.dilations) - 1)
    return out


class UpsamplerBlock(nn.Module):
  """3x3 stride-2 transposed conv (PyTorch padding=1, output_padding=1), BN, ReLU."""
  features: int
  norm: ModuleDef | None
  dtype: Dtype | None = None
  native: bool = False

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = ConvTranspose2x(self.features, 3, padding=1, dtype=self.dtype, native=self.native,
                        name='conv')(x)
    return nn.relu(_maybe_norm(self.norm, y, 'bn'))


class Encoder(nn.Module):
  """initial_block | 3 FCU(16, k3) | down 64 | 2 FCU(64, k5) | down 128 | 3 PFCU(128)."""
  norm: ModuleDef | None
  dtype: Dtype | None = None
  use_dropout: bool = True
  native: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fcu_drop = ENCODER_FCU_DROPOUT if self.use_dropout else 0.0
    fcu = functools.partial(FCU, norm=self.norm, dtype=self.dtype, native=self.native)
    down = functools.partial(DownsamplerBlock, norm=self.norm, dtype=self.dtype,
                             native=self.native)
    x = down(16, name='initial_block')(x)
    pfcu = functools.partial(PFCU, PFCU_DROPOUT if self.use_dropout else 0.0, self.norm,
                             dtype=self.dtype, native=self.native)
    layers = ([functools.partial(fcu, 3, fcu_drop)] * 3 + [functools.partial(down, 64)]
              + [functools.partial(fcu, 5, fcu_drop)] * 2
              + [functools.partial(down, 128)] + [pfcu] * 3)
    return _run_layers(layers, x, train)


class Decoder(nn.Module):
  """up 64 | 2 FCU(64, k5) | up 16 | 2 FCU(16, k3) | 2x2 stride-2 transposed conv."""
  num_classes: int
  norm: ModuleDef | None
  dtype: Dtype | None = None
  native: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fcu = functools.partial(FCU, dropout=0.0, norm=self.norm, dtype=self.dtype,
                            native=self.native)
    up = functools.partial(UpsamplerBlock, norm=self.norm, dtype=self.dtype, native=self.native)
    layers = ([functools.partial(up, 64)] + [functools.partial(fcu, 5)] * 2
              + [functools.partial(up, 16)] + [functools.partial(fcu, 3)] * 2)
    x = _run_layers(layers, x, train)
    return ConvTranspose2x(self.num_classes, 2, padding=0, dtype=self.dtype,
                           native=self.native, name='output_conv')(x)


def _run_layers(factories: Sequence[ModuleDef], x: jax.Array, train: bool) -> jax.Array:
  """Build and apply a stack named `layers_i`, like the original's `nn.ModuleList`."""
  for i, make in enumerate(factories):
    layer = make(name=f'layers_{i}')
    x = layer(x, train) if isinstance(layer, (FCU, PFCU)) else layer(x)
  return x


class ESNet(nn.Module):
  """ESNet for `num_classes`-way segmentation.

  `apply(variables, x, train=False, encoder_only=False)` maps float images
  (N, H, W, 3), H and W multiples of 8, to logits (N, H, W, num_classes) in
  float32; `encoder_only=True` returns the encoder's 1x1 head at 1/8 resolution
  (the original's `encoder_output_conv`, used for encoder pre-training).
  `dtype=jnp.bfloat16` computes in bfloat16 with float32 parameters;
  `use_dropout=False` turns the original's spatial dropout off.
  `native_kernels=True` (only where `esnet_jax.native_kernels.available()`)
  computes float32 layers with that module's CPU kernels: the factorised
  convolutions (fused units in BN-folded inference) and the output layer, and
  in training also the kernel gradients of the strided and transposed
  convolutions and BatchNorm (`NativeBatchNorm`). The same function, faster on
  CPU. Leave it False for anything exported.
  """
  num_classes: int = 19
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-3
  bn_folded: bool = False
  use_dropout: bool = True
  native_kernels: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False,
               encoder_only: bool = False) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'ESNet expects images of shape (N, H, W, 3); got {x.shape}.')
    if x.shape[1] % 8 or x.shape[2] % 8:
      raise ValueError(
          f'ESNet needs H and W that are multiples of 8 (three stride-2 stages); got '
          f'H={x.shape[1]}, W={x.shape[2]}. Pad or resize the input, or use '
          f'esnet_jax.inference.Segmenter, which pads and crops back.')
    if self.bn_folded and train:
      raise ValueError('BN-folded parameters are for inference only; train=False.')
    native_norm = self.native_kernels and jnp.dtype(self.dtype) == jnp.float32
    norm = None if self.bn_folded else functools.partial(
        NativeBatchNorm if native_norm else nn.BatchNorm, use_running_average=not train,
        momentum=self.bn_momentum, epsilon=self.bn_epsilon, dtype=self.dtype,
        axis_name=self.bn_axis_name)
    x = x.astype(self.dtype)
    features = Encoder(norm, self.dtype, self.use_dropout, self.native_kernels,
                       name='encoder')(x, train)
    head = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='encoder_output_conv')
    if encoder_only:
      return head(features).astype(jnp.float32)
    if self.is_initializing():
      head(features)  # Create the encoder-only head's parameters too.
    logits = Decoder(self.num_classes, norm, self.dtype, self.native_kernels,
                     name='decoder')(features, train)
    return logits.astype(jnp.float32)
