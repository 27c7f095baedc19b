"""Compiling, loading and registering the CPU kernels (`cpu/kernels.cc`) with XLA.

Built on first use with `$CXX` (or `c++`) into `$ESNET_JAX_CACHE_DIR` (default
`~/.cache/esnet_jax`); `python -m esnet_jax.kernels.build` builds ahead of time
(and prints the ISA, the library and the time taken). The library is named by the
ISA and a hash of the sources, the compile command and the JAX version, so an
edited source, another compiler or a cache shared with a machine of another ISA
never reuses a wrong build. Only CPU backends ever build or load them.

Why on first use rather than at install time (what JAX's FFI guide suggests for
a package of its own): GPU and TPU installs must never need a compiler for
kernels they never run; the ISA that matters is the one of the machine that runs
the program, which for a shared virtualenv or a container image is not always
the one that installed it; and the FFI headers come with the installed JAX, which
can change after this package is installed. The cost is one compile (about 10 s
on 2 cores) on a machine's first CPU run, which the prebuild command moves to
deployment time.

Flags are explicit per ISA (`_ISA_FLAGS`), not `-march=native`: the build is then
the same on every machine of an ISA (reproducible, and a cache shared between,
say, two AVX2 CPUs of different generations holds one library valid on both),
and its key says exactly what it was built for. The register blocking in
`kernels.h` is chosen for the ISA's vector width and register count, which is all
the kernels need; `-march=native` would only add scheduling for one core.

Several processes starting at once are safe: one compiles while the others wait
on a lock file, and the library appears by an atomic rename, so nobody loads a
partial file. When the kernels cannot be had (`available()` is False),
`unavailable_reason()` says why, and the reason is logged once, in one line, on
the `esnet_jax` logger.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jax

from esnet_jax.system import runner

OPT_OUT_ENV = 'ESNET_JAX_NO_NATIVE_KERNELS'
CACHE_ENV = 'ESNET_JAX_CACHE_DIR'
SOURCE = Path(__file__).with_name('cpu') / 'kernels.cc'
# The portable compute kernels SOURCE includes (and cpu/selftest.cc tests).
HEADER = SOURCE.with_name('kernels.h')
# FFI target names, one per kernel.
CONV_KX1 = 'esnet_conv_kx1'
UPSAMPLE16 = 'esnet_upsample16'
CONV_WGRAD = 'esnet_conv_wgrad'
CHANNEL_MOMENTS = 'esnet_channel_moments'
CHANNEL_GRAD_SUMS = 'esnet_channel_grad_sums'
CONV2D = 'esnet_conv2d'
CONV2D_PHASE = 'esnet_conv2d_phase'
# The bfloat16 versions: the convolutions with bf16 dot products (built where
# the CPU has them, `bf16_dot()`), the weight gradient and the sums on bf16 inputs with
# float32 arithmetic (every build).
CONV_KX1_BF16 = 'esnet_conv_kx1_bf16'
CONV2D_BF16 = 'esnet_conv2d_bf16'
CONV2D_PHASE_BF16 = 'esnet_conv2d_phase_bf16'
CONV_WGRAD_BF16 = 'esnet_conv_wgrad_bf16'
CHANNEL_MOMENTS_BF16 = 'esnet_channel_moments_bf16'
CHANNEL_GRAD_SUMS_BF16 = 'esnet_channel_grad_sums_bf16'
_SYMBOLS = {
    CONV_KX1: 'ConvKx1',
    UPSAMPLE16: 'Upsample16',
    CONV_WGRAD: 'ConvWgrad',
    CHANNEL_MOMENTS: 'ChannelMoments',
    CHANNEL_GRAD_SUMS: 'ChannelGradSums',
    CONV2D: 'Conv2d',
    CONV2D_PHASE: 'Conv2dPhase',
    CONV_WGRAD_BF16: 'ConvWgradBf16',
    CHANNEL_MOMENTS_BF16: 'ChannelMomentsBf16',
    CHANNEL_GRAD_SUMS_BF16: 'ChannelGradSumsBf16',
}
_BF16_DOT_SYMBOLS = {
    CONV_KX1_BF16: 'ConvKx1Bf16',
    CONV2D_BF16: 'Conv2dBf16',
    CONV2D_PHASE_BF16: 'Conv2dPhaseBf16',
}
# Widest output of `upsample16`.
MAX_UPSAMPLE_FEATURES = 32
_FLAGS = ('-O3', '-ffp-contract=fast', '-shared', '-fPIC', '-std=c++17')
# Per build: the instruction set flags (the kernels pick their vector width and register
# blocks from the macros these define). 'other' is not built: 4-lane SSE without FMA
# would not beat XLA's own convolutions. 'avx512_bf16' is AVX-512 plus the bf16 dot
# products (vdpbf16ps: AMD Zen 4 and later, Intel since Cooper Lake / Sapphire Rapids).
_ISA_FLAGS = {
    'avx512_bf16': ('-mavx512f', '-mavx512bf16', '-mfma'),
    'avx512': ('-mavx512f', '-mfma'),
    'avx2': ('-mavx2', '-mfma'),
    'neon': (),
}
_LOG = logging.getLogger('esnet_jax')
_library: Path | None = None


def _cpu_flags() -> list[str]:
  """The x86 feature flags of /proc/cpuinfo (empty where unreadable)."""
  try:
    with open('/proc/cpuinfo') as f:
      return next((line.split() for line in f if line.startswith('flags')), [])
  except OSError:
    return []


def cpu_isa() -> str:
  """The widest SIMD instruction set of this machine's CPU the kernels know:
  'avx512', 'avx2' (with FMA), 'neon' or 'other'."""
  machine = platform.machine().lower()
  if machine in ('aarch64', 'arm64'):
    return 'neon'
  if machine not in ('x86_64', 'amd64'):
    return 'other'
  flags = _cpu_flags()
  if 'avx512f' in flags:
    return 'avx512'
  if 'avx2' in flags and 'fma' in flags:
    return 'avx2'
  return 'other'


def build_isa() -> str:
  """The kernel build this CPU gets: `cpu_isa()`, or 'avx512_bf16' where an AVX-512 CPU
  also has the bfloat16 dot products (AVX512_BF16)."""
  isa = cpu_isa()
  return 'avx512_bf16' if isa == 'avx512' and 'avx512_bf16' in _cpu_flags() else isa


def bf16_dot() -> bool:
  """Whether this CPU has the bfloat16 dot products the kernels use (AVX512_BF16).

  Arm's BF16 (v8.6 BFDOT) is not used yet: there bfloat16 computes in float32.
  """
  return build_isa() == 'avx512_bf16'


def compile_flags(isa: str | None = None) -> tuple[str, ...]:
  """The compiler flags of the kernels for build `isa` (default: this CPU's, `build_isa()`)."""
  isa = isa or build_isa()
  if isa not in _ISA_FLAGS:
    raise ValueError(f'no kernel build for ISA {isa!r}')
  return (*_FLAGS, *_ISA_FLAGS[isa])


def _one_line(text: str, limit: int = 400) -> str:
  text = ' '.join(text.split())
  return text if len(text) <= limit else '...' + text[-limit:]


def _compile(compiler: str, isa: str) -> Path:
  """Build (or reuse) the shared library for `isa`; returns its path. Raises on a failed
  build."""
  include = jax.ffi.include_dir()
  flags = compile_flags(isa)
  command_text = ' '.join((compiler, *flags, '-I<jax.ffi.include_dir()>'))
  key = hashlib.sha256(
      SOURCE.read_bytes() + HEADER.read_bytes() + command_text.encode() + jax.__version__.encode()
  ).hexdigest()[:16]
  cache = Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'esnet_jax')
  target = cache / f'kernels-{isa}-{key}.so'
  if target.exists():
    return target
  cache.mkdir(parents=True, exist_ok=True)
  with open(cache / f'.{target.name}.lock', 'w') as lock:
    try:  # One process compiles; the others wait here, then find the library.
      import fcntl

      fcntl.flock(lock, fcntl.LOCK_EX)
    except (ImportError, OSError):
      pass  # No locks (not POSIX): each compiles its own copy; the rename stays atomic.
    if target.exists():
      return target
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
      built = Path(tmp) / target.name
      result = subprocess.run(
          [compiler, *flags, f'-I{include}', str(SOURCE), '-o', str(built)],
          capture_output=True,
          text=True,
          timeout=600,
      )
      if result.returncode != 0:
        raise RuntimeError(f'{compiler} failed on {SOURCE.name}: {result.stderr}')
      os.replace(built, target)  # Atomic: concurrent processes never load a partial file.
  return target


