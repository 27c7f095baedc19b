"""ESNet modules: architecture facts, shapes, train/eval behaviour, bfloat16."""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esnet_jax.training import trainer
from esnet_jax.model.esnet import ESNet, ConvTranspose2x


def _count(tree) -> int:
  return sum(x.size for x in jax.tree.leaves(tree))


@pytest.fixture(scope='module')
def variables():
  return trainer.init_variables(ESNet(19), jax.random.key(0), (32, 48))


def test_parameter_count_matches_the_paper_network(variables):
  params = variables['params']
  head = _count(params['encoder_output_conv'])
  assert _count(params) == 1_661_522
  assert _count(params) - head == 1_659_071


def test_module_tree_mirrors_the_original_layout(variables):
  params = variables['params']
  assert sorted(params) == ['decoder', 'encoder', 'encoder_output_conv']
  assert sorted(params['encoder']) == ['initial_block'] + [f'layers_{i}' for i in range(10)]
  assert sorted(params['decoder']) == [f'layers_{i}' for i in range(6)] + ['output_conv']
  pfcu = params['encoder']['layers_7']
  # One BatchNorm after the factorized pair, ONE shared by the three dilated branches.
  assert sorted(k for k in pfcu if k.startswith('bn')) == ['bn1', 'bn2']
  assert {f'conv3x1_2{d}' for d in (2, 5, 9)} <= set(pfcu)
  assert pfcu['conv3x1_29']['kernel'].shape == (3, 1, 128, 128)
  assert params['encoder']['layers_4']['conv3x1_1']['kernel'].shape == (5, 1, 64, 64)


