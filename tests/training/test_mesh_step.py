"""esnet_jax.training.mesh_step: the pmapped train step equals one device and jit over a mesh."""

from __future__ import annotations

import pytest

import os
import subprocess
import sys
import textwrap

from conftest import REPO, subprocess_env

_PMAP_CHECK = textwrap.dedent("""
    import jax
    jax.config.update('jax_enable_x64', True)
    import functools, jax.numpy as jnp, numpy as np, flax, optax
    from configs import smoke
    from esnet_jax.training import losses, mesh_step, trainer
    from esnet_jax.model.esnet import ESNet
    assert jax.local_device_count() == 2, jax.devices()
    # float64: in float32, ~30 train-mode BatchNorms on tiny batches amplify rounding
    # to percent-level gradient differences, which would hide real errors.
    f64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
    config = smoke.get_config()
    model = ESNet(5, dtype=jnp.float64, bn_axis_name=trainer.AXIS, use_dropout=False)
    lr_fn = trainer.create_learning_rate_fn(config)
    state = trainer.create_train_state(jax.random.PRNGKey(0), config, model, (32, 48), lr_fn)
    state = state.replace(params=f64(state.params), batch_stats=f64(state.batch_stats))
    state = state.replace(opt_state=state.tx.init(state.params))
    rng = np.random.default_rng(0)
    images = rng.normal(size=(4, 32, 48, 3))
    labels = rng.integers(0, 6, size=(4, 32, 48)).astype(np.int32)  # 5 = ignore
    loss_fn = functools.partial(losses.cross_entropy, ignore_label=5,
                                class_weights=jnp.array([1., 2., .5, 1., 3.]))
    step = functools.partial(trainer.train_step, model=model, loss_fn=loss_fn, lr_fn=lr_fn)
    def run(devices):
      d = len(devices)
      p_step = jax.pmap(step, axis_name='batch', devices=devices, donate_argnums=(0,))
      s = trainer.replicate(state, devices=devices)
      batch = mesh_step.sharded({'image': images.reshape(d, 4 // d, 32, 48, 3),
                                 'label': labels.reshape(d, 4 // d, 32, 48)},
                                mesh_step.mesh(trainer.AXIS, devices))
      s, m = p_step(s, batch)
      # Step 2 as training runs it: the donated state is reused in place, and nothing is
      # copied or resharded on the way in (the transfer guard would raise).
      before = [leaf.sharding for leaf in jax.tree.leaves(s)]
      buffers = {shard.data.unsafe_buffer_pointer() for leaf in jax.tree.leaves(s)
                 for shard in leaf.addressable_shards}
      with jax.transfer_guard('disallow'):
        out, m = p_step(s, batch)
      assert all(leaf.is_deleted() for leaf in jax.tree.leaves(s))
      assert [leaf.sharding for leaf in jax.tree.leaves(out)] == before
      after = {shard.data.unsafe_buffer_pointer() for leaf in jax.tree.leaves(out)
               for shard in leaf.addressable_shards}
      assert len(after & buffers) >= len(buffers) // 2, (len(after & buffers), len(buffers))
      program = p_step.lower(out, batch).compile().as_text()
      for resharding in ('all-gather', 'all-to-all', 'collective-permute'):
        assert resharding not in program, resharding
      return trainer._host_state(out), float(m['loss'][0])
    def run_jit(devices):
      device_mesh = mesh_step.mesh(trainer.AXIS, devices)
      j_step = mesh_step.jit_over_mesh(step, device_mesh)
      s = mesh_step.replicated(jax.tree.map(np.array, state), device_mesh)  # donated below
      batch = mesh_step.sharded({'image': images, 'label': labels}, device_mesh)
      for _ in range(2):
        s, m = j_step(s, batch)
      return jax.tree.map(np.asarray, s), float(m['loss'])
    initial = jax.tree.map(np.array, state.params)
    two, loss2 = run(jax.local_devices())
    one, loss1 = run(jax.local_devices()[:1])
    mesh2, loss_mesh = run_jit(jax.local_devices())
    np.testing.assert_allclose(loss2, loss1, rtol=1e-6)
    np.testing.assert_allclose(loss_mesh, loss2, rtol=1e-9)
    for a, b, c in zip(jax.tree.leaves((two.params, two.batch_stats)),
                       jax.tree.leaves((one.params, one.batch_stats)),
                       jax.tree.leaves((mesh2.params, mesh2.batch_stats))):
      np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
      # atol: biases before a BatchNorm get no gradient but rounding noise (~1e-11).
      np.testing.assert_allclose(c, a, rtol=1e-9, atol=1e-10)
    moved = max(float(np.abs(a - b).max()) for a, b in
                zip(jax.tree.leaves(two.params), jax.tree.leaves(initial)))
    assert moved > 1e-4, moved  # two Adam steps really changed the parameters
    print('PMAP-EQUIVALENT', loss1, loss2)
""")


@pytest.mark.end_to_end
def test_pmapped_step_on_two_devices_equals_one_device_and_jit_over_a_mesh():
  """Two devices compute what one does, and what `jit` over a mesh of them does with the
  same step; the donated state is reused in place and never resharded between steps."""
  xla = (os.environ.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count=2').strip()
  out = subprocess.run(
      [sys.executable, '-c', _PMAP_CHECK],
      cwd=REPO,
      env=subprocess_env(XLA_FLAGS=xla),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'PMAP-EQUIVALENT' in out.stdout
