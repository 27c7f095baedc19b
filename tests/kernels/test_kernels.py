"""The compiled CPU kernels (`esnet_jax.kernels`): the same functions and gradients as
their XLA references (`ops.*_reference`) on whatever CPU this is, their C++ self-test
natively and cross-compiled for aarch64 under qemu, and the build (concurrent first use,
the prebuild command, the one-line reason when they are off)."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO
from esnet_jax.kernels import build, ops

CPU_DIR = build.SOURCE.parent

needs_kernel = pytest.mark.skipif(
    not build.available(), reason=f'the CPU kernels are off here: {build.unavailable_reason()}'
)


def _normal(rng, shape, scale=1.0):
  return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)


def _assert_close(got, want, rtol=1e-5, err_msg=''):
  np.testing.assert_allclose(
      got, want, rtol=rtol, atol=rtol * float(jnp.abs(want).max()), err_msg=err_msg
  )


# --- values and gradients against the XLA references ---------------------------------------


@needs_kernel
@pytest.mark.parametrize('vertical', [True, False])
@pytest.mark.parametrize('taps, dilation', [(3, 1), (5, 2), (3, 9)])
@pytest.mark.parametrize('channels', [(16, 16), (64, 64), (128, 128), (16, 48), (64, 32)])
def test_conv_kx1_equals_xla(vertical, taps, dilation, channels):
  # 32+ channels on both sides and 3 or 5 taps: the Winograd path; else the direct tiles.
  cin, cout = channels
  rng = np.random.default_rng(taps * 10 + dilation)
  # Odd sizes and a width that is no multiple of any ISA's pixel blocks (3, 6, 12).
  x = _normal(rng, (2, 11, 23, cin))
  kernel = _normal(rng, (taps, 1, cin, cout) if vertical else (1, taps, cin, cout), 0.2)
  bias = _normal(rng, (cout,))
  residual = _normal(rng, (*x.shape[:-1], cout))
  for relu, res in ((False, None), (True, residual)):
    kw = dict(vertical=vertical, dilation=dilation, relu=relu, residual=res)
    got = jax.jit(functools.partial(ops.conv_kx1, **kw))(x, kernel, bias)
    want = ops.conv_kx1_reference(x, kernel, bias, **kw)
    _assert_close(got, want, err_msg=f'relu={relu} residual={res is not None}')


@needs_kernel
@pytest.mark.parametrize(
    'channels, taps, dilation',
    [
        ((16, 16), 3, 1),
        ((16, 16), 3, 9),
        ((64, 64), 5, 1),
        ((32, 48), 3, 2),
        ((128, 128), 3, 5),
        ((3, 16), 3, 1),
    ],
)  # the last with XLA's value and input gradient (3 input channels)
@pytest.mark.parametrize('vertical', [True, False])
def test_factorized_conv_and_its_gradients_equal_xla(channels, taps, dilation, vertical):
  cin, cout = channels
  rng = np.random.default_rng(cin + taps + dilation)
  x = _normal(rng, (2, 13, 11, cin))
  kernel = _normal(rng, (taps, 1, cin, cout) if vertical else (1, taps, cin, cout), 0.2)
  bias = _normal(rng, (cout,))
  cotangent = _normal(rng, (2, 13, 11, cout))
  native = lambda x, k, b: ops.factorized_conv(x, k, b, vertical, dilation)
  xla = lambda x, k, b: ops.conv_kx1_reference(x, k, b, vertical=vertical, dilation=dilation)
  _assert_close(jax.jit(native)(x, kernel, bias), xla(x, kernel, bias))
  loss = lambda f, *a: jnp.sum(f(*a) * cotangent)
  got = jax.jit(jax.grad(functools.partial(loss, native), (0, 1, 2)))(x, kernel, bias)
  want = jax.grad(functools.partial(loss, xla), (0, 1, 2))(x, kernel, bias)
  for name, g, w in zip(('input', 'kernel', 'bias'), got, want):
    _assert_close(g, w, err_msg=f'gradient of the {name}')


@needs_kernel
@pytest.mark.parametrize(
    'taps, padding, channels, strides, size',
    [
        ((1, 1), ((0, 0), (0, 0)), (64, 16), (1, 1), (9, 13)),
        ((2, 1), ((0, 1), (0, 0)), (128, 64), (1, 1), (9, 13)),
        ((2, 2), ((0, 1), (0, 1)), (16, 32), (1, 1), (9, 13)),
        ((3, 3), ((1, 1), (1, 1)), (16, 48), (2, 2), (10, 14)),  # the downsamplers
        ((3, 3), ((1, 1), (1, 1)), (64, 64), (2, 2), (8, 12)),
        ((3, 3), ((1, 1), (1, 1)), (3, 16), (2, 2), (9, 13)),  # odd sizes, three channels
        ((3, 2), ((0, 2), (1, 0)), (5, 32), (2, 3), (11, 10)),
    ],
)
def test_conv_and_its_gradients_equal_xla(taps, padding, channels, strides, size):
  cin, cout = channels
  rng = np.random.default_rng(cin + cout)
  x = _normal(rng, (2, *size, cin))
  kernel = _normal(rng, (*taps, cin, cout), 0.2)
  bias = _normal(rng, (cout,))
  xla = lambda x, k, b: b + jax.lax.conv_general_dilated(
      x, k, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  native = lambda x, k, b: ops.conv(x, k, padding, strides, b)
  cotangent = _normal(rng, xla(x, kernel, bias).shape)
  _assert_close(jax.jit(native)(x, kernel, bias), xla(x, kernel, bias))
  _assert_close(
      jax.jit(lambda x, k: ops.conv(x, k, padding, strides))(x, kernel), xla(x, kernel, 0)
  )
  loss = lambda f, *a: jnp.sum(f(*a) * cotangent)
  got = jax.jit(jax.grad(functools.partial(loss, native), (0, 1, 2)))(x, kernel, bias)
  want = jax.grad(functools.partial(loss, xla), (0, 1, 2))(x, kernel, bias)
  for g, w in zip(got, want):
    _assert_close(g, w)


@pytest.mark.parametrize('kernel_size, padding', [(3, 1), (2, 0), (4, 1)])
def test_transposed_phases_are_the_models_transposed_convolution(kernel_size, padding):
  """`ops.transposed_phases` splits a kernel as the pure model's `ConvTranspose2x` does."""
  from esnet_jax.model import esnet

  rng = np.random.default_rng(kernel_size)
  x = _normal(rng, (2, 5, 7, 8))
  module = esnet.ConvTranspose2x(features=6, kernel_size=kernel_size, padding=padding)
  variables = module.init(jax.random.PRNGKey(0), x)
  kernel, bias = variables['params']['kernel'], _normal(rng, (6,))
  want = module.apply({'params': {'kernel': kernel, 'bias': bias}}, x)
  kernels, paddings = ops.transposed_phases(kernel, (padding, padding))
  _assert_close(ops.conv_phases_reference(x, kernels, paddings, bias), want)