@pytest.mark.parametrize('shape', [(2, 64, 96), (1, 24, 40)])
def test_output_shapes(variables, shape):
  n, h, w = shape
  x = jax.random.normal(jax.random.key(1), (n, h, w, 3))
  model = ESNet(19)
  logits = model.apply(variables, x)
  chex.assert_shape(logits, (n, h, w, 19))
  assert logits.dtype == jnp.float32
  enc = model.apply(variables, x, encoder_only=True)
  chex.assert_shape(enc, (n, h // 8, w // 8, 19))
  chex.assert_tree_all_finite((logits, enc))


def test_sizes_not_multiple_of_eight_are_rejected(variables):
  with pytest.raises(ValueError, match='multiples of 8'):
    ESNet(19).apply(variables, jnp.zeros((1, 30, 48, 3)))


def test_dropout_only_in_train_mode(variables):
  model = ESNet(19)
  x = jax.random.normal(jax.random.key(2), (2, 32, 48, 3))

  def train_out(seed):
    out, _ = model.apply(
        variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(seed)}
    )
    return out

  a, b, a2 = train_out(0), train_out(1), train_out(0)
  chex.assert_trees_all_close(a, a2)
  assert float(jnp.abs(a - b).max()) > 1e-3
  # Eval mode needs no rng and is deterministic.
  chex.assert_trees_all_equal(model.apply(variables, x), model.apply(variables, x))


def test_spatial_dropout_drops_whole_channels():
  from esnet_jax.model.esnet import spatial_dropout
  import flax.linen as nn

  class Drop(nn.Module):

    @nn.compact
    def __call__(self, x):
      return spatial_dropout(0.5, train=True)(x)

  x = jnp.ones((4, 8, 8, 32))
  y = Drop().apply({}, x, rngs={'dropout': jax.random.key(0)})
  per_channel = y.reshape(4, 64, 32)
  # Every channel is either all zeros or all 2.0 (kept and rescaled).
  assert bool(jnp.all((per_channel == per_channel[:, :1]))), 'mask not shared over H, W'
  assert 0 < float((per_channel[:, 0] == 0).mean()) < 1


def test_batch_stats_update_only_in_train_mode(variables):
  model = ESNet(19)
  x = 3.0 + jax.random.normal(jax.random.key(3), (2, 32, 48, 3))
  _, updated = model.apply(
      variables, x, train=True, mutable=['batch_stats'], rngs={'dropout': jax.random.key(0)}
  )
  old = variables['batch_stats']['encoder']['initial_block']['bn']['mean']
  new = updated['batch_stats']['encoder']['initial_block']['bn']['mean']
  assert float(jnp.abs(new - old).max()) > 1e-3
  _, unchanged = model.apply(variables, x, train=False, mutable=['batch_stats'])
  chex.assert_trees_all_equal(unchanged['batch_stats'], variables['batch_stats'])


def test_batch_norm_running_average_uses_pytorch_momentum(variables):
  """running = 0.9 * running + 0.1 * batch_mean (PyTorch momentum 0.1)."""
  import flax.linen as nn
  from esnet_jax.model.esnet import DownsamplerBlock
  import functools

  norm = functools.partial(nn.BatchNorm, use_running_average=False, momentum=0.9, epsilon=1e-3)
  block = DownsamplerBlock(16, norm)
  x = jax.random.normal(jax.random.key(4), (2, 16, 16, 3)) + 1.0
  v = block.init(jax.random.key(0), x)
  y, upd = block.apply(v, x, mutable=['batch_stats'])
  pre = block.apply(
      v,
      x,
      mutable=['batch_stats', 'intermediates'],
      capture_intermediates=lambda m, _: isinstance(m, nn.Conv),
  )
  conv_out = pre[1]['intermediates']['conv']['__call__'][0]
  pool = nn.max_pool(x, (2, 2), (2, 2))
  batch_mean = jnp.concatenate([conv_out, pool], -1).mean((0, 1, 2))
  chex.assert_trees_all_close(upd['batch_stats']['bn']['mean'], 0.1 * batch_mean, atol=1e-5)


def test_bfloat16_is_finite_and_close_to_float32(variables):
  x = jax.random.normal(jax.random.key(5), (1, 32, 48, 3))
  f32 = ESNet(19).apply(variables, x)
  bf16 = ESNet(19, dtype=jnp.bfloat16).apply(variables, x)
  assert bf16.dtype == jnp.float32  # logits are returned in float32
  chex.assert_tree_all_finite(bf16)
  rel = float(jnp.linalg.norm(bf16 - f32) / jnp.linalg.norm(f32))
  assert rel < 0.05, rel
  # Parameters stay float32 when computing in bfloat16.
  v16 = jax.eval_shape(ESNet(19, dtype=jnp.bfloat16).init, jax.random.key(0), x)
  assert {p.dtype for p in jax.tree.leaves(v16['params'])} == {jnp.dtype(jnp.float32)}


def _naive_conv_transpose(x, w, stride, padding, output_padding):
  """PyTorch ConvTranspose2d semantics, by scattering, in NHWC with w (kH, kW, in, out)."""
  n, h, wd, _ = x.shape
  k = w.shape[0]
  oh = (h - 1) * stride - 2 * padding + k + output_padding
  ow = (wd - 1) * stride - 2 * padding + k + output_padding
  out = np.zeros((n, oh, ow, w.shape[-1]))
  for i in range(h):
    for j in range(wd):
      for a in range(k):
        for b in range(k):
          y, z = i * stride - padding + a, j * stride - padding + b
          if 0 <= y < oh and 0 <= z < ow:
            out[:, y, z] += x[:, i, j] @ w[a, b]
  return out


@pytest.mark.parametrize('kernel,padding,output_padding', [(3, 1, 1), (2, 0, 0)])
def test_subpixel_transposed_conv_equals_pytorch_semantics(kernel, padding, output_padding):
  x = np.asarray(jax.random.normal(jax.random.key(6), (2, 5, 7, 4)))
  layer = ConvTranspose2x(6, kernel, padding)
  v = layer.init(jax.random.key(7), x)
  v = jax.tree.map(lambda p: p + 0.1, v)  # non-zero bias
  got = layer.apply(v, x)
  w = np.asarray(v['params']['kernel'])
  want = _naive_conv_transpose(x, w, 2, padding, output_padding) + np.asarray(v['params']['bias'])
  chex.assert_shape(got, (2, 10, 14, 6))
  np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_max_pool_and_its_gradient_are_xlas_bitwise(dtype):
  """`max_pool_2x2` equals `nn.max_pool`, and its gradient goes to the same pixel of each
  window, ties included (ReLU outputs: many windows of zeros, and equal maxima)."""
  import flax.linen as nn
  from esnet_jax.model.esnet import max_pool_2x2

  rng = np.random.default_rng(0)
  x = np.maximum(rng.normal(size=(2, 12, 18, 16)), 0)
  x[:, ::2, ::2] = x[:, 1::2, 1::2]  # equal maxima at the first and last pixel of a window
  x = jnp.asarray(np.round(x, 1), dtype)
  dy = jnp.asarray(rng.normal(size=(2, 6, 9, 16)), dtype)
  xla = lambda x: nn.max_pool(x, (2, 2), strides=(2, 2))
  got, pull = jax.vjp(max_pool_2x2, x)
  want, want_pull = jax.vjp(xla, x)
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(want, np.float32))
  (grad,), (want_grad,) = jax.jit(pull)(dy), want_pull(dy)
  assert grad.dtype == dtype and int(jnp.sum(grad != 0)) == int(jnp.sum(dy != 0))
  np.testing.assert_array_equal(np.asarray(grad, np.float32), np.asarray(want_grad, np.float32))
