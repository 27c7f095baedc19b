"""CPU kernels XLA lacks, compiled on first use and called through XLA's FFI.

Both in AVX-512 (`native/conv16.cc`), for ESNet's 16-channel layers, where
XLA:CPU's own convolution kernel is about 2.7x slower than oneDNN's:
`conv16`, the factorised convolution (kx1 or 1xk, 'same' padding, dilation d)
with its bias, an optional residual and an optional ReLU fused (a 16-channel
FCU takes ~8 ms instead of ~18 ms at 256x512 on the benchmark machine), and
`upsample16`, the decoder's 2x2 stride-2 output transposed convolution, written
straight into the interleaved output (README, benchmark section).

The network uses it only when asked (`ESNet(native_kernels=True)`, which
`Segmenter`, the benchmark and layer timing set when `available()`) and only for inference with
BN-folded parameters in float32 on a CPU backend. It is never used in exported
models, whose StableHLO must not depend on a library of this package. When the
CPU lacks AVX-512, no C++ compiler is found, compiling fails, or
`ESNET_JAX_NO_NATIVE_KERNELS=1`, `available()` is False (with a warning when a
compile failed) and the network runs XLA's convolutions: the same function.

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
import numpy as np

OPT_OUT_ENV = 'ESNET_JAX_NO_NATIVE_KERNELS'
CACHE_ENV = 'ESNET_JAX_CACHE_DIR'
_SOURCE = Path(__file__).with_name('native') / 'conv16.cc'
_TARGET = 'esnet_conv16'
_UPSAMPLE_TARGET = 'esnet_upsample16'
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
  target = cache / f'conv16-{key}.so'
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
    jax.ffi.register_ffi_target(_TARGET, jax.ffi.pycapsule(library.Conv16), platform='cpu')
    jax.ffi.register_ffi_target(_UPSAMPLE_TARGET, jax.ffi.pycapsule(library.Upsample16),
                                platform='cpu')
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


def conv16(x: jax.Array, kernel: jax.Array, bias: jax.Array, *, vertical: bool,
           dilation: int = 1, relu: bool = False, residual: jax.Array | None = None
           ) -> jax.Array:
  """relu?(conv(x, kernel) + bias (+ residual)) for NHWC float32 x with 16 channels.

  `kernel` is a flax conv kernel of shape (k, 1, 16, 16) (`vertical`) or (1, k,
  16, 16); the convolution pads to keep H and W, like the original's.
  """
  _require()
  taps = kernel.shape[0] if vertical else kernel.shape[1]
  call = jax.ffi.ffi_call(_TARGET, jax.ShapeDtypeStruct(x.shape, x.dtype))
  return call(x, kernel.reshape(taps, 16, 16), bias, x if residual is None else residual,
              vertical=np.int64(vertical), dilation=np.int64(dilation), relu=np.int64(relu),
              has_res=np.int64(residual is not None), threads=np.int64(_threads()))


def upsample16(x: jax.Array, kernel: jax.Array, bias: jax.Array) -> jax.Array:
  """PyTorch `ConvTranspose2d(16, out, 2, stride=2)` on NHWC float32 x: (N, 2H, 2W, out).

  `kernel` is (2, 2, 16, out) in `ConvTranspose2x`'s layout (scatter semantics:
  output pixel (2m+a, 2n+b) is x[m, n] @ kernel[a, b] + bias), out <=
  MAX_UPSAMPLE_FEATURES.
  """
  _require()
  n, h, w, _ = x.shape
  call = jax.ffi.ffi_call(_UPSAMPLE_TARGET,
                          jax.ShapeDtypeStruct((n, 2 * h, 2 * w, kernel.shape[-1]), x.dtype))
  return call(x, kernel, bias, threads=np.int64(_threads()))