@needs_kernel
@pytest.mark.parametrize('kernel_size, padding', [(3, 1), (2, 0), (4, 1)])
def test_conv_phases_and_their_gradients_equal_xla(kernel_size, padding):
  """A stride-2 transposed convolution's four phases written interleaved by the kernel."""
  rng = np.random.default_rng(kernel_size)
  x = _normal(rng, (2, 5, 7, 32))
  full = _normal(rng, (kernel_size, kernel_size, 32, 48), 0.2)
  kernels, paddings = ops.transposed_phases(full, (padding, padding))
  bias = _normal(rng, (48,))
  native = lambda x, k, b: ops.conv_phases(x, k, paddings, b)
  xla = lambda x, k, b: ops.conv_phases_reference(x, k, paddings, b)
  got = jax.jit(native)(x, kernels, bias)
  assert got.shape == (2, 10, 14, 48)
  _assert_close(got, xla(x, kernels, bias))
  cotangent = _normal(rng, got.shape)
  loss = lambda f, *a: jnp.sum(f(*a) * cotangent)
  got = jax.jit(jax.grad(functools.partial(loss, native), (0, 1, 2)))(x, kernels, bias)
  want = jax.grad(functools.partial(loss, xla), (0, 1, 2))(x, kernels, bias)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    _assert_close(g, w)


