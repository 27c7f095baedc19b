"""One setting chooses who computes ESNet; every choice is the same function on the same
variables, and programs lowered for a GPU never hold this package's kernels."""

from __future__ import annotations

import functools
import logging

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from esnet_jax.model import folding, implementations
from esnet_jax.training import trainer
from esnet_jax.benchmarking.contenders import random_variables
from esnet_jax.kernels import build
from esnet_jax.model import kernel_layers
from esnet_jax.model.esnet import ESNet
from configs import default as default_config

needs_kernels = pytest.mark.skipif(
    not build.available(), reason=f'compiled kernels unavailable: {build.unavailable_reason()}'
)


def _custom_calls(text: str) -> int:
  return text.count('custom_call @esnet_') + text.count('custom_call_target="esnet_')


def test_models_module_is_pure_flax():
  import esnet_jax.model.esnet as models

  source = open(models.__file__).read()
  assert 'kernels' not in source.split('"""', 2)[2].replace('esnet_jax.model.implementations', '')
  assert 'native' not in source


@pytest.mark.parametrize('bn_folded', [False, True])
def test_every_choice_has_the_same_variables(bn_folded):
  x = jnp.zeros((1, 32, 32, 3))
  kwargs = dict(bn_folded=bn_folded)
  pure = jax.eval_shape(ESNet(19, **kwargs).init, jax.random.key(0), x)
  parts = (
      dict(
          conv=kernel_layers.KernelConv,
          conv_transpose=kernel_layers.KernelConvTranspose2x,
          fcu=kernel_layers.FusedFCU,
          pfcu=kernel_layers.FusedPFCU,
      )
      if bn_folded
      else dict(
          conv=kernel_layers.KernelConv,
          norm=kernel_layers.KernelBatchNorm,
          conv_transpose=kernel_layers.KernelConvTranspose2x,
      )
  )
  kernel = jax.eval_shape(ESNet(19, **kwargs, **parts).init, jax.random.key(0), x)
  assert jax.tree.map(lambda a: (a.shape, a.dtype), pure) == jax.tree.map(
      lambda a: (a.shape, a.dtype), kernel
  )


def test_choice_errors_are_one_line(monkeypatch):
  with pytest.raises(ValueError, match="kernels must be one of 'auto', 'xla', 'native'"):
    implementations.esnet(19, kernels='fast')
  monkeypatch.setattr(build, 'unavailable_reason', lambda: 'this CPU (other) has no SIMD')
  with pytest.raises(implementations.KernelsUnavailableError) as e:
    implementations.esnet(19, kernels='native')
  assert '\n' not in str(e.value) and 'no SIMD' in str(e.value)
  assert not implementations.uses_kernels(implementations.esnet(19, kernels='xla'))


@needs_kernels
def test_bfloat16_without_bf16_dot_products(monkeypatch, caplog):
  """On a CPU without AVX512_BF16: 'native' in bfloat16 is a one-line error, 'auto' computes
  in float32 with the kernels and says so once, 'xla' keeps bfloat16."""
  monkeypatch.setattr(build, 'bf16_dot', lambda: False)
  implementations._say_bfloat16_runs_in_float32.cache_clear()
  with pytest.raises(implementations.KernelsUnavailableError, match='AVX512_BF16') as e:
    implementations.esnet(19, kernels='native', dtype=jnp.bfloat16)
  assert '\n' not in str(e.value)
  with caplog.at_level(logging.WARNING, logger='esnet_jax'):
    model = implementations.esnet(19, dtype=jnp.bfloat16)
    implementations.esnet(19, dtype=jnp.bfloat16)
  assert implementations.uses_kernels(model) and model.dtype == jnp.float32
  said = [r.getMessage() for r in caplog.records if 'bfloat16 dot products' in r.getMessage()]
  assert len(said) == 1 and 'computing in float32' in said[0]
  xla = implementations.esnet(19, kernels='xla', dtype=jnp.bfloat16)
  assert not implementations.uses_kernels(xla) and xla.dtype == jnp.bfloat16


@pytest.mark.skipif(not build.bf16_dot(), reason='needs a CPU with AVX512_BF16')
@needs_kernels
def test_bfloat16_takes_the_kernels_where_the_cpu_has_bf16_dot_products():
  for kernels in ('auto', 'native'):
    model = implementations.esnet(19, kernels=kernels, dtype=jnp.bfloat16)
    assert implementations.uses_kernels(model) and model.dtype == jnp.bfloat16


def _train_loss(model, variables, x, labels):
  def loss(params):
    logits, _ = model.apply(
        {'params': params, 'batch_stats': variables['batch_stats']},
        x,
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': jax.random.PRNGKey(2)},
    )
    return -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[..., None], -1))

  return loss


