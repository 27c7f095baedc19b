"""ESNet (Wang, Zhou, Wu 2019, arXiv:1906.09826) as Flax linen modules.

Layout, names and numerics follow the authors' PyTorch layer definitions so that
their state dicts convert one-to-one (see `esnet_jax.weights.convert`): module names mirror
the PyTorch attribute names (`encoder/layers_3/bn` is `encoder.layers.3.bn`).

Tensors are NHWC. BatchNorm uses eps 1e-3 and momentum 0.9 (PyTorch's 0.1) and
takes an `axis_name` for cross-replica statistics under `pmap`. With
`bn_folded=True` the network expects parameters produced by
`esnet_jax.model.folding.fold_batch_norm`: every BatchNorm is merged into the conv in
front of it, which removes the normalisation work from inference.

The blocks take their building blocks as factories (`conv`, `norm`,
`conv_transpose`, `fcu`, `pfcu`), the flax `examples/imagenet` way: the defaults
are plain Flax/XLA, and `esnet_jax.model.implementations` swaps in other
implementations of the same variables and function (compiled CPU kernels)
from outside.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

ModuleDef = Callable[..., nn.Module]
Dtype = Any

# Dropout rates of the original: encoder FCUs, PFCUs (decoder FCUs have none).
ENCODER_FCU_DROPOUT = 0.03
PFCU_DROPOUT = 0.3
PFCU_DILATIONS = (2, 5, 9)


# The network has three stride-2 stages: H and W of its input are multiples of this.
SIZE_MULTIPLE = 8


def spatial_dropout(rate: float, train: bool) -> nn.Dropout:
  """PyTorch `Dropout2d`: drops whole channels (mask shared over H and W)."""
  return nn.Dropout(rate, broadcast_dims=(1, 2), deterministic=not train)


def factorized_conv(
    conv: ModuleDef,
    features: int,
    kernel: int,
    vertical: bool,
    dilation: int,
    dtype: Dtype,
    name: str,
) -> nn.Module:
  """A kx1 (vertical) or 1xk convolution with 'same' padding, as in the original."""
  pad = (kernel - 1) // 2 * dilation
  if vertical:
    return conv(
        features,
        (kernel, 1),
        padding=((pad, pad), (0, 0)),
        kernel_dilation=(dilation, 1),
        dtype=dtype,
        name=name,
    )
  return conv(
      features,
      (1, kernel),
      padding=((0, 0), (pad, pad)),
      kernel_dilation=(1, dilation),
      dtype=dtype,
      name=name,
  )


def _maybe_norm(norm: ModuleDef | None, x: jax.Array, name: str) -> jax.Array:
  """BatchNorm, or nothing when the network runs on BN-folded parameters."""
  return x if norm is None else norm(name=name)(x)


def phase_taps(kernel: int, padding: int, phase: int) -> tuple[int, list[int]]:
  """The taps of one output phase of a stride-2 transposed convolution.

  Output pixel 2m+a of a stride-2 transposed convolution with padding p sums
  x[m+d] * w[j] over the kernel indices j with a + p - j even, d = (a + p - j) / 2.
  The offsets d of one phase are consecutive; returns the smallest one and the
  kernel index of each offset in increasing order.
  """
  taps = sorted(
      ((phase + padding - j) // 2, j) for j in range(kernel) if (phase + padding - j) % 2 == 0
  )
  return taps[0][0], [j for _, j in taps]


class ConvTranspose2x(nn.Module):
  """PyTorch `ConvTranspose2d(stride=2, padding, output_padding)` doubling H and W.

  The kernel is stored as (kH, kW, in, out) with PyTorch's scatter semantics
  (`y[2i - p + k] += x[i] * w[k]`). It is evaluated in sub-pixel form: each of
  the four output phases (row parity, column parity) is a small stride-1
  convolution with only that phase's taps (`phase_conv`), and the phases are
  interleaved. That is the same function as the input-dilated transposed
  convolution, with about half its multiply-adds for a 3x3 kernel (no zero
  taps) and a gradient several times cheaper on CPU.
  """

  features: int
  kernel_size: int
  padding: int
  dtype: Dtype | None = None

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    k = self.kernel_size
    kernel = self.param(
        'kernel', nn.initializers.lecun_normal(), (k, k, x.shape[-1], self.features), jnp.float32
    )
    bias = self.param('bias', nn.initializers.zeros, (self.features,), jnp.float32)
    return self.transpose(x, kernel, bias)

  def transpose(self, x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
    """The transposed convolution of x with the module's parameters."""
    dtype = self.dtype or x.dtype
    x = x.astype(dtype)
    k = self.kernel_size
    rows = []
    for a in (0, 1):
      d_y, taps_y = phase_taps(k, self.padding, a)
      row = []
      for b in (0, 1):
        d_x, taps_x = phase_taps(k, self.padding, b)
        sub = kernel[np.asarray(taps_y)[:, None], np.asarray(taps_x)[None, :]]
        padding = ((-d_y, d_y + len(taps_y) - 1), (-d_x, d_x + len(taps_x) - 1))
        row.append(self.phase_conv(x, sub.astype(dtype), padding))
      rows.append(jnp.stack(row, axis=3))  # (n, h, w, b, c)
    y = jnp.stack(rows, axis=2)  # (n, h, a, w, b, c)
    n, h, _, w, _, c = y.shape
    return y.reshape(n, 2 * h, 2 * w, c) + bias.astype(dtype)

  def phase_conv(
      self, x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]]
  ) -> jax.Array:
    """One output phase: a stride-1 convolution without bias."""
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=(1, 1),
        padding=padding,
        dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
    )


