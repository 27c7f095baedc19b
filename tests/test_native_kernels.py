"""The compiled kernels: same functions (and gradients) as XLA's convolutions, clean fallbacks."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esnet_jax import folding, native_kernels
from esnet_jax.benchmark import _random_variables
from esnet_jax.models import ESNet

needs_kernel = pytest.mark.skipif(
    not native_kernels.available(),
    reason='no AVX-512 CPU or C++ compiler here: the network uses XLA convolutions')


def _conv(x, kernel, dilation, vertical):
  k = kernel.shape[0] if vertical else kernel.shape[1]
  pad = (k - 1) // 2 * dilation
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), ((pad, pad), (0, 0)) if vertical else ((0, 0), (pad, pad)),
      rhs_dilation=(dilation, 1) if vertical else (1, dilation),
      dimension_numbers=('NHWC', 'HWIO', 'NHWC'))


@needs_kernel
@pytest.mark.parametrize('vertical', [True, False])
@pytest.mark.parametrize('taps, dilation', [(3, 1), (3, 2), (5, 1), (3, 9)])
@pytest.mark.parametrize('channels', [(16, 16), (64, 64), (128, 128), (16, 48), (64, 32)])
def test_conv_kx1_equals_xla_convolution(vertical, taps, dilation, channels):
  cin, cout = channels
  rng = np.random.default_rng(taps * 10 + dilation)
  # Odd sizes and a width that is no multiple of the kernel's pixel blocks (8, 6, 12).
  x = jnp.asarray(rng.normal(size=(2, 11, 23, cin)), jnp.float32)
  shape = (taps, 1, cin, cout) if vertical else (1, taps, cin, cout)
  kernel = jnp.asarray(rng.normal(size=shape) * 0.2, jnp.float32)
  bias = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)
  residual = jnp.asarray(rng.normal(size=(*x.shape[:-1], cout)), jnp.float32)
  plain = _conv(x, kernel, dilation, vertical) + bias
  tol = 1e-5 * float(jnp.abs(plain).max())
  got = native_kernels.conv_kx1(x, kernel, bias, vertical=vertical, dilation=dilation)
  np.testing.assert_allclose(got, plain, atol=tol)
  got = jax.jit(lambda x: native_kernels.conv_kx1(
      x, kernel, bias, vertical=vertical, dilation=dilation, relu=True, residual=residual))(x)
  np.testing.assert_allclose(got, jax.nn.relu(plain + residual), atol=tol)


@needs_kernel
def test_network_with_native_kernels_equals_xla_network():
  variables = folding.fold_batch_norm(_random_variables(19, 0), epsilon=1e-3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 56, 3)), jnp.float32)
  xla = ESNet(19, bn_folded=True).apply(variables, x)
  native = jax.jit(ESNet(19, bn_folded=True, native_kernels=True).apply)(variables, x)
  np.testing.assert_allclose(native, xla, atol=2e-5)
  # The kernels really ran: every factorised convolution (5 FCU(16) and 4 FCU(64), four
  # each, 3 PFCU(128), eight each) and the output layer.
  hlo = jax.jit(ESNet(19, bn_folded=True, native_kernels=True).apply).lower(
      variables, x).as_text()
  assert hlo.count('@esnet_conv_kx1(') == 5 * 4 + 4 * 4 + 3 * 8
  assert hlo.count('@esnet_upsample16(') == 1


@needs_kernel
@pytest.mark.parametrize('features', [5, 11, 16, 19, 32])
def test_upsample16_equals_the_transposed_convolution(features):
  from esnet_jax.models import ConvTranspose2x
  rng = np.random.default_rng(features)
  x = jnp.asarray(rng.normal(size=(2, 5, 7, 16)), jnp.float32)
  layer = ConvTranspose2x(features, 2, padding=0)
  variables = layer.init(jax.random.PRNGKey(0), x)
  variables = {'params': {'kernel': variables['params']['kernel'],
                          'bias': jnp.asarray(rng.normal(size=(features,)), jnp.float32)}}
  expected = layer.apply(variables, x)
  got = jax.jit(ConvTranspose2x(features, 2, padding=0, native=True).apply)(variables, x)
  assert got.shape == (2, 10, 14, features)
  np.testing.assert_allclose(got, expected, atol=1e-5)


@needs_kernel
@pytest.mark.parametrize('channels, taps, dilation', [
    ((16, 16), 3, 1), ((16, 16), 3, 9), ((64, 64), 5, 1), ((32, 48), 3, 2), ((128, 128), 3, 5)])
@pytest.mark.parametrize('vertical', [True, False])
def test_factorized_conv_and_its_gradients_equal_xla(channels, taps, dilation, vertical):
  cin, cout = channels
  rng = np.random.default_rng(cin + taps + dilation)
  x = jnp.asarray(rng.normal(size=(2, 13, 11, cin)), jnp.float32)
  shape = (taps, 1, cin, cout) if vertical else (1, taps, cin, cout)
  kernel = jnp.asarray(rng.normal(size=shape) * 0.2, jnp.float32)
  bias = jnp.asarray(rng.normal(size=(cout,)), jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=(2, 13, 11, cout)), jnp.float32)

  def loss(conv, x, kernel, bias):
    return jnp.sum(conv(x, kernel, bias) * cotangent)

  native = lambda x, k, b: native_kernels.factorized_conv(x, k, b, vertical, dilation)
  xla = lambda x, k, b: _conv(x, k, dilation, vertical) + b
  np.testing.assert_allclose(jax.jit(native)(x, kernel, bias), xla(x, kernel, bias), atol=2e-5)
  got = jax.jit(jax.grad(functools.partial(loss, native), argnums=(0, 1, 2)))(x, kernel, bias)
  want = jax.grad(functools.partial(loss, xla), argnums=(0, 1, 2))(x, kernel, bias)
  for name, g, w in zip(('input', 'kernel', 'bias'), got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()),
                               err_msg=f'gradient of the {name}')


@needs_kernel
@pytest.mark.parametrize('taps, padding, channels, strides, size', [
    ((1, 1), ((0, 0), (0, 0)), (64, 16), (1, 1), (9, 13)),
    ((2, 1), ((0, 1), (0, 0)), (128, 64), (1, 1), (9, 13)),
    ((2, 2), ((0, 1), (0, 1)), (16, 32), (1, 1), (9, 13)),
    ((3, 3), ((1, 1), (1, 1)), (32, 16), (1, 1), (9, 13)),
    ((3, 3), ((1, 1), (1, 1)), (16, 48), (2, 2), (10, 14)),  # the downsamplers
    ((3, 3), ((1, 1), (1, 1)), (64, 64), (2, 2), (8, 12)),
    ((3, 3), ((1, 1), (1, 1)), (3, 16), (2, 2), (9, 13)),  # odd sizes, three channels
    ((3, 2), ((0, 2), (1, 0)), (5, 32), (2, 3), (11, 10))])
def test_conv_kernel_gradient_equals_xla(taps, padding, channels, strides, size):
  cin, cout = channels
  rng = np.random.default_rng(cin + cout)
  x = jnp.asarray(rng.normal(size=(2, *size, cin)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(*taps, cin, cout)) * 0.2, jnp.float32)
  xla = lambda x, k: jax.lax.conv_general_dilated(x, k, strides, padding,
                                                  dimension_numbers=('NHWC', 'HWIO', 'NHWC'))
  native = lambda x, k: native_kernels.conv(x, k, padding, strides)
  cotangent = jnp.asarray(rng.normal(size=xla(x, kernel).shape), jnp.float32)
  np.testing.assert_allclose(jax.jit(native)(x, kernel), xla(x, kernel), atol=2e-5)
  got = jax.jit(jax.grad(lambda x, k: jnp.sum(native(x, k) * cotangent), (0, 1)))(x, kernel)
  want = jax.grad(lambda x, k: jnp.sum(xla(x, k) * cotangent), (0, 1))(x, kernel)
  for g, w in zip(got, want):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()))


@needs_kernel
@pytest.mark.parametrize('features', [5, 19, 32])
def test_upsample16_gradients_equal_xla(features):
  from esnet_jax.models import ConvTranspose2x
  rng = np.random.default_rng(features)
  x = jnp.asarray(rng.normal(size=(2, 5, 7, 16)), jnp.float32)
  params = ConvTranspose2x(features, 2, padding=0).init(jax.random.PRNGKey(0), x)['params']
  params = {'kernel': params['kernel'],
            'bias': jnp.asarray(rng.normal(size=(features,)), jnp.float32)}
  cotangent = jnp.asarray(rng.normal(size=(2, 10, 14, features)), jnp.float32)

  def loss(native, params, x):
    y = ConvTranspose2x(features, 2, padding=0, native=native).apply({'params': params}, x)
    return jnp.sum(y * cotangent)

  got = jax.jit(jax.grad(functools.partial(loss, True), (0, 1)))(params, x)
  want = jax.grad(functools.partial(loss, False), (0, 1))(params, x)
  for g, w in zip(jax.tree_util.tree_leaves(got), jax.tree_util.tree_leaves(want)):
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()))


@needs_kernel
def test_train_step_gradients_with_native_kernels_equal_xla():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 48, 3)), jnp.float32)
  labels = jax.random.randint(jax.random.PRNGKey(1), (2, 32, 48), 0, 19)
  variables = ESNet(19).init(jax.random.PRNGKey(0), x)

  def loss(model, params):
    logits, _ = model.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                            train=True, mutable=['batch_stats'],
                            rngs={'dropout': jax.random.PRNGKey(2)})
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1))

  native_model = ESNet(19, native_kernels=True)
  got = jax.jit(jax.value_and_grad(functools.partial(loss, native_model)))(variables['params'])
  want = jax.value_and_grad(functools.partial(loss, ESNet(19)))(variables['params'])
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  # Train-mode BatchNorm on a tiny batch amplifies float32 rounding: XLA's own jitted and
  # eager gradients differ by ~3% here, and so do these. A wrong kernel gradient is O(1).
  # Biases of convolutions in front of a BatchNorm are left out: their true gradient is 0.
  for path, g in jax.tree_util.tree_leaves_with_path(got[1]):
    name = jax.tree_util.keystr(path)
    if name.endswith("['bias']") and 'bn' not in name and 'output_conv' not in name:
      continue
    w = functools.reduce(lambda t, k: t[k.key], path, want[1])
    assert float(jnp.linalg.norm(g - w)) <= 0.1 * float(jnp.linalg.norm(w)), name
  # Every factorised convolution's value, input gradient and kernel gradient ran in the
  # kernels: 5 FCU(16) + 4 FCU(64) + 3 PFCU(128) units (60 convolutions), the
  # four phase convolutions of each of the two upsamplers, the strided convolutions of
  # the two downsamplers after the first (whose 13 outputs stay with XLA) and the output
  # layer, whose forward is `upsample16`.
  hlo = jax.jit(jax.grad(functools.partial(loss, native_model))).lower(
      variables['params']).as_text()
  assert hlo.count('@esnet_conv_wgrad(') == 5 * 4 + 4 * 4 + 3 * 8 + 2 * 4 + 2 + 1
  assert hlo.count('@esnet_conv_kx1(') == 2 * 60
  assert hlo.count('@esnet_upsample16(') == 1


def test_opt_out_and_unsupported_cases_use_xla(monkeypatch):
  native_kernels.available.cache_clear()
  monkeypatch.setenv(native_kernels.OPT_OUT_ENV, '1')
  try:
    assert native_kernels.available() is False
    with pytest.raises(RuntimeError, match='native_kernels=False'):
      native_kernels.conv_kx1(jnp.zeros((1, 4, 4, 16)), jnp.zeros((3, 1, 16, 16)),
                              jnp.zeros((16,)), vertical=True)
  finally:
    native_kernels.available.cache_clear()
  # bfloat16 never takes the kernels, in inference or training.
  variables = _random_variables(19, 0)
  x = jnp.zeros((1, 32, 32, 3))
  model = ESNet(19, dtype=jnp.bfloat16, native_kernels=True)
  for v, train in [(folding.fold_batch_norm(variables, epsilon=1e-3), False),
                   (variables, True)]:
    hlo = jax.jit(lambda v, x: model.clone(bn_folded=not train).apply(
        v, x, train=train, mutable=train and ['batch_stats'], rngs={'dropout': jax.random.PRNGKey(0)}
    )).lower(v, x).as_text()
    assert 'esnet_' not in hlo


def test_failed_compile_warns_and_falls_back(monkeypatch, tmp_path):
  native_kernels.available.cache_clear()
  monkeypatch.setattr(native_kernels, '_cpu_has_avx512', lambda: True)
  monkeypatch.setenv(native_kernels.CACHE_ENV, str(tmp_path))
  monkeypatch.setenv('CXX', '/bin/false')
  monkeypatch.delenv(native_kernels.OPT_OUT_ENV, raising=False)
  try:
    with pytest.warns(RuntimeWarning, match='using XLA convolutions'):
      assert native_kernels.available() is False
  finally:
    native_kernels.available.cache_clear()


def _batch_norm_pair(x, cotangent, **kwargs):
  """Output, new running statistics and (input, scale, bias) gradients of both BatchNorms."""
  import flax.linen as nn

  from esnet_jax.models import NativeBatchNorm
  results = []
  for cls in (nn.BatchNorm, NativeBatchNorm):
    layer = cls(use_running_average=False, momentum=0.9, epsilon=1e-3, **kwargs)
    variables = layer.init(jax.random.PRNGKey(0), x)
    c = x.shape[-1]
    params = {'scale': jnp.linspace(0.5, 2.0, c), 'bias': jnp.linspace(-1.0, 1.0, c)}

    def loss(params, x):
      y, stats = layer.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                             mutable=['batch_stats'])
      return jnp.sum(y * cotangent), (y, stats)

    (_, (y, stats)), grads = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)(params, x)
    results.append((y, stats, grads))
  return results


@needs_kernel
@pytest.mark.parametrize('shape', [(2, 7, 9, 16), (3, 5, 6, 64), (4, 45, 60, 128)])
def test_native_batch_norm_equals_flax_batch_norm(shape):
  rng = np.random.default_rng(shape[-1])
  x = jnp.asarray(rng.normal(size=shape) * 2 + 1, jnp.float32)
  cotangent = jnp.asarray(rng.normal(size=shape), jnp.float32)
  flax_result, native_result = _batch_norm_pair(x, cotangent)
  for want, got in zip(jax.tree.leaves(flax_result), jax.tree.leaves(native_result)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5 * float(jnp.abs(want).max()))


_PMAP_BATCH_NORM_CHECK = '''
import jax, jax.numpy as jnp, numpy as np
import flax.linen as nn
from esnet_jax import native_kernels
from esnet_jax.models import NativeBatchNorm
assert jax.local_device_count() == 2 and native_kernels.available()
rng = np.random.default_rng(0)
x = jnp.asarray(rng.normal(size=(2, 3, 8, 10, 16)) * 2 + 1, jnp.float32)
g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
out = []
for cls in (nn.BatchNorm, NativeBatchNorm):
  layer = cls(use_running_average=False, momentum=0.9, epsilon=1e-3, axis_name='batch')
  variables = layer.init(jax.random.PRNGKey(0), x[0])
  params = {'scale': jnp.linspace(0.5, 2.0, 16), 'bias': jnp.linspace(-1.0, 1.0, 16)}
  def loss(params, x, g):
    y, stats = layer.apply({'params': params, 'batch_stats': variables['batch_stats']}, x,
                           mutable=['batch_stats'])
    return jnp.sum(y * g), (y, stats)
  step = jax.pmap(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True), axis_name='batch',
                  in_axes=(None, 0, 0))
  out.append(step(params, x, g))
for want, got in zip(jax.tree.leaves(out[0]), jax.tree.leaves(out[1])):
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=2e-5 * float(jnp.abs(want).max()))
print('CROSS-REPLICA-EQUAL')
'''


@needs_kernel
def test_native_batch_norm_statistics_cross_replicas_like_flax():
  import os
  import subprocess
  import sys
  from pathlib import Path
  repo = Path(__file__).resolve().parents[1]
  env = dict(os.environ, PYTHONPATH=str(repo) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2')
  out = subprocess.run([sys.executable, '-c', _PMAP_BATCH_NORM_CHECK], cwd=repo, env=env,
                       capture_output=True, text=True, timeout=300)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'CROSS-REPLICA-EQUAL' in out.stdout
