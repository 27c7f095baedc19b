"""The CPU kernels as JAX functions, each beside its XLA reference.

Every public function here is `jax.lax.platform_dependent`: a program lowered
for the CPU calls the compiled kernel (`cpu/kernels.cc`, through XLA's FFI), one
lowered for any other platform the XLA reference, the same function. So a
model built with these parts and exported or run for a GPU holds no custom
call of this package. The differentiable ones (`factorized_conv`, `conv`,
`upsample16`, `batch_norm_train`) carry `jax.custom_vjp`s whose gradients use
the kernels too. Callers make sure `build.available()` before using them.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.kernels import build

Padding = tuple[tuple[int, int], tuple[int, int]]


def _on_cpu(native, reference, *args):
  """`native(*args)` in programs lowered for the CPU, `reference(*args)` elsewhere."""
  return jax.lax.platform_dependent(*args, cpu=native, default=reference)


def _xla_conv(
    x: jax.Array,
    kernel: jax.Array,
    padding: Padding,
    dilation: tuple[int, int] = (1, 1),
    strides: tuple[int, int] = (1, 1),
) -> jax.Array:
  return jax.lax.conv_general_dilated(
      x, kernel, strides, padding, rhs_dilation=dilation, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )


def _factorized_padding(kernel: jax.Array, vertical: bool, dilation: int) -> Padding:
  pad = ((kernel.shape[0] if vertical else kernel.shape[1]) - 1) // 2 * dilation
  return ((pad, pad), (0, 0)) if vertical else ((0, 0), (pad, pad))


def _factorized_dilation(vertical: bool, dilation: int) -> tuple[int, int]:
  return (dilation, 1) if vertical else (1, dilation)


# --- conv_kx1: the factorised convolution with its epilogue (value only) -------------------


def conv_kx1_reference(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    *,
    vertical: bool,
    dilation: int = 1,
    relu: bool = False,
    residual: jax.Array | None = None,
) -> jax.Array:
  """relu?(conv(x, kernel) + bias (+ residual)) with XLA's convolution."""
  y = (
      _xla_conv(
          x,
          kernel,
          _factorized_padding(kernel, vertical, dilation),
          _factorized_dilation(vertical, dilation),
      )
      + bias
  )
  if residual is not None:
    y = y + residual
  return jax.nn.relu(y) if relu else y


def _conv_kx1_native(x, kernel, bias, residual, *, vertical, dilation, relu):
  taps = kernel.shape[0] if vertical else kernel.shape[1]
  cin, cout = kernel.shape[-2:]
  call = jax.ffi.ffi_call(build.CONV_KX1, jax.ShapeDtypeStruct((*x.shape[:-1], cout), x.dtype))
  return call(
      x,
      kernel.reshape(taps, cin, cout),
      bias,
      x if residual is None else residual,
      vertical=np.int64(vertical),
      dilation=np.int64(dilation),
      relu=np.int64(relu),
      has_res=np.int64(residual is not None),
      threads=np.int64(build.threads()),
  )


def conv_kx1(
    x: jax.Array,
    kernel: jax.Array,
    bias: jax.Array,
    *,
    vertical: bool,
    dilation: int = 1,
    relu: bool = False,
    residual: jax.Array | None = None,
) -> jax.Array:
  """relu?(conv(x, kernel) + bias (+ residual)) for NHWC float32 x and a factorised kernel.

  `kernel` is a flax conv kernel of shape (k, 1, Cin, Cout) (`vertical`) or (1, k,
  Cin, Cout), Cout a multiple of 16; 'same' padding, like the original's. Not
  differentiable (BN-folded inference); `factorized_conv` is.
  """
  native = functools.partial(_conv_kx1_native, vertical=vertical, dilation=dilation, relu=relu)
  reference = lambda x, k, b, r: conv_kx1_reference(
      x, k, b, vertical=vertical, dilation=dilation, relu=relu, residual=r
  )
  return _on_cpu(native, reference, x, kernel, bias, residual)


def _native_value(kernel: jax.Array) -> bool:
  """Whether the kernel computes the value and the input gradient (both channel counts
  multiples of 16; XLA's convolution otherwise)."""
  return kernel.shape[-2] % 16 == 0 and kernel.shape[-1] % 16 == 0


