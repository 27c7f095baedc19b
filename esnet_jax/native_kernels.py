"""CPU kernels XLA lacks, compiled on first use and called through XLA's FFI.

All in AVX-512 (`native/kernels.cc`), where XLA:CPU's own kernels lose to
PyTorch's oneDNN on ESNet:
`conv_kx1`, the factorised convolution (kx1 or 1xk, 'same' padding, dilation
d) with its bias, an optional residual and an optional ReLU fused (a 16-channel
FCU takes ~8 ms instead of ~18 ms at 256x512 on the benchmark machine);
`upsample16`, the decoder's 2x2 stride-2 output transposed convolution, written
straight into the interleaved output; `conv_wgrad`, the kernel and bias
gradients of a convolution, accumulated as outer products without the
transposes XLA's gradient convolutions need; and the per-channel sums of
training-mode BatchNorm, one pass each instead of XLA's reduce-window trees.
`factorized_conv`, `conv` and `batch_norm_train` put them together with
`jax.custom_vjp` (README, benchmark section). The kernels split their work over
XLA's own intra-op thread pool.

The network uses them only when asked (`ESNet(native_kernels=True)`, which
`Segmenter`, the benchmark, layer timing and training set when `available()`),
in float32 on a CPU backend. They are never used in exported models, whose
StableHLO must not depend on a library of this package. When the CPU lacks
AVX-512, no C++ compiler is found, compiling fails, or
`ESNET_JAX_NO_NATIVE_KERNELS=1`, `available()` is False (with a warning when a
compile failed) and the network runs XLA's operations: the same function.

The shared library is built once per machine with `$CXX` (or `c++`) into
`$ESNET_JAX_CACHE_DIR` (default `~/.cache/esnet_jax`), named by a hash of the
source and the compile command, so an edited source or another compiler never
reuses a stale build.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

OPT_OUT_ENV = 'ESNET_JAX_NO_NATIVE_KERNELS'
CACHE_ENV = 'ESNET_JAX_CACHE_DIR'
_SOURCE = Path(__file__).with_name('native') / 'kernels.cc'
_TARGET = 'esnet_conv_kx1'
_UPSAMPLE_TARGET = 'esnet_upsample16'
_WGRAD_TARGET = 'esnet_conv_wgrad'
_MOMENTS_TARGET = 'esnet_channel_moments'
_GRAD_SUMS_TARGET = 'esnet_channel_grad_sums'
# Widest output of `upsample16` (two AVX-512 registers).
MAX_UPSAMPLE_FEATURES = 32
_FLAGS = ('-O3', '-mavx512f', '-mfma', '-shared', '-fPIC', '-std=c++17')


def _cpu_has_avx512() -> bool:
  if platform.machine().lower() not in ('x86_64', 'amd64'):
    return False
  try:
    with open('/proc/cpuinfo') as f:
      return any(line.startswith('flags') and ' avx512f' in line for line in f)
  except OSError:
    return False


def _compile(compiler: str) -> Path:
  """Build (or reuse) the shared library; returns its path. Raises on a failed build."""
  include = jax.ffi.include_dir()
  command_text = ' '.join((compiler, *_FLAGS, '-I<jax.ffi.include_dir()>'))
  key = hashlib.sha256(_SOURCE.read_bytes() + command_text.encode()
                       + jax.__version__.encode()).hexdigest()[:16]
  cache = Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'esnet_jax')
  target = cache / f'kernels-{key}.so'
  if target.exists():
    return target
  cache.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory(dir=cache) as tmp:
    built = Path(tmp) / target.name
    result = subprocess.run([compiler, *_FLAGS, f'-I{include}', str(_SOURCE), '-o', str(built)],
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0:
      raise RuntimeError(f'{compiler} failed on {_SOURCE}: {result.stderr.strip()[-800:]}')
    os.replace(built, target)  # Atomic: concurrent processes never load a partial file.
  return target


@functools.cache
def available() -> bool:
  """True when the kernel is compiled, loaded and registered with XLA (checked once)."""
  if (os.environ.get(OPT_OUT_ENV, '') not in ('', '0') or not _cpu_has_avx512()
      or jax.default_backend() != 'cpu'):
    return False
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
  if compiler is None:
    return False
  try:
    library = ctypes.cdll.LoadLibrary(str(_compile(compiler)))
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.ConvKx1), platform='cpu')
    jax.ffi.register_ffi_target(_UPSAMPLE_TARGET, jax.ffi.pycapsule(library.Upsample16),
                                platform='cpu')
    for target, symbol in ((_WGRAD_TARGET, library.ConvWgrad),
                           (_MOMENTS_TARGET, library.ChannelMoments),
                           (_GRAD_SUMS_TARGET, library.ChannelGradSums)):
      jax.ffi.register_ffi_target(target, jax.ffi.pycapsule(symbol), platform='cpu')
  except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
    warnings.warn(f'esnet_jax: native CPU kernel unavailable, using XLA convolutions '
                  f'(slower on CPU): {e}', RuntimeWarning, stacklevel=2)
    return False
  return True


def _threads() -> int:
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def _require() -> None:
  if not available():
    raise RuntimeError('esnet_jax.native_kernels is not available on this machine (see the '
                       'warning above, or AVX-512 / a C++ compiler is missing): build the '
                       'network with native_kernels=False.')


def conv_kx1(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, vertical: bool,
             dilation: int = 1, relu: bool = False, residual: jax.Array | None = None
             ) -> jax.Array:
  """relu?(conv(x, kernel) + bias (+ residual)) for NHWC float32 x, a factorised kernel.

  `kernel` is a flax conv kernel of shape (k, 1, Cin, Cout) (`vertical`) or (1, k,
  Cin, Cout), Cout a multiple of 16; the convolution pads to keep H and W, like
  the original's.
  """
  _require()
  taps = kernel.shape[0] if vertical else kernel.shape[1]
  cin, cout = kernel.shape[-2:]
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct((*x.shape[:-1], cout), x.dtype))
  return call(x, kernel.reshape(taps, cin, cout), bias, x if residual is None else residual,
              vertical=np.int64(vertical), dilation=np.int64(dilation), relu=np.int64(relu),
              has_res=np.int64(residual is not None), threads=np.int64(_threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def factorized_conv(x: jax.Array, kernel: jax.Array, bias: jax.Array, vertical: bool,
                    dilation: int = 1) -> jax.Array:
  """conv(x, kernel) + bias, kx1 or 1xk with 'same' padding, differentiable (training).

  For NHWC float32 x whose channels (in and out) are multiples of 16; `kernel`
  is a flax conv kernel, (k, 1, Cin, Cout) (`vertical`) or (1, k, Cin, Cout).
  The value and the input gradient (the kernel mirrored and transposed) come
  from `conv_kx1`, the kernel and bias gradients from `conv_wgrad`: XLA's kernel
  gradient transposes both operands to channel-major layouts, which cost ~1.2 s
  of a 3.1 s ESNet train step at 4x360x480 (README, training section).
  """
  return _factorized_forward(x, kernel, bias, vertical, dilation)


def _native_value(kernel: jax.Array) -> bool:
  """Whether `conv_kx1` computes the value and the input gradient (both channel counts
  multiples of 16; XLA's convolution otherwise)."""
  return kernel.shape[-2] % 16 == 0 and kernel.shape[-1] % 16 == 0


def _factorized_padding(kernel: jax.Array, vertical: bool, dilation: int
                        ) -> tuple[tuple[int, int], tuple[int, int]]:
  pad = ((kernel.shape[0] if vertical else kernel.shape[1]) - 1) // 2 * dilation
  return ((pad, pad), (0, 0)) if vertical else ((0, 0), (pad, pad))


def _xla_conv(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], ...],
              dilation: tuple[int, int] = (1, 1), strides: tuple[int, int] = (1, 1)
              ) -> jax.Array:
  return jax.lax.conv_general_dilated(x, kernel, strides, padding, rhs_dilation=dilation,
                                      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


def _factorized_forward(x, kernel, bias, vertical, dilation):
  if _native_value(kernel):
    return conv_kx1(x, kernel, bias, vertical=vertical, dilation=dilation)
  dilations = (dilation, 1) if vertical else (1, dilation)
  return _xla_conv(x, kernel, _factorized_padding(kernel, vertical, dilation), dilations) + bias


def _factorized_conv_fwd(x, kernel, bias, vertical, dilation):
  return _factorized_forward(x, kernel, bias, vertical, dilation), (x, kernel)


def _factorized_conv_bwd(vertical, dilation, saved, dy):
  x, kernel = saved
  taps = kernel.shape[0] if vertical else kernel.shape[1]
  padding = _factorized_padding(kernel, vertical, dilation)
  dilations = (dilation, 1) if vertical else (1, dilation)
  if _native_value(kernel):
    cin, cout = kernel.shape[-2:]
    mirrored = jnp.flip(kernel.reshape(taps, cin, cout), 0).transpose(0, 2, 1)
    dx = conv_kx1(dy, mirrored.reshape(*kernel.shape[:2], cout, cin),
                  jnp.zeros((cin,), dy.dtype), vertical=vertical, dilation=dilation)
  else:
    _, transpose = jax.vjp(lambda v: _xla_conv(v, kernel, padding, dilations), x)
    dx, = transpose(dy)
  dw, db = conv_wgrad(x, dy, kernel.shape[:2], dilation=dilations,
                      offset=(-padding[0][0], -padding[1][0]))
  return dx, dw, db


factorized_conv.defvjp(_factorized_conv_fwd, _factorized_conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x: jax.Array, kernel: jax.Array, padding: tuple[tuple[int, int], tuple[int, int]],
         strides: tuple[int, int] = (1, 1)) -> jax.Array:
  """NHWC convolution (HWIO kernel, explicit padding, strides) without bias.

  XLA computes the value and the input gradient; the kernel gradient comes from
  `conv_wgrad`. For float32 with a multiple of 16 output channels: the
  upsamplers' per-phase convolutions and the downsamplers' stride-2
  convolutions in training.
  """
  return _xla_conv(x, kernel, padding, strides=strides)


def _conv_fwd(x, kernel, padding, strides):
  return _xla_conv(x, kernel, padding, strides=strides), (x, kernel)


def _conv_bwd(padding, strides, saved, dy):
  x, kernel = saved
  _, transpose = jax.vjp(lambda v: _xla_conv(v, kernel, padding, strides=strides), x)
  dx, = transpose(dy)
  dw, _ = conv_wgrad(x, dy, kernel.shape[:2], strides=strides,
                     offset=(-padding[0][0], -padding[1][0]))
  return dx, dw


conv.defvjp(_conv_fwd, _conv_bwd)


def conv_wgrad(x: jax.Array, dy: jax.Array, taps: tuple[int, int], *,
               strides: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1),
               offset: tuple[int, int] = (0, 0)) -> tuple[jax.Array, jax.Array]:
  """Kernel gradient, (*taps, Cin, Cout), and bias gradient of a convolution.

  x is its input (N, HI, WI, Cin), dy its output's gradient (N, H, W, Cout),
  Cout a multiple of 16. Kernel tap (0, 0) reads input pixel
  (h * strides[0] + offset[0], w * strides[1] + offset[1]) for output pixel
  (h, w) (so offset is minus the leading padding), tap (i, j) that plus
  (i * dilation[0], j * dilation[1]); pixels outside x read zeros.
  """
  _require()
  cin, cout = x.shape[-1], dy.shape[-1]
  call = jax.ffi.ffi_call(_WGRAD_TARGET, (jax.ShapeDtypeStruct((*taps, cin, cout), x.dtype),
                                          jax.ShapeDtypeStruct((cout,), x.dtype)))
  return call(x, dy, stride_y=np.int64(strides[0]), stride_x=np.int64(strides[1]),
              dil_y=np.int64(dilation[0]), dil_x=np.int64(dilation[1]),
              off_y=np.int64(offset[0]), off_x=np.int64(offset[1]),
              threads=np.int64(_threads()))


