"""The CPU kernels as JAX functions, each beside its XLA reference.

Every public function here is `jax.lax.platform_dependent`: a program lowered
for the CPU calls the compiled kernel (`cpu/kernels.cc`, through XLA's FFI), one
lowered for any other platform the XLA reference, the same function. So a
model built with these parts and exported or run for a GPU holds no custom
call of this package. The differentiable ones (`factorized_conv`, `conv`,
`upsample16`, `batch_norm_train`) carry `jax.custom_vjp`s whose gradients use
the kernels too. Callers make sure `build.available()` before using them.

Activations are float32 or bfloat16; parameters stay float32 (the master weights) and
their gradients come back float32. In bfloat16 the factorised convolution multiplies
with the CPU's bf16 dot products (`build.bf16_kernels()`, needed for bf16 here),
accumulating in float32 and rounding once per output; the weight gradient, BatchNorm's
sums and the output layer read bfloat16 and compute in float32.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.kernels import build

Padding = tuple[tuple[int, int], tuple[int, int]]


def _bf16(x: jax.Array) -> bool:
  return x.dtype == jnp.bfloat16


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
      x,
      kernel.astype(x.dtype),
      strides,
      padding,
      rhs_dilation=dilation,
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
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
  y = _xla_conv(
      x,
      kernel,
      _factorized_padding(kernel, vertical, dilation),
      _factorized_dilation(vertical, dilation),
  ) + bias.astype(x.dtype)
  if residual is not None:
    y = y + residual
  return jax.nn.relu(y) if relu else y


def _conv_kx1_native(x, kernel, bias, residual, *, vertical, dilation, relu):
  taps = kernel.shape[0] if vertical else kernel.shape[1]
  cin, cout = kernel.shape[-2:]
  target = build.CONV_KX1_BF16 if _bf16(x) else build.CONV_KX1
  call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((*x.shape[:-1], cout), x.dtype))
  return call(
      x,
      kernel.reshape(taps, cin, cout).astype(jnp.float32),
      bias.astype(jnp.float32),
      x if residual is None else residual.astype(x.dtype),
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
  """relu?(conv(x, kernel) + bias (+ residual)) for NHWC x and a factorised kernel.

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
        jnp.zeros((cin,), jnp.float32),
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

  For NHWC x (float32 or bfloat16); `kernel` is a flax conv kernel, (k, 1, Cin, Cout)
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


def _conv2d_native(x, kernel, bias, padding, strides):
  """The `conv2d` kernel in bfloat16 where it applies (Cout a multiple of 16, Cin even),
  else XLA's convolution: XLA:CPU's bfloat16 convolutions are slow, its float32 ones
  measured level with the kernel (and a step ahead of its AVX2 build). `bias` may be None."""
  (ky, kx, cin, cout), (sy, sx) = kernel.shape, strides
  if cout % 16 or not _bf16(x) or cin % 2:
    y = _xla_conv(x, kernel, padding, strides=strides)
    return y if bias is None else y + bias.astype(x.dtype)
  n, hi, wi, _ = x.shape
  ho = (hi + sum(padding[0]) - ky) // sy + 1
  wo = (wi + sum(padding[1]) - kx) // sx + 1
  target = build.CONV2D_BF16 if _bf16(x) else build.CONV2D
  call = jax.ffi.ffi_call(target, jax.ShapeDtypeStruct((n, ho, wo, cout), x.dtype))
  return call(
      x,
      kernel.astype(jnp.float32),
      jnp.zeros((cout,), jnp.float32) if bias is None else bias.astype(jnp.float32),
      stride_y=np.int64(sy),
      stride_x=np.int64(sx),
      off_y=np.int64(-padding[0][0]),
      off_x=np.int64(-padding[1][0]),
      threads=np.int64(build.threads()),
  )


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _conv_native(x, kernel, bias, padding, strides):
  return _conv2d_native(x, kernel, bias, padding, strides)


def _conv_fwd(x, kernel, bias, padding, strides):
  return _conv2d_native(x, kernel, bias, padding, strides), (x, kernel, bias)


def _conv_dx(x, kernel, padding, strides, dy):
  """The input gradient of `conv`: XLA's transpose, or in bfloat16 for stride 2 (the
  downsamplers) the transposed convolution by `conv_phases`: XLA:CPU's bf16 input-dilated
  convolution is slow (25 ms of an 800 ms train step at 360x480, batch 4)."""
  cin, cout = kernel.shape[2:]
  n, h, w, _ = x.shape
  if (
      _bf16(x)
      and strides == (2, 2)
      and (h, w) == (2 * dy.shape[1], 2 * dy.shape[2])
      and cin % 16 == 0
      and cout % 2 == 0
  ):
    # x's pixel 2o + t - p fed output o through tap t: the scatter of a transposed
    # convolution with padding p, whose input is dy and whose kernel maps Cout to Cin.
    kernels, paddings = transposed_phases(
        jnp.swapaxes(kernel, 2, 3), (padding[0][0], padding[1][0])
    )
    return _conv_phases_value(dy, kernels, paddings, jnp.zeros((cin,), jnp.float32))
  _, transpose = jax.vjp(lambda v: _xla_conv(v, kernel, padding, strides=strides), x)
  return transpose(dy)[0]