# --- factorized_conv: differentiable factorised convolution (training) ---------------------


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _factorized_conv_native(x, kernel, bias, vertical, dilation):
  if _native_value(kernel):
    return _conv_kx1_native(x, kernel, bias, None, vertical=vertical, dilation=dilation, relu=False)
  return conv_kx1_reference(x, kernel, bias, vertical=vertical, dilation=dilation)


def _factorized_conv_fwd(x, kernel, bias, vertical, dilation):
  return _factorized_conv_native(x, kernel, bias, vertical, dilation), (x, kernel)


def _factorized_conv_bwd(vertical, dilation, saved, dy):
  x, kernel = saved
  taps = kernel.shape[0] if vertical else kernel.shape[1]
  padding = _factorized_padding(kernel, vertical, dilation)
  dilations = _factorized_dilation(vertical, dilation)
  if _native_value(kernel):
    cin, cout = kernel.shape[-2:]
    mirrored = jnp.flip(kernel.reshape(taps, cin, cout), 0).transpose(0, 2, 1)
    dx = _conv_kx1_native(
        dy,
        mirrored.reshape(*kernel.shape[:2], cout, cin),
        jnp.zeros((cin,), dy.dtype),
        None,
        vertical=vertical,
        dilation=dilation,
        relu=False,
    )
  else:
    _, transpose = jax.vjp(lambda v: _xla_conv(v, kernel, padding, dilations), x)
    (dx,) = transpose(dy)
  dw, db = _conv_wgrad_native(
      x, dy, kernel.shape[:2], dilation=dilations, offset=(-padding[0][0], -padding[1][0])
  )
  return dx, dw, db


_factorized_conv_native.defvjp(_factorized_conv_fwd, _factorized_conv_bwd)


def factorized_conv(
    x: jax.Array, kernel: jax.Array, bias: jax.Array, vertical: bool, dilation: int = 1
) -> jax.Array:
  """conv(x, kernel) + bias, kx1 or 1xk with 'same' padding; differentiable.

  For NHWC float32 x; `kernel` is a flax conv kernel, (k, 1, Cin, Cout)
  (`vertical`) or (1, k, Cin, Cout). On the CPU the value and the input gradient
  (the kernel mirrored and transposed) come from the `conv_kx1` kernel where
  both channel counts are multiples of 16, the kernel and bias gradients from
  `conv_wgrad`: XLA's kernel gradient transposes both operands to channel-major
  layouts, the larger part of an ESNet train step on CPU.
  """
  reference = lambda x, k, b: conv_kx1_reference(x, k, b, vertical=vertical, dilation=dilation)
  native = lambda x, k, b: _factorized_conv_native(x, k, b, vertical, dilation)
  return _on_cpu(native, reference, x, kernel, bias)


# --- conv: any convolution, native kernel gradient (strided and per-phase convolutions) ----


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_native(x, kernel, padding, strides):
  return _xla_conv(x, kernel, padding, strides=strides)


def _conv_fwd(x, kernel, padding, strides):
  return _xla_conv(x, kernel, padding, strides=strides), (x, kernel)


def _conv_bwd(padding, strides, saved, dy):
  x, kernel = saved
  _, transpose = jax.vjp(lambda v: _xla_conv(v, kernel, padding, strides=strides), x)
  (dx,) = transpose(dy)
  dw, _ = _conv_wgrad_native(
      x, dy, kernel.shape[:2], strides=strides, offset=(-padding[0][0], -padding[1][0])
  )
  return dx, dw


_conv_native.defvjp(_conv_fwd, _conv_bwd)


def conv(
    x: jax.Array, kernel: jax.Array, padding: Padding, strides: tuple[int, int] = (1, 1)
) -> jax.Array:
  """NHWC convolution (HWIO kernel, explicit padding, strides) without bias.

  XLA computes the value and the input gradient; on the CPU the kernel gradient
  comes from `conv_wgrad` (output channels a multiple of 16).
  """
  reference = lambda x, k: _xla_conv(x, k, padding, strides=strides)
  native = lambda x, k: _conv_native(x, k, padding, strides)
  return _on_cpu(native, reference, x, kernel)


