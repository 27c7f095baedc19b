"""The CPU kernels in bfloat16 (issue #41): bf16 activations, float32 parameters, bf16 dot
products accumulated in float32 (AVX512_BF16).

Each kernel against two references on the same inputs: XLA's own bfloat16 function (the
bound there is bfloat16's tolerance), and the float32 function of the bf16-rounded inputs
and weights, where the only differences left are the kernels' own roundings (the output
once, and in Winograd the transformed inputs and weights). The bounds, on the largest
error over the output's largest magnitude:

- values, against float32: at most 2% (about 5 bf16 steps; measured up to 1.0% in the
  Winograd convolutions, 0.5% in the direct ones);
- weight gradients: float32 sums of bf16 products, so within 1e-5 of float32 on the
  rounded inputs;
- the whole network: argmax of the logits equal to float32's on at least 99% of pixels.

On CPUs without AVX512_BF16 the module is skipped: there `dtype=bfloat16` computes in
float32 (tests/model/test_implementations.py checks that choice on any CPU).
"""

from __future__ import annotations

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esnet_jax.model import folding, implementations
from esnet_jax.benchmarking.contenders import random_variables
from esnet_jax.kernels import build, ops
from esnet_jax.model.esnet import ESNet

pytestmark = pytest.mark.skipif(
    not build.bf16_kernels(),
    reason=f'no bfloat16 kernels here (AVX512_BF16: {build.bf16_dot()}; '
    f'kernels: {build.unavailable_reason() or "built"})',
)

BF16 = jnp.bfloat16
VALUE_BOUND = 0.02  # largest error / largest |output|, against float32 (module docstring)


def _normal(rng, shape, scale=1.0):
  return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)


def _rounded(a):
  return a.astype(BF16).astype(jnp.float32)


def _relative_error(got, want):
  got, want = jnp.asarray(got, jnp.float32), jnp.asarray(want, jnp.float32)
  return float(jnp.max(jnp.abs(got - want)) / jnp.max(jnp.abs(want)))


@pytest.mark.parametrize('vertical', [True, False])
@pytest.mark.parametrize('taps, dilation', [(3, 1), (5, 2), (3, 9)])
@pytest.mark.parametrize('channels', [(16, 16), (64, 64), (128, 128), (16, 48)])
def test_conv_kx1_in_bfloat16(vertical, taps, dilation, channels):
  cin, cout = channels
  rng = np.random.default_rng(taps * 10 + dilation + cin)
  x = _normal(rng, (2, 11, 23, cin))
  kernel = _normal(rng, (taps, 1, cin, cout) if vertical else (1, taps, cin, cout), 0.2)
  bias, residual = _normal(rng, (cout,)), _normal(rng, (2, 11, 23, cout))
  kw = dict(vertical=vertical, dilation=dilation, relu=True)
  got = jax.jit(functools.partial(ops.conv_kx1, **kw))(
      x.astype(BF16), kernel, bias, residual=residual.astype(BF16)
  )
  assert got.dtype == BF16
  exact = ops.conv_kx1_reference(
      _rounded(x), _rounded(kernel), bias, residual=_rounded(residual), **kw
  )
  xla = ops.conv_kx1_reference(x.astype(BF16), kernel, bias, residual=residual.astype(BF16), **kw)
  assert _relative_error(got, exact) <= VALUE_BOUND
  # Within bf16's tolerance of XLA's own bfloat16 function: both round to bf16.
  assert _relative_error(got, xla) <= VALUE_BOUND


@pytest.mark.parametrize(
    'channels, taps, dilation', [((16, 16), 3, 1), ((64, 64), 3, 2), ((128, 128), 3, 9)]
)
@pytest.mark.parametrize('vertical', [True, False])
def test_factorized_conv_gradients_in_bfloat16(channels, taps, dilation, vertical):
  cin, cout = channels
  rng = np.random.default_rng(cin + dilation)
  x = _normal(rng, (2, 13, 11, cin))
  kernel = _normal(rng, (taps, 1, cin, cout) if vertical else (1, taps, cin, cout), 0.2)
  bias, cotangent = _normal(rng, (cout,)), _normal(rng, (2, 13, 11, cout))
  native = lambda x, k, b: ops.factorized_conv(x, k, b, vertical, dilation)
  xla = lambda x, k, b: ops.conv_kx1_reference(x, k, b, vertical=vertical, dilation=dilation)
  loss = lambda f, x, k, b: jnp.sum(f(x, k, b).astype(jnp.float32) * cotangent)
  got = jax.jit(jax.grad(functools.partial(loss, native), (0, 1, 2)))(x.astype(BF16), kernel, bias)
  assert [g.dtype for g in got] == [BF16, jnp.float32, jnp.float32]  # master weights' grads
  want = jax.grad(functools.partial(loss, xla), (0, 1, 2))(_rounded(x), _rounded(kernel), bias)
  for name, g, w in zip(('input', 'kernel', 'bias'), got, want):
    assert _relative_error(g, w) <= VALUE_BOUND, name