def _conv_bwd(padding, strides, saved, dy):
  x, kernel, bias = saved
  dx = _conv_dx(x, kernel, padding, strides, dy)
  # The kernel's bias gradient comes with its kernel gradient, summed in float32 (XLA's
  # reduction trees over dy took 7-8 ms a layer in a 360x480, batch 4 step).
  dw, db = _conv_wgrad_native(
      x, dy, kernel.shape[:2], strides=strides, offset=(-padding[0][0], -padding[1][0])
  )
  return dx, dw.astype(kernel.dtype), None if bias is None else db.astype(bias.dtype)


_conv_native.defvjp(_conv_fwd, _conv_bwd)


def conv(
    x: jax.Array,
    kernel: jax.Array,
    padding: Padding,
    strides: tuple[int, int] = (1, 1),
    bias: jax.Array | None = None,
) -> jax.Array:
  """NHWC convolution (HWIO kernel, explicit padding, strides), plus `bias` if given.

  On the CPU the kernel and bias gradients come from `conv_wgrad` (output channels a
  multiple of 16), in bfloat16 the value from the `conv2d` kernel too; XLA computes the
  rest. In bfloat16 other channel counts (ESNet's first layer: 3 in, 13 out) are
  zero-padded to the kernels' multiples (Cin even, Cout of 16) and sliced back: XLA:CPU's
  bf16 convolution of that layer took 9 ms of a 135 ms inference at 1024x512.
  """
  cin, cout = kernel.shape[2:]
  if _bf16(x) and (cin % 2 or cout % 16):
    x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (0, cin % 2)))
    kernel = jnp.pad(kernel, ((0, 0), (0, 0), (0, cin % 2), (0, -cout % 16)))
    bias = None if bias is None else jnp.pad(bias, (0, -cout % 16))
    return conv(x, kernel, padding, strides, bias)[..., :cout]

  def reference(x, k, b):
    y = _xla_conv(x, k, padding, strides=strides)
    return y if b is None else y + b.astype(x.dtype)

  native = lambda x, k, b: _conv_native(x, k, b, padding, strides)
  return _on_cpu(native, reference, x, kernel, bias)


# --- conv_phases: a stride-2 transposed convolution's four phases, written interleaved ----