def _conv_wgrad_native(x, dy, taps, *, strides=(1, 1), dilation=(1, 1), offset=(0, 0)):
  cin, cout = x.shape[-1], dy.shape[-1]
  call = jax.ffi.ffi_call(
      build.CONV_WGRAD,
      (jax.ShapeDtypeStruct((*taps, cin, cout), x.dtype), jax.ShapeDtypeStruct((cout,), x.dtype)),
  )
  return call(
      x,
      dy,
      stride_y=np.int64(strides[0]),
      stride_x=np.int64(strides[1]),
      dil_y=np.int64(dilation[0]),
      dil_x=np.int64(dilation[1]),
      off_y=np.int64(offset[0]),
      off_x=np.int64(offset[1]),
      threads=np.int64(build.threads()),
  )


def conv_wgrad_reference(
    x: jax.Array,
    dy: jax.Array,
    taps: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    offset: tuple[int, int] = (0, 0),
) -> tuple[jax.Array, jax.Array]:
  """`conv_wgrad` by differentiating XLA's convolution."""
  cin, cout = x.shape[-1], dy.shape[-1]
  out_h, out_w = dy.shape[1:3]
  padding = tuple(
      (-o, (t - 1) * d + (n - 1) * s + o - (size - 1))
      for o, t, d, n, s, size in zip(offset, taps, dilation, (out_h, out_w), strides, x.shape[1:3])
  )
  kernel = jnp.zeros((*taps, cin, cout), x.dtype)
  _, vjp = jax.vjp(lambda k: _xla_conv(x, k, padding, dilation, strides), kernel)
  return vjp(dy)[0], jnp.sum(dy, axis=(0, 1, 2))


def conv_wgrad(
    x: jax.Array,
    dy: jax.Array,
    taps: tuple[int, int],
    *,
    strides: tuple[int, int] = (1, 1),
    dilation: tuple[int, int] = (1, 1),
    offset: tuple[int, int] = (0, 0),
) -> tuple[jax.Array, jax.Array]:
  """Kernel gradient, (*taps, Cin, Cout), and bias gradient of a convolution.

  x is its input (N, HI, WI, Cin), dy its output's gradient (N, H, W, Cout),
  Cout a multiple of 16. Kernel tap (0, 0) reads input pixel
  (h * strides[0] + offset[0], w * strides[1] + offset[1]) for output pixel
  (h, w) (so offset is minus the leading padding), tap (i, j) that plus
  (i * dilation[0], j * dilation[1]); pixels outside x read zeros.
  """
  kw = dict(strides=strides, dilation=dilation, offset=offset)
  return _on_cpu(
      lambda x, dy: _conv_wgrad_native(x, dy, taps, **kw),
      lambda x, dy: conv_wgrad_reference(x, dy, taps, **kw),
      x,
      dy,
  )


# --- batch_norm_train: training-mode BatchNorm with one-pass channel sums ------------------