@functools.cache
def _load() -> str | None:
  """Build, load and register the kernels; None on success, else the reason they are off."""
  global _library
  if os.environ.get(OPT_OUT_ENV, '') not in ('', '0'):
    return f'{OPT_OUT_ENV} is set'
  if jax.default_backend() != 'cpu':
    return f'the default backend is {jax.default_backend()}, not cpu'
  isa = build_isa()
  if isa not in _ISA_FLAGS:
    return f'this CPU ({platform.machine()}) has neither AVX2+FMA, AVX-512 nor NEON'
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
  if compiler is None:
    return 'no C++ compiler found (set $CXX)'
  try:
    path = _compile(compiler, isa)
    library = ctypes.cdll.LoadLibrary(str(path))
    symbols = {**_SYMBOLS, **(_BF16_DOT_SYMBOLS if isa == 'avx512_bf16' else {})}
    for target, symbol in symbols.items():
      jax.ffi.register_ffi_target(
          target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu'
      )
  except (OSError, RuntimeError, AttributeError, subprocess.SubprocessError) as e:
    return _one_line(f'building or loading them failed: {e}')
  _library = path
  return None


def unavailable_reason() -> str | None:
  """Why the kernels cannot be used here, or None when they are built and registered."""
  return _load()


@functools.cache
def available() -> bool:
  """True when the kernels are compiled, loaded and registered with XLA (checked once;
  a reason they are not is logged once, one line on the `esnet_jax` logger)."""
  reason = _load()
  if reason is not None and not reason.startswith(OPT_OUT_ENV):
    _LOG.warning('esnet_jax: CPU kernels off, using XLA operations: %s', reason)
  return reason is None


def bf16_kernels() -> bool:
  """True when the bfloat16 factorised convolution (bf16 dot products) is registered."""
  return available() and bf16_dot()


def library_path() -> Path | None:
  """The loaded kernel library, or None when `available()` is False."""
  return _library if available() else None


def threads() -> int:
  """CPU threads this process may use (the kernels split their rows into that many parts)."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # Not Linux.
    return os.cpu_count() or 1


def main() -> int:
  """`python -m esnet_jax.kernels.build`: build (or find) and load the kernels now."""
  start = time.perf_counter()
  reason = unavailable_reason()
  took = time.perf_counter() - start
  if reason is not None:
    print(f'esnet_jax kernels unavailable (CPU ISA {build_isa()}): {reason}', file=sys.stderr)
    return 1
  print(f'esnet_jax kernels: ISA {build_isa()}, library {_library}, ready in {took:.1f} s')
  return 0


if __name__ == '__main__':
  runner.run(main)