@needs_kernel
@pytest.mark.parametrize(
    'taps, strides, dilation, offset, channels, size',
    [
        ((3, 1), (1, 1), (9, 1), (-9, 0), (16, 16), (11, 13)),
        ((1, 5), (1, 1), (1, 2), (0, -4), (64, 64), (7, 9)),
        ((2, 2), (2, 2), (1, 1), (0, 0), (32, 16), (5, 7)),  # upsample16's roles swapped
        ((3, 3), (2, 2), (1, 1), (-1, -1), (13, 48), (5, 6)),
    ],
)
def test_conv_wgrad_equals_xla(taps, strides, dilation, offset, channels, size):
  cin, cout = channels
  rng = np.random.default_rng(cin * cout)
  in_size = tuple(
      (n - 1) * s + 1 + (t - 1) * d for n, s, t, d in zip(size, strides, taps, dilation)
  )
  x = _normal(rng, (2, *in_size, cin))
  dy = _normal(rng, (2, *size, cout))
  kw = dict(strides=strides, dilation=dilation, offset=offset)
  got = jax.jit(lambda x, dy: ops.conv_wgrad(x, dy, taps, **kw))(x, dy)
  want = ops.conv_wgrad_reference(x, dy, taps, **kw)
  for g, w in zip(got, want):
    _assert_close(g, w)


@needs_kernel
@pytest.mark.parametrize('features', [5, 11, 16, 19, 32])
def test_upsample16_and_its_gradients_equal_xla(features):
  rng = np.random.default_rng(features)
  x = _normal(rng, (2, 5, 7, 16))
  kernel = _normal(rng, (2, 2, 16, features), 0.3)
  bias = _normal(rng, (features,))
  got = jax.jit(ops.upsample16)(x, kernel, bias)
  assert got.shape == (2, 10, 14, features)
  _assert_close(got, ops.upsample16_reference(x, kernel, bias))
  cotangent = _normal(rng, got.shape)
  loss = lambda f, *a: jnp.sum(f(*a) * cotangent)
  got = jax.jit(jax.grad(functools.partial(loss, ops.upsample16), (0, 1, 2)))(x, kernel, bias)
  want = jax.grad(functools.partial(loss, ops.upsample16_reference), (0, 1, 2))(x, kernel, bias)
  for name, g, w in zip(('input', 'kernel', 'bias'), got, want):
    _assert_close(g, w, err_msg=f'gradient of the {name}')


@needs_kernel
@pytest.mark.parametrize('shape', [(2, 7, 9, 16), (3, 5, 6, 64), (4, 45, 60, 128)])
def test_batch_norm_train_and_its_gradients_equal_xla(shape):
  rng = np.random.default_rng(shape[-1])
  x = _normal(rng, shape, 2.0) + 1
  c = shape[-1]
  scale, bias = jnp.linspace(0.5, 2.0, c), jnp.linspace(-1.0, 1.0, c)
  cotangent = _normal(rng, shape)

  def run(f):
    def loss(x, scale, bias):
      y, mean, var = f(x, scale, bias, 1e-3)
      return jnp.sum(y * cotangent), (y, mean, var)

    return jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(x, scale, bias)

  for got, want in zip(
      jax.tree.leaves(run(ops.batch_norm_train)),
      jax.tree.leaves(run(ops.batch_norm_train_reference)),
  ):
    _assert_close(got, want, rtol=2e-5)