def _phase_taps(size: int, padding: int, phase: int) -> tuple[int, list[int]]:
  # Output pixel 2m+a sums x[m+d] * w[j] over the taps j with a + p - j even,
  # d = (a + p - j) / 2: the smallest d, and each d's tap in increasing order.
  taps = sorted(
      ((phase + padding - j) // 2, j) for j in range(size) if (phase + padding - j) % 2 == 0
  )
  return taps[0][0], [j for _, j in taps]


def transposed_phases(
    kernel: jax.Array, padding: tuple[int, int]
) -> tuple[tuple[jax.Array, ...], tuple[Padding, ...]]:
  """A stride-2 transposed convolution as `conv_phases` takes it: the kernels and paddings
  of its four output phases (a, b), in order 2a + b.

  `kernel` is (kH, kW, Cin, Cout) with PyTorch's scatter semantics, y[2i - p + k] +=
  x[i] * w[k] along each axis, `padding` (p_y, p_x).
  """
  kernels, paddings = [], []
  for a in (0, 1):
    d_y, taps_y = _phase_taps(kernel.shape[0], padding[0], a)
    for b in (0, 1):
      d_x, taps_x = _phase_taps(kernel.shape[1], padding[1], b)
      kernels.append(kernel[np.asarray(taps_y)[:, None], np.asarray(taps_x)[None, :]])
      paddings.append(((-d_y, d_y + len(taps_y) - 1), (-d_x, d_x + len(taps_x) - 1)))
  return tuple(kernels), tuple(paddings)


def _phases_as_strided_conv(
    kernels: tuple[jax.Array, ...], paddings: tuple[Padding, ...]
) -> tuple[jax.Array, Padding]:
  """The stride-2 convolution of dy (N, 2H, 2W, Cout) that is `conv_phases`' input
  gradient: its kernel (taps, Cout, Cin) and padding.

  Phase (a, b)'s tap (s, t) read x[m + d_a + s, n + d_b + t] into y[2m + a, 2n + b], so
  dx[i, j] takes dy[2i + r, 2j + q] through it, r = a - 2 (d_a + s), q likewise: one
  offset per tap of all four phases.
  """
  taps = {}
  for i, (kernel, padding) in enumerate(zip(kernels, paddings)):
    a, b, d_y, d_x = i // 2, i % 2, -padding[0][0], -padding[1][0]
    for s in range(kernel.shape[0]):
      for t in range(kernel.shape[1]):
        taps[a - 2 * (d_y + s), b - 2 * (d_x + t)] = kernel[s, t].T
  r0, q0 = min(r for r, _ in taps), min(q for _, q in taps)
  size_y, size_x = max(r for r, _ in taps) - r0 + 1, max(q for _, q in taps) - q0 + 1
  zero = jnp.zeros_like(next(iter(taps.values())))
  rows = [
      jnp.stack([taps.get((r0 + u, q0 + v), zero) for v in range(size_x)]) for u in range(size_y)
  ]
  # Output H from input 2H: low + high = size - 2.
  return jnp.stack(rows), ((-r0, size_y - 2 + r0), (-q0, size_x - 2 + q0))


def conv_phases_reference(
    x: jax.Array, kernels: tuple[jax.Array, ...], paddings: tuple[Padding, ...], bias: jax.Array
) -> jax.Array:
  """y[:, a::2, b::2] = conv(x, kernels[2a + b], paddings[2a + b]) + bias, with XLA's ops."""
  phases = [_xla_conv(x, k, p) for k, p in zip(kernels, paddings)]
  rows = [jnp.stack(phases[2 * a : 2 * a + 2], axis=3) for a in (0, 1)]  # (n, h, w, b, c)
  y = jnp.stack(rows, axis=2)  # (n, h, a, w, b, c)
  n, h, _, w, _, c = y.shape
  return y.reshape(n, 2 * h, 2 * w, c) + bias.astype(x.dtype)


def _conv_phases_value(x, kernels, paddings, bias):
  n, h, w, _ = x.shape
  cout = kernels[0].shape[-1]
  target = build.CONV2D_PHASE_BF16 if _bf16(x) else build.CONV2D_PHASE
  call = jax.ffi.ffi_call(
      target,
      jax.ShapeDtypeStruct((n, 2 * h, 2 * w, cout), x.dtype),
      input_output_aliases={3: 0},
  )
  y = jnp.zeros((n, 2 * h, 2 * w, cout), x.dtype)
  for i, (kernel, padding) in enumerate(zip(kernels, paddings)):
    y = call(
        x,
        kernel.astype(jnp.float32),
        bias.astype(jnp.float32),
        y,
        off_y=np.int64(-padding[0][0]),
        off_x=np.int64(-padding[1][0]),
        phase_y=np.int64(i // 2),
        phase_x=np.int64(i % 2),
        threads=np.int64(build.threads()),
    )
  return y


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _conv_phases_native(x, kernels, paddings, bias):
  return _conv_phases_value(x, kernels, paddings, bias)


def _conv_phases_fwd(x, kernels, paddings, bias):
  return _conv_phases_value(x, kernels, paddings, bias), (x, kernels)


def _conv_phases_bwd(paddings, saved, dy):
  x, kernels = saved
  # In bfloat16 the input gradient is one strided `conv2d` of dy; XLA:CPU's four bf16
  # phase transposes took 46 ms of an 800 ms train step (360x480, batch 4).
  strided = _bf16(x) and x.shape[-1] % 16 == 0 and dy.shape[-1] % 2 == 0
  if strided:
    kernel, padding = _phases_as_strided_conv(kernels, paddings)
    dx = _conv2d_native(dy, kernel, None, padding, (2, 2))
  else:
    dx = jnp.zeros(x.shape, jnp.float32)
  dws, db = [], 0.0
  for i, (kernel, padding) in enumerate(zip(kernels, paddings)):
    dy_phase = dy[:, i // 2 :: 2, i % 2 :: 2]
    if not strided:
      _, transpose = jax.vjp(lambda v: _xla_conv(v, kernel, padding), x)
      dx = dx + transpose(dy_phase)[0].astype(jnp.float32)
    dw, db_phase = _conv_wgrad_native(
        x, dy_phase, kernel.shape[:2], offset=(-padding[0][0], -padding[1][0])
    )
    dws.append(dw.astype(kernel.dtype))
    db = db + db_phase  # The phases' pixels partition dy's.
  return dx.astype(x.dtype), tuple(dws), db


_conv_phases_native.defvjp(_conv_phases_fwd, _conv_phases_bwd)


def conv_phases(
    x: jax.Array, kernels: tuple[jax.Array, ...], paddings: tuple[Padding, ...], bias: jax.Array
) -> jax.Array:
  """The four output phases of a stride-2 transposed convolution, interleaved:
  y[:, a::2, b::2] = conv(x, kernels[2a + b], paddings[2a + b]) + bias, y (N, 2H, 2W, Cout).

  Each phase is a stride-1 convolution whose output is x's size (`ConvTranspose2x`'s
  sub-pixel form). On the CPU the `conv2d` kernel writes each phase straight into its
  pixels of y, bias added (Cout a multiple of 16; Cin even in bfloat16): no interleave
  pass, which XLA:CPU runs slowly in bfloat16. Differentiable: the input gradient is
  XLA's, the kernel gradients `conv_wgrad`'s.
  """
  kernels, paddings = tuple(kernels), tuple(paddings)
  return _on_cpu(
      lambda x, k, b: _conv_phases_native(x, k, paddings, b),
      lambda x, k, b: conv_phases_reference(x, k, paddings, b),
      x,
      kernels,
      bias,
  )


def _conv_wgrad_native(x, dy, taps, *, strides=(1, 1), dilation=(1, 1), offset=(0, 0)):
  cin, cout = x.shape[-1], dy.shape[-1]
  call = jax.ffi.ffi_call(
      build.CONV_WGRAD_BF16 if _bf16(x) else build.CONV_WGRAD,
      (
          jax.ShapeDtypeStruct((*taps, cin, cout), jnp.float32),
          jax.ShapeDtypeStruct((cout,), jnp.float32),
      ),
  )
  return call(
      x,
      dy.astype(x.dtype),
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
  kernel = jnp.zeros((*taps, cin, cout), jnp.float32)
  x, dy = x.astype(jnp.float32), dy.astype(jnp.float32)
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
  Cout a multiple of 16; float32 or bfloat16 in, float32 out. Kernel tap (0, 0) reads input pixel
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
  if _bf16(a):
    target = {
        build.CHANNEL_MOMENTS: build.CHANNEL_MOMENTS_BF16,
        build.CHANNEL_GRAD_SUMS: build.CHANNEL_GRAD_SUMS_BF16,
    }[target]
  call = jax.ffi.ffi_call(target, (jax.ShapeDtypeStruct((c,), jnp.float32),) * 2)
  return call(a, x.astype(a.dtype), mean, threads=np.int64(build.threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def _batch_norm_native(x, scale, bias, epsilon, axis_name):
  return _batch_norm_fwd(x, scale, bias, epsilon, axis_name)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, axis_name):
  count = x.size // x.shape[-1]
  total, total_sq = _channel_sums(
      build.CHANNEL_MOMENTS, x, x, jnp.zeros((x.shape[-1],), jnp.float32)
  )
  moments = jnp.stack([total, total_sq]) / count
  if axis_name is not None:
    moments = jax.lax.pmean(moments, axis_name)
  mean, mean_sq = moments[0], moments[1]
  var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
  inv = jax.lax.rsqrt(var + epsilon)
  y = ((x - mean) * (inv * scale) + bias).astype(x.dtype)
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
  return dx.astype(x.dtype), sum_dy_xc * inv, sum_dy


_batch_norm_native.defvjp(_batch_norm_fwd, _batch_norm_bwd)


def batch_norm_train_reference(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """flax `nn.BatchNorm`'s training-mode function: (y, batch mean, batch variance), the
  statistics in float32 and y in x's dtype."""
  dtype, x = x.dtype, x.astype(jnp.float32)
  axes = tuple(range(x.ndim - 1))
  moments = jnp.stack([jnp.mean(x, axes), jnp.mean(jnp.square(x), axes)])
  if axis_name is not None:
    moments = jax.lax.pmean(moments, axis_name)
  mean, mean_sq = moments[0], moments[1]
  var = jnp.maximum(0.0, mean_sq - jnp.square(mean))
  y = (x - mean) * (jax.lax.rsqrt(var + epsilon) * scale) + bias
  return y.astype(dtype), jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)


def batch_norm_train(
    x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float, axis_name: str | None = None
) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over all but the last axis: (y, batch mean, batch variance).

  flax `nn.BatchNorm`'s function (fast variance E[x^2] - E[x]^2 clipped at 0,
  statistics averaged over `axis_name` under pmap). On the CPU the per-channel
  sums of the statistics and of the gradient take one kernel pass each instead
  of XLA:CPU's reduce-window trees. For x with a multiple of 16 channels, float32 or
  bfloat16 (statistics in float32, y in x's dtype). The mean and variance carry no
  gradient.
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
  if _bf16(x):  # 16 channels at half the output size: float32 costs little here.
    return upsample16(x.astype(jnp.float32), kernel, bias).astype(x.dtype)
  return _on_cpu(_upsample16_native, upsample16_reference, x, kernel, bias)