@pytest.mark.parametrize(
    'taps, padding, channels, strides',
    [
        ((3, 3), ((1, 1), (1, 1)), (16, 48), (2, 2)),  # the downsamplers
        ((3, 3), ((1, 1), (1, 1)), (64, 64), (2, 2)),
        ((2, 2), ((0, 1), (0, 1)), (128, 64), (1, 1)),  # a transposed convolution's phase
        ((3, 3), ((1, 1), (1, 1)), (3, 13), (2, 2)),  # the first layer: zero-padded channels
    ],
)
def test_conv_and_its_gradients_in_bfloat16(taps, padding, channels, strides):
  cin, cout = channels
  rng = np.random.default_rng(cin + cout)
  x = _normal(rng, (2, 10, 14, cin))
  kernel = _normal(rng, (*taps, cin, cout), 0.2)
  bias = _normal(rng, (cout,))
  native = lambda x, k, b: ops.conv(x, k, padding, strides, b)
  xla = lambda x, k, b: b + jax.lax.conv_general_dilated(
      x, k, strides, padding, dimension_numbers=('NHWC', 'HWIO', 'NHWC')
  )
  got = jax.jit(native)(x.astype(BF16), kernel, bias)
  assert got.dtype == BF16
  assert _relative_error(got, xla(_rounded(x), _rounded(kernel), bias)) <= VALUE_BOUND
  cotangent = _normal(rng, got.shape)
  loss = lambda f, *a: jnp.sum(f(*a).astype(jnp.float32) * cotangent)
  got = jax.jit(jax.grad(functools.partial(loss, native), (0, 1, 2)))(x.astype(BF16), kernel, bias)
  want = jax.grad(functools.partial(loss, xla), (0, 1, 2))(_rounded(x), _rounded(kernel), bias)
  assert got[2].dtype == jnp.float32
  for g, w in zip(got, want):
    assert _relative_error(g, w) <= VALUE_BOUND


@pytest.mark.parametrize('kernel_size, padding', [(3, 1), (4, 1), (2, 0)])
def test_conv_phases_and_their_gradients_in_bfloat16(kernel_size, padding):
  # ESNet's upsamplers are (3, 1); the input gradient is one strided `conv2d` of dy.
  rng = np.random.default_rng(7)
  x = _normal(rng, (2, 6, 9, 64))
  full = _normal(rng, (kernel_size, kernel_size, 64, 32), 0.2)
  kernels, paddings = ops.transposed_phases(full, (padding, padding))
  bias = _normal(rng, (32,))
  native = lambda x, k, b: ops.conv_phases(x, k, paddings, b)
  xla = lambda x, k, b: ops.conv_phases_reference(x, k, paddings, b)
  got = jax.jit(native)(x.astype(BF16), kernels, bias)
  assert got.dtype == BF16 and got.shape == (2, 12, 18, 32)
  rounded = tuple(_rounded(k) for k in kernels)
  assert _relative_error(got, xla(_rounded(x), rounded, bias)) <= VALUE_BOUND
  cotangent = _normal(rng, got.shape)
  loss = lambda f, *a: jnp.sum(f(*a).astype(jnp.float32) * cotangent)
  got = jax.jit(jax.grad(functools.partial(loss, native), (0, 1, 2)))(x.astype(BF16), kernels, bias)
  want = jax.grad(functools.partial(loss, xla), (0, 1, 2))(_rounded(x), rounded, bias)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert _relative_error(g, w) <= VALUE_BOUND


@pytest.mark.parametrize(
    'taps, strides, dilation, offset, channels, size',
    [
        ((3, 1), (1, 1), (9, 1), (-9, 0), (16, 16), (11, 13)),
        ((1, 3), (1, 1), (1, 5), (0, -5), (64, 64), (7, 131)),  # past a 128-pixel chunk
        ((3, 3), (2, 2), (1, 1), (-1, -1), (13, 48), (5, 6)),  # odd Cin, stride 2
    ],
)
def test_conv_wgrad_in_bfloat16_sums_in_float32(taps, strides, dilation, offset, channels, size):
  cin, cout = channels
  rng = np.random.default_rng(cin * cout)
  in_size = tuple(
      (n - 1) * s + 1 + (t - 1) * d for n, s, t, d in zip(size, strides, taps, dilation)
  )
  x, dy = _normal(rng, (2, *in_size, cin)), _normal(rng, (2, *size, cout))
  kw = dict(strides=strides, dilation=dilation, offset=offset)
  got = jax.jit(lambda x, dy: ops.conv_wgrad(x, dy, taps, **kw))(x.astype(BF16), dy.astype(BF16))
  want = ops.conv_wgrad_reference(_rounded(x), _rounded(dy), taps, **kw)
  for g, w in zip(got, want):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(jnp.abs(w).max()))