_PMAP_BATCH_NORM_CHECK = """
import jax, jax.numpy as jnp, numpy as np
from esnet_jax.kernels import build, ops
assert jax.local_device_count() == 2 and build.available()
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(2, 3, 8, 10, 16)) * 2 + 1, jnp.float32)
g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
scale, bias = jnp.linspace(0.5, 2.0, 16), jnp.linspace(-1.0, 1.0, 16)
out = []
for f in (ops.batch_norm_train_reference, ops.batch_norm_train):
  def loss(scale, bias, x, g):
    y, mean, var = f(x, scale, bias, 1e-3, 'batch')
    return jnp.sum(y * g), (y, mean, var)
  step = jax.pmap(jax.value_and_grad(loss, (0, 1, 2), has_aux=True), axis_name='batch',
                  in_axes=(None, None, 0, 0))
  out.append(step(scale, bias, x, g))
for want, got in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5 * float(jnp.abs(want).max()))
print('CROSS-REPLICA-EQUAL')
"""


@pytest.mark.end_to_end
@needs_kernel
def test_batch_norm_train_statistics_cross_replicas_like_xla():
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env['XLA_FLAGS'] = env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2'
  out = subprocess.run(
      [sys.executable, '-c', _PMAP_BATCH_NORM_CHECK],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'CROSS-REPLICA-EQUAL' in out.stdout


# --- the C++ self-test, natively and for aarch64 under qemu --------------------------------


def _selftest_command(compiler: str, output: Path, *flags: str) -> list[str]:
  return [
      compiler,
      '-O2',
      '-std=c++17',
      '-ffp-contract=fast',
      *flags,
      str(CPU_DIR / 'selftest.cc'),
      '-o',
      str(output),
  ]


@pytest.mark.end_to_end
def test_kernel_selftest_native(tmp_path):
  """kernels.h against scalar loops, built as `build` builds the kernels on this CPU."""
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
  if compiler is None:
    pytest.skip('no C++ compiler')
  isa = build.cpu_isa()
  flags = build._ISA_FLAGS.get(build.build_isa(), ())
  exe = tmp_path / 'selftest'
  compiled = subprocess.run(
      _selftest_command(compiler, exe, *flags), capture_output=True, text=True, timeout=300
  )
  assert compiled.returncode == 0, compiled.stderr[-3000:]
  run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stdout[-3000:]
  assert 'OK: 0 of' in run.stdout
  if isa in ('avx512', 'avx2', 'neon'):
    assert f'{isa} build' in run.stdout.splitlines()[0]


@pytest.mark.end_to_end
def test_kernel_selftest_avx512_layout_on_any_cpu(tmp_path):
  """The AVX-512 build's code (16-float vectors, its register blocks) against scalar loops
  on whatever CPU runs the tests: the compiler splits each 16-float vector into the
  machine's own, so the layout and indexing are checked where no AVX-512 CPU is at hand."""
  compiler = os.environ.get('CXX') or shutil.which('c++') or shutil.which('g++')
  if compiler is None:
    pytest.skip('no C++ compiler')
  flags = build._ISA_FLAGS.get(build.cpu_isa(), ())
  exe = tmp_path / 'selftest-16'
  # -O1 (the last -O wins): this checks layout and indexing, and compiles 4x faster.
  compiled = subprocess.run(
      _selftest_command(compiler, exe, *flags, '-DESNET_LANES=16', '-O1'),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert compiled.returncode == 0, compiled.stderr[-3000:]
  run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
  assert run.returncode == 0, run.stdout[-3000:]
  assert '16 floats per vector' in run.stdout.splitlines()[0]
  assert 'OK: 0 of' in run.stdout


@pytest.mark.end_to_end
def test_kernel_selftest_aarch64_under_qemu(tmp_path):
  """The same source cross-compiled for ARM (NEON, 4-lane vectors) and run under qemu."""
  compiler, qemu = shutil.which('aarch64-linux-gnu-g++'), shutil.which('qemu-aarch64')
  if compiler is None or qemu is None:
    pytest.skip(
        'aarch64-linux-gnu-g++ or qemu-aarch64 missing '
        '(apt-get install g++-aarch64-linux-gnu qemu-user)'
    )
  exe = tmp_path / 'selftest-aarch64'
  compiled = subprocess.run(
      _selftest_command(compiler, exe, '-static'), capture_output=True, text=True, timeout=300
  )
  assert compiled.returncode == 0, compiled.stderr[-3000:]
  run = subprocess.run([qemu, str(exe)], capture_output=True, text=True, timeout=600)
  assert run.returncode == 0, run.stdout[-3000:]
  assert 'neon build, 4 floats per vector' in run.stdout
  assert 'OK: 0 of' in run.stdout


# --- building: concurrent first use, the prebuild command, the reason when off -------------

_FIRST_USE = """
import sys
from esnet_jax.kernels import build
print('AVAILABLE' if build.available() else 'OFF: %s' % build.unavailable_reason())
"""


@pytest.mark.end_to_end
@needs_kernel
def test_processes_starting_at_once_all_get_the_kernels(tmp_path):
  """Three processes on an empty cache: one compiles, all load a whole library."""
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env[build.CACHE_ENV] = str(tmp_path / 'cache')
  env.pop(build.OPT_OUT_ENV, None)
  procs = [
      subprocess.Popen(
          [sys.executable, '-c', _FIRST_USE],
          cwd=REPO,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for _ in range(3)
  ]
  outs = [p.communicate(timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0 and out.strip() == 'AVAILABLE', out + err[-2000:]
  libraries = sorted(p.name for p in (tmp_path / 'cache').glob('kernels-*.so'))
  assert len(libraries) == 1 and libraries[0].startswith(f'kernels-{build.build_isa()}-')
  # The prebuild command finds it and says where it is.
  cmd = subprocess.run(
      [sys.executable, '-m', 'esnet_jax.kernels.build'],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert cmd.returncode == 0, cmd.stderr[-2000:]
  assert f'ISA {build.build_isa()}' in cmd.stdout and libraries[0] in cmd.stdout


@pytest.mark.end_to_end
def test_prebuild_command_fails_with_the_reason(tmp_path):
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env[build.OPT_OUT_ENV] = '1'
  cmd = subprocess.run(
      [sys.executable, '-m', 'esnet_jax.kernels.build'],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert cmd.returncode == 1
  assert f'{build.OPT_OUT_ENV} is set' in cmd.stderr


@pytest.fixture
def fresh_build(monkeypatch, tmp_path):
  """`build` with its cached verdict cleared (and restored afterwards)."""
  monkeypatch.setenv(build.CACHE_ENV, str(tmp_path))
  monkeypatch.delenv(build.OPT_OUT_ENV, raising=False)
  build._load.cache_clear()
  build.available.cache_clear()
  yield build
  build._load.cache_clear()
  build.available.cache_clear()


def test_opt_out_turns_the_kernels_off(fresh_build, monkeypatch):
  monkeypatch.setenv(build.OPT_OUT_ENV, '1')
  assert build.available() is False
  assert build.unavailable_reason() == f'{build.OPT_OUT_ENV} is set'
  assert build.library_path() is None


def test_failed_compile_is_logged_once_in_one_line(fresh_build, monkeypatch, caplog):
  monkeypatch.setattr(build, 'cpu_isa', lambda: 'avx2')
  monkeypatch.setenv('CXX', '/bin/false')
  with caplog.at_level(logging.WARNING, logger='esnet_jax'):
    assert build.available() is False
    assert build.available() is False
  records = [r for r in caplog.records if r.name == 'esnet_jax']
  assert len(records) == 1
  message = records[0].getMessage()
  assert 'CPU kernels off' in message and '/bin/false failed' in message
  assert '\n' not in message and records[0].exc_info is None


def test_other_cpus_are_not_built(fresh_build, monkeypatch):
  monkeypatch.setattr(build, 'cpu_isa', lambda: 'other')
  assert 'neither AVX2+FMA, AVX-512 nor NEON' in build.unavailable_reason()
  with pytest.raises(ValueError):
    build.compile_flags('other')