def _channel_sums(target: str, a: jax.Array, x: jax.Array, mean: jax.Array
                  ) -> tuple[jax.Array, jax.Array]:
  _require()
  c = a.shape[-1]
  call = jax.ffi.ffi_call(target, (jax.ShapeDtypeStruct((c,), a.dtype),) * 2)
  return call(a, x, mean, threads=np.int64(_threads()))


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def batch_norm_train(x: jax.Array, scale: jax.Array, bias: jax.Array, epsilon: float,
                     axis_name: str | None = None
                     ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Training-mode BatchNorm over all but the last axis: (y, batch mean, batch variance).

  flax `nn.BatchNorm`'s function (fast variance E[x^2] - E[x]^2 clipped at 0,
  statistics averaged over `axis_name` under pmap), with the per-channel sums of
  the statistics and of the gradient taken in one pass each by `native/` kernels
  instead of XLA:CPU's reduce-window trees (~0.5 s of a 2.5 s train step at
  4x360x480). For float32 x with a multiple of 16 channels. The mean and
  variance outputs are for the running averages and carry no gradient.
  """
  return _batch_norm_fwd(x, scale, bias, epsilon, axis_name)[0]


def _batch_norm_fwd(x, scale, bias, epsilon, axis_name):
  count = x.size // x.shape[-1]
  total, total_sq = _channel_sums(_MOMENTS_TARGET, x, x, jnp.zeros((x.shape[-1],), x.dtype))
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
  sum_dy, sum_dy_xc = _channel_sums(_GRAD_SUMS_TARGET, dy, x, mean)
  means = jnp.stack([sum_dy, sum_dy_xc]) / count
  if axis_name is not None:  # The statistics came from every replica's pixels.
    means = jax.lax.pmean(means, axis_name)
  dx = (inv * scale) * (dy - means[0] - (x - mean) * (jnp.square(inv) * means[1]))
  return dx, sum_dy_xc * inv, sum_dy


batch_norm_train.defvjp(_batch_norm_fwd, _batch_norm_bwd)


@jax.custom_vjp
def upsample16(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """PyTorch `ConvTranspose2d(16, out, 2, stride=2)` on NHWC float32 x: (N, 2H, 2W, out).

  `kernel` is (2, 2, 16, out) in `ConvTranspose2x`'s layout (scatter semantics:
  output pixel (2m+a, 2n+b) is x[m, n] @ kernel[a, b] + bias), out <=
  MAX_UPSAMPLE_FEATURES. Differentiable: the input gradient is XLA's stride-2
  convolution of the output gradient, the kernel gradient `conv_wgrad`'s.
  """
  _require()
  n, h, w, _ = x.shape
  call = jax.ffi.ffi_call(_UPSAMPLE_TARGET,
                          jax.ShapeDtypeStruct((n, 2 * h, 2 * w, kernel.shape[-1]), x.dtype))
  return call(x, kernel, bias, threads=np.int64(_threads()))


def _upsample16_fwd(x, kernel, bias):
  return upsample16(x, kernel, bias), (x, kernel)


def _upsample16_bwd(saved, dy):
  x, kernel = saved
  # y[2m+a, 2n+b] = x[m, n] @ kernel[a, b]: each input pixel meets a 2x2 block of dy.
  dx = _xla_conv(dy, kernel.transpose(0, 1, 3, 2), ((0, 0), (0, 0)), strides=(2, 2))
  # The kernel gradient with the roles swapped: dy is the strided side, x the 16 channels.
  dw_t, _ = conv_wgrad(dy, x, (2, 2), strides=(2, 2))
  return dx, dw_t.transpose(0, 1, 3, 2), jnp.sum(dy, axis=(0, 1, 2))


upsample16.defvjp(_upsample16_fwd, _upsample16_bwd)