def test_batch_norm_train_in_bfloat16_keeps_float32_statistics():
  rng = np.random.default_rng(3)
  x = (_normal(rng, (4, 9, 10, 64), 2.0) + 1).astype(BF16)
  scale, bias = jnp.linspace(0.5, 2.0, 64), jnp.linspace(-1.0, 1.0, 64)
  cotangent = _normal(rng, x.shape)

  def run(f):
    def loss(x, scale, bias):
      y, mean, var = f(x, scale, bias, 1e-3)
      return jnp.sum(y.astype(jnp.float32) * cotangent), (y, mean, var)

    return jax.jit(jax.value_and_grad(loss, (0, 1, 2), has_aux=True))(x, scale, bias)

  got, want = run(ops.batch_norm_train), run(ops.batch_norm_train_reference)
  (_, (y, mean, var)), grads = got
  assert y.dtype == BF16 and mean.dtype == var.dtype == jnp.float32
  assert [g.dtype for g in grads] == [BF16, jnp.float32, jnp.float32]
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    assert _relative_error(g, w) <= VALUE_BOUND


def test_network_in_bfloat16_runs_in_the_kernels_and_agrees_with_float32():
  variables = folding.fold_batch_norm(random_variables(19, 0), epsilon=1e-3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 64, 96, 3)), jnp.float32)
  model = implementations.esnet(19, kernels='native', bn_folded=True, dtype=BF16)
  got = jax.jit(model.apply)(variables, x)
  want = ESNet(19, bn_folded=True).apply(variables, x)
  assert got.dtype == jnp.float32
  assert float(jnp.mean(jnp.argmax(got, -1) == jnp.argmax(want, -1))) >= 0.99
  assert _relative_error(got, want) <= 0.05  # a chain of 60 bf16 roundings
  hlo = jax.jit(model.apply).lower(variables, x).as_text()
  assert hlo.count('@esnet_conv_kx1_bf16(') == 5 * 4 + 4 * 4 + 3 * 8
  assert hlo.count('@esnet_conv2d_phase_bf16(') == 2 * 4
  assert hlo.count('@esnet_conv2d_bf16(') == 3  # the downsamplers, the first zero-padded
  assert ' convolution(' not in jax.jit(model.apply).lower(variables, x).compile().as_text()


def test_train_step_gradients_in_bfloat16_are_as_close_to_float32_as_xlas():
  """The whole network's parameter gradients in bfloat16 are float32 (the master
  weights'), and no further from float32's than XLA's own bfloat16 network's. Both are
  far: with random weights and train-mode BatchNorm on a small batch, 60 layers of bf16
  rounding leave a gradient whose cosine with float32's is about 0.1-0.2 (measured), so
  this checks the kernels against XLA's bf16, and the ops above check the arithmetic."""
  x = jnp.asarray(np.random.default_rng(0).normal(size=(4, 64, 96, 3)), jnp.float32)
  labels = jax.random.randint(jax.random.PRNGKey(1), (4, 64, 96), 0, 19)
  variables = random_variables(19, 0)

  def loss_of(model):
    def loss(params):
      logits, _ = model.apply(
          {'params': params, 'batch_stats': variables['batch_stats']},
          x,
          train=True,
          mutable=['batch_stats'],
      )
      log_p = jax.nn.log_softmax(logits.astype(jnp.float32))
      return -jnp.mean(jnp.take_along_axis(log_p, labels[..., None], -1))

    return jax.jit(jax.value_and_grad(loss))(variables['params'])

  flat = lambda tree: jnp.concatenate([g.ravel() for g in jax.tree.leaves(tree)])
  kernels = loss_of(implementations.esnet(19, kernels='native', dtype=BF16, use_dropout=False))
  xla = loss_of(ESNet(19, dtype=BF16, use_dropout=False))
  want = loss_of(ESNet(19, use_dropout=False))
  assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(kernels[1]))
  assert abs(float(kernels[0]) - float(want[0])) <= 1e-3 * abs(float(want[0]))
  distance = lambda got: float(jnp.linalg.norm(flat(got[1]) - flat(want[1])))
  assert distance(kernels) <= 1.25 * distance(xla)


def test_train_step_in_bfloat16_leaves_no_convolution_to_xla_but_the_output_layers():
  """Every convolution of a bf16 train step runs in the kernels, forward and backward:
  XLA:CPU's (the first layer, the strided and transposed convolutions' input gradients)
  took about 100 of 800 ms at 360x480, batch 4. Left to XLA: the output layer's input
  gradient, in float32."""
  x = jnp.zeros((2, 64, 96, 3), jnp.float32)
  model = implementations.esnet(19, kernels='native', dtype=BF16, use_dropout=False)
  variables = random_variables(19, 0)

  def loss(params):
    logits, _ = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        x,
        train=True,
        mutable=['batch_stats'],
    )
    return jnp.sum(logits.astype(jnp.float32))

  hlo = jax.jit(jax.grad(loss)).lower(variables['params']).compile().as_text()
  assert re.findall(r'= (\w+)\[[\d,]+\]\S* convolution\(', hlo) == ['f32']