def _channel_sums(
    target: str, a: jax.Array, x: jax.Array, mean: jax.Array
) -> tuple[jax.Array, jax.Array]:
  c = a.shape[-1]
  call = jax.ffi.ffi_call(target, (jax.ShapeDtypeStruct((c,), a.dtype),) * 2)
  return call(a, x, mean, threads=np.int64(build.threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm_native(x, scale, bias, epsilon, axis_name):
  return _batch_norm_fwd(x, scale, bias, epsilon, axis_name)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, axis_name):
  count = x.size // x.shape[-1]
  total, total_sq = _channel_sums(build.CHANNEL_MOMENTS, x, x, jnp.zeros((x.shape[-1],), x.dtype))
  moments = jnp.stack([total, total_sq]) / count
  if axis_name is not None:
    moments = jax.lax.pmean(moments, axis_name)
  mean, mean_sq = moments[0], moments[1]
  var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
  inv = jax.lax.rsqrt(var + epsilon)
  y = (x - mean) * (inv * scale) + bias
  return (y, mean, var), (x, scale, mean, inv)


def _batch_norm_bwd(epsilon, axis_name, saved, cotangents):
  del epsilon
  x, scale, mean, inv = saved
  dy = cotangents[0]
  count = x.size // x.shape[-1]
  sum_dy, sum_dy_xc = _channel_sums(build.CHANNEL_GRAD_SUMS, dy, x, mean)
  means = jnp.stack([sum_dy, sum_dy_xc]) / count
  if axis_name is not None:  # The statistics came from every replica's pixels.
    means = jax.lax.pmean(means, axis_name)
  dx = (inv * scale) * (dy - means[0] - (x - mean) * (jnp.square(inv) * means[1]))
  return dx, sum_dy_xc * inv, sum_dy


_batch_norm_native.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def batch_norm_train_reference(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """flax `nn.BatchNorm`'s training-mode function: (y, batch mean, batch variance)."""
  axes = tuple(range(x.ndim - 1))
  moments = jnp.stack([jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)])
  if axis_name is not None:
    moments = jax.lax.pmean(moments, axis_name)
  mean, mean_sq = moments[0], moments[1]
  var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
  y = (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias
  return y, jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


def batch_norm_train(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over all but the last axis: (y, batch mean, batch variance).

  flax `nn.BatchNorm`'s function (fast variance E[x^2] - E[x]^2 clipped at 0,
  statistics averaged over `axis_name` under pmap). On the CPU the per-channel
  sums of the statistics and of the gradient take one kernel pass each instead
  of XLA:CPU's reduce-window trees. For float32 x with a multiple of 16
  channels. The mean and variance carry no gradient.
  """
  return _on_cpu(
      lambda x, s, b: _batch_norm_native(x, s, b, epsilon, axis_name),
      lambda x, s, b: batch_norm_train_reference(x, s, b, epsilon, axis_name),
      x,
      scale,
      bias,
  )


# --- upsample16: the output layer's 2x2 stride-2 transposed convolution --------------------


def upsample16_reference(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """y[2m+a, 2n+b] = x[m, n] @ kernel[a, b] + bias, with XLA's operations."""
  n, h, w, _ = x.shape
  y = jnp.einsum('nhwc,abco->nhawbo', x, kernel)
  return y.reshape(n, 2 * h, 2 * w, kernel.shape[-1]) + bias


@jax.custom_vjp
def _upsample16_native(x, kernel, bias):
  n, h, w, _ = x.shape
  call = jax.ffi.ffi_call(
      build.UPSAMPLE16, jax.ShapeDtypeStruct((n, 2 * h, 2 * w, kernel.shape[-1]), x.dtype)
  )
  return call(x, kernel, bias, threads=np.int64(build.threads()))


def _upsample16_fwd(x, kernel, bias):
  return _upsample16_native(x, kernel, bias), (x, kernel)


def _upsample16_bwd(saved, dy):
  x, kernel = saved
  # y[2m+a, 2n+b] = x[m, n] @ kernel[a, b]: each input pixel meets a 2x2 block of dy.
  dx = _xla_conv(dy, kernel.transpose(0, 1, 3, 2), ((0, 0), (0, 0)), strides=(2, 2))
  # The kernel gradient with the roles swapped: dy is the strided side, x the 16 channels.
  dw_t, _ = _conv_wgrad_native(dy, x, (2, 2), strides=(2, 2))
  return dx, dw_t.transpose(0, 1, 3, 2), jnp.sum(dy, axis=(0, 1, 2))


_upsample16_native.defvjp(_upsample16_fwd, _upsample16_bwd)


def upsample16(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """PyTorch `ConvTranspose2d(16, out, 2, stride=2)` on NHWC float32 x: (N, 2H, 2W, out).

  `kernel` is (2, 2, 16, out) with scatter semantics (output pixel (2m+a, 2n+b)
  is x[m, n] @ kernel[a, b] + bias), out <= `build.MAX_UPSAMPLE_FEATURES`.
  Differentiable: the input gradient is XLA's stride-2 convolution of the
  output gradient, the kernel gradient `conv_wgrad`'s.
  """
  return _on_cpu(_upsample16_native, upsample16_reference, x, kernel, bias)
