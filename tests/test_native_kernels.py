"""The compiled 16-channel kernel: same function as XLA's convolutions, clean fallbacks."""

from __future__ import annotations

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
def test_conv16_equals_xla_convolution(vertical, taps, dilation):
  rng = np.random.default_rng(taps * 10 + dilation)
  # Odd sizes and a width that is no multiple of the kernel's 8-pixel blocks.
  x = jnp.asarray(rng.normal(size=(2, 11, 21, 16)), jnp.float32)
  kernel = jnp.asarray(rng.normal(size=(taps, 1, 16, 16) if vertical else (1, taps, 16, 16)) * 0.2,
                       jnp.float32)
  bias = jnp.asarray(rng.normal(size=(16,)), jnp.float32)
  residual = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
  plain = _conv(x, kernel, dilation, vertical) + bias
  got = native_kernels.conv16(x, kernel, bias, vertical=vertical, dilation=dilation)
  np.testing.assert_allclose(got, plain, atol=1e-5)
  got = jax.jit(lambda x: native_kernels.conv16(
      x, kernel, bias, vertical=vertical, dilation=dilation, relu=True, residual=residual))(x)
  np.testing.assert_allclose(got, jax.nn.relu(plain + residual), atol=1e-5)


@needs_kernel
def test_network_with_native_kernels_equals_xla_network():
  variables = folding.fold_batch_norm(_random_variables(19, 0), epsilon=1e-3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 56, 3)), jnp.float32)
  xla = ESNet(19, bn_folded=True).apply(variables, x)
  native = jax.jit(ESNet(19, bn_folded=True, native_kernels=True).apply)(variables, x)
  np.testing.assert_allclose(native, xla, atol=2e-5)
  # The kernels really ran: five 16-channel FCUs, four calls each, and the output layer.
  hlo = jax.jit(ESNet(19, bn_folded=True, native_kernels=True).apply).lower(
      variables, x).as_text()
  assert hlo.count('esnet_conv16') == 20 and hlo.count('esnet_upsample16') == 1


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


def test_opt_out_and_unsupported_cases_use_xla(monkeypatch):
  native_kernels.available.cache_clear()
  monkeypatch.setenv(native_kernels.OPT_OUT_ENV, '1')
  try:
    assert native_kernels.available() is False
    with pytest.raises(RuntimeError, match='native_kernels=False'):
      native_kernels.conv16(jnp.zeros((1, 4, 4, 16)), jnp.zeros((3, 1, 16, 16)),
                            jnp.zeros((16,)), vertical=True)
  finally:
    native_kernels.available.cache_clear()
  # Training, unfolded BatchNorm, other widths and bfloat16 never take the kernel.
  variables = _random_variables(19, 0)
  x = jnp.zeros((1, 32, 32, 3))
  for model, v, train in [(ESNet(19, native_kernels=True), variables, False),
                          (ESNet(19, dtype=jnp.bfloat16, bn_folded=True, native_kernels=True),
                           folding.fold_batch_norm(variables, epsilon=1e-3), False)]:
    hlo = jax.jit(lambda v, x: model.apply(v, x, train=train)).lower(v, x).as_text()
    assert 'esnet_conv16' not in hlo and 'esnet_upsample16' not in hlo


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