@needs_kernels
def test_folded_inference_with_kernels_equals_xla():
  variables = folding.fold_batch_norm(random_variables(19, 0), epsilon=1e-3)
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 56, 3)), jnp.float32)
  model = implementations.esnet(19, kernels='native', bn_folded=True)
  assert implementations.uses_kernels(model)
  np.testing.assert_allclose(
      jax.jit(model.apply)(variables, x), ESNet(19, bn_folded=True).apply(variables, x), atol=2e-5
  )
  # The kernels really ran: every factorised convolution (5 FCU(16) and 4 FCU(64), four
  # each, 3 PFCU(128), eight each) and the output layer.
  hlo = jax.jit(model.apply).lower(variables, x).as_text()
  assert hlo.count('@esnet_conv_kx1(') == 5 * 4 + 4 * 4 + 3 * 8
  assert hlo.count('@esnet_upsample16(') == 1


@needs_kernels
def test_train_gradients_with_kernels_equal_xla():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 32, 48, 3)), jnp.float32)
  labels = jax.random.randint(jax.random.PRNGKey(1), (2, 32, 48), 0, 19)
  variables = random_variables(19, 0)
  model = implementations.esnet(19, kernels='native')
  loss = _train_loss(model, variables, x, labels)
  got = jax.jit(jax.value_and_grad(loss))(variables['params'])
  want = jax.jit(jax.value_and_grad(_train_loss(ESNet(19), variables, x, labels)))(
      variables['params']
  )
  np.testing.assert_allclose(got[0], want[0], rtol=1e-5)
  # Train-mode BatchNorm on a tiny batch amplifies float32 rounding, and a max-pool's
  # near-ties turn it into a different pixel's gradient: XLA's own jitted and eager
  # gradients differ by ~3% here, and one program compiled two ways (nn.max_pool against
  # max_pool_2x2, equal in float64) by up to 14% on the small (norm 0.05) BatchNorm bias
  # in front of the last downsampler; kernels against XLA measured up to 23% there. A wrong
  # kernel gradient is O(1). Biases of convolutions in front of a BatchNorm are left out:
  # their true gradient is 0.
  for path, g in jax.tree_util.tree_leaves_with_path(got[1]):
    name = jax.tree_util.keystr(path)
    if name.endswith("['bias']") and 'bn' not in name and 'output_conv' not in name:
      continue
    w = functools.reduce(lambda t, k: t[k.key], path, want[1])
    assert float(jnp.linalg.norm(g - w)) <= 0.35 * float(jnp.linalg.norm(w)), name
  # Every factorised convolution's value, input gradient and kernel gradient ran in the
  # kernels: 60 factorised convolutions, the four phases of the two upsamplers, the
  # strided convolutions of the two downsamplers after the first (13 outputs stay with
  # XLA) and the output layer, whose forward is `upsample16`.
  hlo = jax.jit(jax.grad(loss)).lower(variables['params']).as_text()
  assert hlo.count('@esnet_conv_wgrad(') == 5 * 4 + 4 * 4 + 3 * 8 + 2 * 4 + 2 + 1
  assert hlo.count('@esnet_conv_kx1(') == 2 * 60
  assert hlo.count('@esnet_upsample16(') == 1


@needs_kernels
def test_programs_lowered_for_gpu_hold_no_kernel_calls():
  """The model exactly as training builds it by default ('auto', kernels available here):
  the train step's gradient and the inference function lowered for CUDA are pure XLA,
  while the same functions lowered for this CPU do call the kernels."""
  from jax import export

  config = default_config.get_config()
  assert config.model.kernels == 'auto'
  model = trainer.create_model(config, 19, axis_name=None)
  assert implementations.uses_kernels(model)
  x = jnp.zeros((2, 32, 32, 3))
  labels = jnp.zeros((2, 32, 32), jnp.int32)
  variables = random_variables(19, 0)
  grad = jax.jit(jax.grad(_train_loss(model, variables, x, labels)))
  gpu = export.export(grad, platforms=('cuda',))(variables['params']).mlir_module()
  assert _custom_calls(gpu) == 0 and 'stablehlo.convolution' in gpu
  assert _custom_calls(grad.lower(variables['params']).as_text()) > 0
  folded = folding.fold_batch_norm(variables, epsilon=1e-3)
  for kwargs, v in [(dict(bn_folded=True), folded), ({}, variables)]:
    infer = implementations.esnet(19, **kwargs)
    assert implementations.uses_kernels(infer)
    forward = jax.jit(functools.partial(infer.apply, train=False))
    gpu = export.export(forward, platforms=('cuda',))(v, x).mlir_module()
    assert _custom_calls(gpu) == 0
    assert _custom_calls(forward.lower(v, x).as_text()) > 0


def test_uses_kernels_reads_the_injected_parts():
  assert not implementations.uses_kernels(ESNet(19))
  assert implementations.uses_kernels(ESNet(19, conv=kernel_layers.KernelConv))
  assert ESNet.conv is nn.Conv