@jax.custom_vjp
def max_pool_2x2(x: jax.Array) -> jax.Array:
  """`nn.max_pool(x, (2, 2), strides=(2, 2))` of NHWC x with even H and W.

  Its gradient goes, as XLA's does, to the first largest pixel of each window in
  row-major order, bitwise alike, but as one elementwise pass: XLA:CPU's max-pool
  gradient (a variadic reduce-window over four index arrays, then a scatter) took
  about 33 ms for one downsampler of a 360x480, batch 4 train step, this 1-5 ms.
  """
  n, h, w, c = x.shape
  return jnp.max(x.reshape(n, h // 2, 2, w // 2, 2, c), axis=(2, 4))


def _max_pool_2x2_fwd(x: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
  y = max_pool_2x2(x)
  return y, (x, y)


def _max_pool_2x2_bwd(saved: tuple[jax.Array, jax.Array], dy: jax.Array) -> tuple[jax.Array]:
  x, y = saved
  n, h, w, c = x.shape
  windows = x.reshape(n, h // 2, 2, w // 2, 2, c)
  iota = functools.partial(jax.lax.broadcasted_iota, jnp.int8, windows.shape)
  position = 2 * iota(2) + iota(4)  # 0..3 in row-major order within each window
  spread = lambda a: a[:, :, None, :, None, :]
  first = jnp.min(jnp.where(windows == spread(y), position, jnp.int8(4)), axis=(2, 4))
  dx = jnp.where(position == spread(first), spread(dy), jnp.zeros((), dy.dtype))
  return (dx.reshape(n, h, w, c),)


max_pool_2x2.defvjp(_max_pool_2x2_fwd, _max_pool_2x2_bwd)


class DownsamplerBlock(nn.Module):
  """3x3 stride-2 conv to (features - in) channels beside a 2x2 max-pool, BN, ReLU."""

  features: int
  norm: ModuleDef | None
  dtype: Dtype | None = None
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    in_features = x.shape[-1]
    conv = self.conv(
        self.features - in_features,
        (3, 3),
        strides=(2, 2),
        padding=((1, 1), (1, 1)),
        dtype=self.dtype,
        name='conv',
    )(x)
    even = x.shape[1] % 2 == 0 and x.shape[2] % 2 == 0
    pool = max_pool_2x2(x) if even else nn.max_pool(x, (2, 2), strides=(2, 2))
    if self.norm is None:
      # Folded BN: the conv carries its share; the pooled channels keep an affine.
      scale = self.param('pool_scale', nn.initializers.ones, (in_features,), jnp.float32)
      shift = self.param('pool_bias', nn.initializers.zeros, (in_features,), jnp.float32)
      pool = pool * scale.astype(pool.dtype) + shift.astype(pool.dtype)
    y = jnp.concatenate([conv, pool.astype(conv.dtype)], axis=-1)
    return nn.relu(_maybe_norm(self.norm, y, 'bn'))


class FCU(nn.Module):
  """Factorized convolution unit: two residual (kx1, ReLU, 1xk, BN) pairs."""

  kernel_size: int
  dropout: float
  norm: ModuleDef | None
  dilation: int = 1
  dtype: Dtype | None = None
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(factorized_conv, self.conv, x.shape[-1], self.kernel_size)
    y = conv(True, 1, self.dtype, 'conv3x1_1')(x)
    y = conv(False, 1, self.dtype, 'conv1x3_1')(nn.relu(y))
    y = nn.relu(_maybe_norm(self.norm, y, 'bn1'))
    y = conv(True, self.dilation, self.dtype, 'conv3x1_2')(y)
    y = conv(False, self.dilation, self.dtype, 'conv1x3_2')(nn.relu(y))
    y = _maybe_norm(self.norm, y, 'bn2')
    if self.dropout:
      y = spatial_dropout(self.dropout, train)(y)
    return nn.relu(x + y)


class PFCU(nn.Module):
  """Parallel FCU: a factorized pair, then dilated branches sharing ONE BatchNorm."""

  dropout: float
  norm: ModuleDef | None
  dilations: Sequence[int] = PFCU_DILATIONS
  dtype: Dtype | None = None
  conv: ModuleDef = nn.Conv

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    conv = functools.partial(factorized_conv, self.conv, x.shape[-1], 3)
    y = conv(True, 1, self.dtype, 'conv3x1_1')(x)
    y = conv(False, 1, self.dtype, 'conv1x3_1')(nn.relu(y))
    y = nn.relu(_maybe_norm(self.norm, y, 'bn1'))
    # The original applies the same `bn2` (and dropout module) to every branch.
    shared_bn = None if self.norm is None else self.norm(name='bn2')
    drop = spatial_dropout(self.dropout, train) if self.dropout else None
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


class UpsamplerBlock(nn.Module):
  """3x3 stride-2 transposed conv (PyTorch padding=1, output_padding=1), BN, ReLU."""

  features: int
  norm: ModuleDef | None
  dtype: Dtype | None = None
  conv_transpose: ModuleDef = ConvTranspose2x

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    y = self.conv_transpose(self.features, 3, padding=1, dtype=self.dtype, name='conv')(x)
    return nn.relu(_maybe_norm(self.norm, y, 'bn'))


class Encoder(nn.Module):
  """initial_block | 3 FCU(16, k3) | down 64 | 2 FCU(64, k5) | down 128 | 3 PFCU(128)."""

  norm: ModuleDef | None
  dtype: Dtype | None = None
  use_dropout: bool = True
  conv: ModuleDef = nn.Conv
  fcu: ModuleDef = FCU
  pfcu: ModuleDef = PFCU

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fcu_drop = ENCODER_FCU_DROPOUT if self.use_dropout else 0.0
    fcu = functools.partial(self.fcu, norm=self.norm, dtype=self.dtype, conv=self.conv)
    down = functools.partial(DownsamplerBlock, norm=self.norm, dtype=self.dtype, conv=self.conv)
    x = down(16, name='initial_block')(x)
    pfcu = functools.partial(
        self.pfcu,
        PFCU_DROPOUT if self.use_dropout else 0.0,
        self.norm,
        dtype=self.dtype,
        conv=self.conv,
    )
    layers = (
        [(functools.partial(fcu, 3, fcu_drop), True)] * 3
        + [(functools.partial(down, 64), False)]
        + [(functools.partial(fcu, 5, fcu_drop), True)] * 2
        + [(functools.partial(down, 128), False)]
        + [(pfcu, True)] * 3
    )
    return _run_layers(layers, x, train)


class Decoder(nn.Module):
  """up 64 | 2 FCU(64, k5) | up 16 | 2 FCU(16, k3) | 2x2 stride-2 transposed conv."""

  num_classes: int
  norm: ModuleDef | None
  dtype: Dtype | None = None
  conv: ModuleDef = nn.Conv
  conv_transpose: ModuleDef = ConvTranspose2x
  fcu: ModuleDef = FCU

  @nn.compact
  def __call__(self, x: jax.Array, train: bool) -> jax.Array:
    fcu = functools.partial(self.fcu, dropout=0.0, norm=self.norm, dtype=self.dtype, conv=self.conv)
    up = functools.partial(
        UpsamplerBlock, norm=self.norm, dtype=self.dtype, conv_transpose=self.conv_transpose
    )
    layers = (
        [(functools.partial(up, 64), False)]
        + [(functools.partial(fcu, 5), True)] * 2
        + [(functools.partial(up, 16), False)]
        + [(functools.partial(fcu, 3), True)] * 2
    )
    x = _run_layers(layers, x, train)
    return self.conv_transpose(
        self.num_classes, 2, padding=0, dtype=self.dtype, name='output_conv'
    )(x)


def _run_layers(
    factories: Sequence[tuple[ModuleDef, bool]], x: jax.Array, train: bool
) -> jax.Array:
  """Build and apply a stack named `layers_i`, like the original's `nn.ModuleList`;
  each factory comes with whether its module takes `train`."""
  for i, (make, takes_train) in enumerate(factories):
    layer = make(name=f'layers_{i}')
    x = layer(x, train) if takes_train else layer(x)
  return x


class ESNet(nn.Module):
  """ESNet for `num_classes`-way segmentation.

  `apply(variables, x, train=False, encoder_only=False)` maps float images
  (N, H, W, 3), H and W multiples of 8, to logits (N, H, W, num_classes) in
  float32; `encoder_only=True` returns the encoder's 1x1 head at 1/8 resolution
  (the original's `encoder_output_conv`, used for encoder pre-training).
  `dtype=jnp.bfloat16` computes in bfloat16 with float32 parameters;
  `use_dropout=False` turns the original's spatial dropout off.

  `conv`, `norm`, `conv_transpose`, `fcu` and `pfcu` are the building blocks
  (defaults: Flax's and this module's); other implementations with the same
  variables and function plug in here (`esnet_jax.model.implementations.esnet`).
  """

  num_classes: int = 19
  dtype: Dtype = jnp.float32
  bn_axis_name: str | None = None
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-3
  bn_folded: bool = False
  use_dropout: bool = True
  conv: ModuleDef = nn.Conv
  norm: ModuleDef = nn.BatchNorm
  conv_transpose: ModuleDef = ConvTranspose2x
  fcu: ModuleDef = FCU
  pfcu: ModuleDef = PFCU

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False, encoder_only: bool = False) -> jax.Array:
    if x.ndim != 4 or x.shape[-1] != 3:
      raise ValueError(f'ESNet expects images of shape (N, H, W, 3); got {x.shape}.')
    if x.shape[1] % SIZE_MULTIPLE or x.shape[2] % SIZE_MULTIPLE:
      raise ValueError(
          f'ESNet needs H and W that are multiples of 8 (three stride-2 stages); got '
          f'H={x.shape[1]}, W={x.shape[2]}. Pad or resize the input, or use '
          f'esnet_jax.inference.segmenter.Segmenter, which pads and crops back.'
      )
    if self.bn_folded and train:
      raise ValueError('BN-folded parameters are for inference only; train=False.')
    norm = (
        None
        if self.bn_folded
        else functools.partial(
            self.norm,
            use_running_average=not train,
            momentum=self.bn_momentum,
            epsilon=self.bn_epsilon,
            dtype=self.dtype,
            axis_name=self.bn_axis_name,
        )
    )
    x = x.astype(self.dtype)
    features = Encoder(
        norm,
        self.dtype,
        self.use_dropout,
        conv=self.conv,
        fcu=self.fcu,
        pfcu=self.pfcu,
        name='encoder',
    )(x, train)
    head = nn.Conv(self.num_classes, (1, 1), dtype=self.dtype, name='encoder_output_conv')
    if encoder_only:
      return head(features).astype(jnp.float32)
    if self.is_initializing():
      head(features)  # Create the encoder-only head's parameters too.
    logits = Decoder(
        self.num_classes,
        norm,
        self.dtype,
        conv=self.conv,
        conv_transpose=self.conv_transpose,
        fcu=self.fcu,
        name='decoder',
    )(features, train)
    return logits.astype(jnp.float32)


def num_classes_of(variables: Mapping[str, Any]) -> int:
  """Number of classes of ESNet's Flax variables (from the output conv's bias)."""
  return int(np.shape(variables['params']['decoder']['output_conv']['bias'])[0])
