"""Training: schedule, optimizer, pmapped step vs single device, end-to-end runs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import REPO, RUN, STEPS, finished_run, run_main, start_main, subprocess_env
from configs import smoke
from esnet_jax.weights import checkpoints
from esnet_jax.training import trainer


def test_learning_rate_warmup_then_poly():
  config = smoke.get_config()
  config.num_train_steps = 100
  config.optimizer.warmup_steps = 10
  lr = trainer.create_learning_rate_fn(config)
  base = config.optimizer.learning_rate
  assert float(lr(0)) == 0.0
  assert float(lr(5)) == pytest.approx(base / 2)
  assert float(lr(10)) == pytest.approx(base)
  assert float(lr(55)) == pytest.approx(base * (1 - 45 / 90) ** 0.9, rel=1e-5)
  assert float(lr(100)) == pytest.approx(0.0, abs=1e-12)


def test_class_weight_power_softens_the_weights_and_the_cache_keeps_them_whole(tmp_path):
  from esnet_jax.data import input_pipeline
  from esnet_jax.data.datasets import build_source

  config = smoke.get_config()
  config.loss.class_weights = 'enet'
  table = input_pipeline.dataset_class_table(config)
  source = build_source(config.dataset, config.dataset.train_split)
  whole = trainer.class_weights(config, tmp_path, table, source)
  assert whole.max() / whole.min() > 1.5  # Something to soften.
  config.loss.class_weight_power = 0.5  # As when a resumed run changes it.
  soft = trainer.class_weights(config, tmp_path, table, source)
  np.testing.assert_allclose(soft, np.sqrt(whole), rtol=1e-6)
  cached = json.loads((tmp_path / trainer.CLASS_WEIGHTS_FILE).read_text())['weights']
  np.testing.assert_allclose(cached, whole, rtol=1e-6)
  config.loss.class_weights = ','.join(['4'] * table.num_classes)  # Given ones too.
  np.testing.assert_array_equal(
      trainer.class_weights(config, tmp_path, table, source), [2] * table.num_classes
  )


def test_coupled_weight_decay_is_pytorch_adam_l2():
  config = smoke.get_config()
  config.optimizer.weight_decay = 0.1
  lr = lambda step: 0.01
  params = {'w': jnp.array([1.0, -2.0])}
  grads = {'w': jnp.array([0.5, 0.5])}
  coupled = trainer.create_optimizer(config, lr)
  updates, _ = coupled.update(grads, coupled.init(params), params)
  g = grads['w'] + 0.1 * params['w']  # L2 folded into the gradient, then Adam
  adam_first = -0.01 * g / (jnp.abs(g) + config.optimizer.eps)
  chex.assert_trees_all_close(updates['w'], adam_first, rtol=1e-5)
  config.optimizer.weight_decay_mode = 'decoupled'
  decoupled = trainer.create_optimizer(config, lr)
  updates, _ = decoupled.update(grads, decoupled.init(params), params)
  chex.assert_trees_all_close(
      updates['w'], -0.01 * (jnp.sign(grads['w']) + 0.1 * params['w']), rtol=1e-4
  )


def test_initial_variables_hold_the_bits_of_a_default_compile():
  """`init_variables` compiles the initialisers quicker without changing one value."""
  import functools
  from flax import linen as nn
  from esnet_jax.model.esnet import FCU, PFCU

  class Stack(nn.Module):

    @nn.compact
    def __call__(self, x, train):
      norm = functools.partial(nn.BatchNorm, use_running_average=not train)
      x = nn.Conv(32, (3, 3))(x)
      for _ in range(4):
        x = FCU(3, 0.0, norm)(x, train)
      return PFCU(0.0, norm)(x, train)

  model, rng = Stack(), jax.random.key(3)
  quick = trainer.init_variables(model, rng, (16, 16))
  default = jax.jit(functools.partial(model.init, train=False))(rng, jnp.zeros((1, 16, 16, 3)))
  chex.assert_trees_all_equal(quick, default)


def test_a_replicated_state_feeds_the_pmapped_step_without_a_retrace():
  """The step's output is laid out as its input, so step 2 reuses step 1's trace (an
  ESNet train step takes seconds to trace; with `flax.jax_utils.replicate` it was
  traced twice)."""
  traces = []

  def step(state):
    traces.append(1)
    return jax.tree.map(lambda x: x + 1, state)

  p_step = jax.pmap(step, axis_name=trainer.AXIS, donate_argnums=(0,))
  state = trainer.replicate({'w': np.zeros(3, np.float32), 'step': np.int32(0)})
  for _ in range(3):
    state = p_step(state)
  assert len(traces) == 1
  host = trainer._host_state(state)
  assert host['w'].tolist() == [3, 3, 3] and int(host['step']) == 3


def _finish(proc, timeout=600):
  out, err = proc.communicate(timeout=timeout)
  return proc.returncode, out, err


def _wait_for(path: Path, proc, timeout=300):
  start = time.time()
  while not path.exists():
    assert (
        proc.poll() is None
    ), f'process ended before {path} appeared: {proc.stderr.read()[-2000:]}'
    assert time.time() - start < timeout, f'{path} did not appear'
    time.sleep(0.02)


@pytest.mark.end_to_end
def test_end_to_end_run_writes_metrics_eval_and_checkpoints(reference_run):
  workdir, out = reference_run
  assert f'step {STEPS}/{STEPS}' in out and 'ETA' in out and 'img/s' in out
  lines = [json.loads(l) for l in (workdir / 'metrics.jsonl').read_text().splitlines()]
  train_lines = [l for l in lines if 'train/loss' in l]
  assert [l['step'] for l in train_lines] == [4, 8]
  assert all(np.isfinite(l['train/loss']) for l in train_lines)
  assert any('eval/miou' in l for l in lines)
  assert list((workdir / 'tensorboard').glob('events.out.tfevents*'))
  summary = json.loads((workdir / 'eval' / f'step_{STEPS}.json').read_text())
  assert 0.0 <= summary['miou'] <= 1.0 and len(summary['per_class_iou']) == 8
  assert np.asarray(summary['confusion_matrix']).shape == (8, 8)
  # keep_checkpoints=3 of the steps 2..8, and the best apart.
  assert sorted(int(p.name) for p in (workdir / 'checkpoints').iterdir()) == [4, 6, 8]
  assert [p.name for p in (workdir / 'best').iterdir()] == [str(STEPS)]
  assert json.loads((workdir / 'class_weights.json').read_text())['weights']


def _killed_at_step_2_then_resumed(workdir: Path, *overrides: str):
  """A run SIGKILLed once its step-2 checkpoint exists, then the same command to its end:
  (the killed process, the resumed run's output)."""
  proc = start_main(workdir, *overrides)
  _wait_for(workdir / 'checkpoints' / '2', proc)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  assert not (workdir / 'checkpoints' / str(STEPS)).exists(), 'finished before it was killed'
  out = run_main(workdir, *overrides)
  assert out.returncode == 0, out.stderr[-3000:]
  assert 'Resumed from' in out.stdout
  return proc, out


@pytest.mark.end_to_end
def test_sigkill_then_resume_is_bitwise_equal_to_uninterrupted(reference_run, tmp_path):
  ref_dir, _ = reference_run
  proc, out = _killed_at_step_2_then_resumed(tmp_path, *RUN)
  # The same command:
  assert f'taking over the lock left by process {proc.pid} ' in out.stderr
  resumed = checkpoints.restore_variables(tmp_path)
  reference = checkpoints.restore_variables(ref_dir)
  for a, b in zip(jax.tree.leaves(resumed), jax.tree.leaves(reference)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.end_to_end
def test_sigterm_saves_a_checkpoint_and_exits_zero(tmp_path):
  proc = start_main(tmp_path, *RUN, '--config.num_train_steps=12')
  _wait_for(tmp_path / 'checkpoints' / '2', proc)
  proc.send_signal(signal.SIGTERM)
  code, out, err = _finish(proc)
  assert code == 0, err[-3000:]
  assert 'SIGTERM' in out
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir() if p.name.isdigit())
  assert steps and steps[-1] < 12
  assert 'SIGTERM: saving a checkpoint at step %d' % steps[-1] in out


@pytest.mark.end_to_end
def test_eval_mode_reproduces_the_training_evaluation(reference_run, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(reference_run[0], workdir)  # Eval writes beside the shared run's files.
  config = smoke.get_config()
  config.mode = 'eval'
  config.eval.which = 'best'
  config.eval.engine = 'jax'
  summary = trainer.evaluate_checkpoint(config, workdir)
  trained = json.loads((workdir / 'eval' / f'step_{STEPS}.json').read_text())
  assert summary['step'] == STEPS and summary['engine'] == 'jax'
  assert summary['miou'] == pytest.approx(trained['miou'], abs=1e-9)
  assert (workdir / 'eval' / f'eval_best_step_{STEPS}.json').exists()
  # Another engine measures each image through Segmenter: the same classes up to rounding.
  config.eval.engine = 'onnxruntime'
  summary = trainer.evaluate_checkpoint(config, workdir)
  assert summary['engine'] == 'onnxruntime' and summary['precision'] == 'float32'
  assert summary['miou'] == pytest.approx(trained['miou'], abs=1e-3)
  assert summary['ms_per_image'] > 0
  config.eval.engine, config.eval.precision = 'jax', 'int8'
  with pytest.raises(trainer.ConfigError, match=r"config.eval.engine='jax': expected .*not int8"):
    trainer.evaluate_checkpoint(config, workdir)


@pytest.mark.end_to_end
def test_non_finite_loss_stops_with_the_step_and_keeps_good_checkpoints(tmp_path):
  config = smoke.get_config()
  config.optimizer.learning_rate = 1e30
  config.num_train_steps = 8
  config.checkpoint_every_steps = 1
  with pytest.raises(trainer.NonFiniteLossError, match=r'at step \d'):
    trainer.train_and_evaluate(config, tmp_path)
  for step_dir in (tmp_path / 'checkpoints').iterdir():
    variables = checkpoints.restore_variables(step_dir)
    assert all(np.isfinite(x).all() for x in jax.tree.leaves(variables))


@pytest.mark.parametrize(
    'override,expected',
    [
        ('--config.batch_size=0', 'config.batch_size=0: expected a positive integer'),
        (
            '--config.optimizer.weight_decay_mode=l2',
            "config.optimizer.weight_decay_mode='l2': expected one of coupled, decoupled",
        ),
        ('--config.dataset.crop_size=(30,48)', 'expected two positive multiples of 8'),
        ('--config.lr=1', "unknown config key 'lr'"),
        ('--config.dataset.name=coco', 'dataset'),
        (
            '--config.dataset.phases=((0,0.5,16,16),)',
            'config.dataset.phases[0]=(0, 0.5, 16, 16): expected',
        ),
    ],
)
def test_bad_config_is_a_one_line_error(tmp_path, override, expected):
  code, out, err = _finish(start_main(tmp_path, override))
  assert code != 0
  assert expected in err
  assert 'Traceback' not in err
  assert not (tmp_path / 'checkpoints').exists()


def test_missing_dataset_folder_is_a_one_line_error(tmp_path):
  code, out, err = _finish(
      start_main(
          tmp_path, '--config.dataset.name=camvid', f'--config.dataset.root={tmp_path / "nowhere"}'
      )
  )
  assert code != 0 and 'Traceback' not in err
  assert 'nowhere' in err


@pytest.mark.end_to_end
def test_local_multiprocess_launch_gives_identical_parameters(tmp_path):
  env = subprocess_env(PYTHON=sys.executable, PORT=str(20000 + os.getpid() % 20000))
  out = subprocess.run(
      ['bash', 'launch/local_multiprocess.sh', '2', 'configs/smoke.py', str(tmp_path)],
      cwd=REPO,
      env=env,
      capture_output=True,
      text=True,
      timeout=900,
  )
  logs = [(tmp_path / 'logs' / f'process_{i}.log').read_text() for i in range(2)]
  assert out.returncode == 0, out.stderr + logs[0][-2000:] + logs[1][-2000:]
  digests = []
  for i, log in enumerate(logs):
    line = [l for l in log.splitlines() if l.startswith(f'process {i}: params sha256')]
    assert line, log[-2000:]
    digests.append(line[0].split()[4])
  assert digests[0] == digests[1]
  assert (tmp_path / 'checkpoints' / '4').exists()


def test_weight_average_ramps_its_decay_up_to_the_configured_one():
  ema, new = {'w': jnp.zeros(2)}, {'w': jnp.ones(2)}
  for step, decay in ((0, 0.1), (8, 0.5), (10**6, 0.999)):
    d = min(0.999, (1 + step) / (10 + step))
    assert d == pytest.approx(decay, abs=1e-3)
    chex.assert_trees_all_close(trainer.update_ema(ema, new, step, 0.999)['w'], 1 - d, atol=1e-6)


def test_the_pmapped_step_averages_params_and_batch_norm_statistics():
  """`state.ema` follows the recurrence over the step's own outputs; without it, nothing."""
  import functools
  import optax
  from flax import linen as nn
  from esnet_jax.training import losses

  class Tiny(nn.Module):

    @nn.compact
    def __call__(self, x, train):
      x = nn.Conv(3, (1, 1))(x)
      return nn.BatchNorm(use_running_average=not train, axis_name=train_module.AXIS)(x)

  train_module = trainer
  model = Tiny()
  variables = model.init(jax.random.key(0), jnp.zeros((1, 4, 4, 3)), train=False)
  loss_fn = functools.partial(losses.cross_entropy, ignore_label=3)
  rng = np.random.default_rng(0)
  batches = [
      {
          'image': rng.normal(size=(1, 2, 4, 4, 3)).astype(np.float32),
          'label': rng.integers(0, 3, (1, 2, 4, 4)).astype(np.int32),
      }
      for _ in range(3)
  ]
  for ema in (None, variables):
    state = trainer.TrainState.create(
        apply_fn=model.apply,
        params=variables['params'],
        tx=optax.sgd(0.5),
        batch_stats=variables['batch_stats'],
        rng=jax.random.key_data(jax.random.key(1)),
        ema=ema,
    )
    step = jax.pmap(
        functools.partial(
            trainer.train_step, model=model, loss_fn=loss_fn, lr_fn=lambda s: 0.5, ema_decay=0.2
        ),
        axis_name=trainer.AXIS,
    )
    state = trainer.replicate(state)
    expected = ema
    for i, batch in enumerate(batches):
      state, _ = step(state, batch)
      host = trainer._host_state(state)
      if ema is None:
        assert host.ema is None
        continue
      current = {'params': host.params, 'batch_stats': host.batch_stats}
      d = min(0.2, (1 + i) / (10 + i))
      expected = jax.tree.map(lambda e, v: d * e + (1 - d) * v, expected, current)
      chex.assert_trees_all_close(host.ema, expected, rtol=1e-6)
      chex.assert_trees_all_close(trainer.eval_variables(host), host.ema)
    if ema is not None:  # Three steps moved the average, and not all the way.
      assert not np.allclose(
          host.ema['params']['Conv_0']['kernel'], host.params['Conv_0']['kernel']
      )
      assert not np.allclose(
          host.ema['params']['Conv_0']['kernel'], variables['params']['Conv_0']['kernel']
      )


EMA_RUN = (*RUN, '--config.ema_decay=0.9')


@pytest.fixture(scope='module')
def ema_run(tmp_path_factory) -> tuple[Path, str]:
  """One uninterrupted smoke run with weight EMA: (workdir, its stdout)."""
  return finished_run(tmp_path_factory.mktemp('ema'), *EMA_RUN)


@pytest.mark.end_to_end
def test_a_run_with_weight_ema_hands_its_average_to_inference(ema_run, tmp_path):
  import orbax.checkpoint as ocp

  workdir, out = ema_run
  assert 'weight average sha256' in out
  step_dir = workdir / 'checkpoints' / str(STEPS)
  with ocp.StandardCheckpointer() as checkpointer:
    stored = checkpointer.restore(step_dir / 'state')
  used = checkpoints.restore_variables(workdir)
  chex.assert_trees_all_equal(used, jax.tree.map(np.asarray, dict(stored['ema'])))
  assert not all(
      np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(used['params']), jax.tree.leaves(stored['params']))
  )
  # What eval mode measures from the checkpoint is what training measured: the average.
  config = smoke.get_config()
  config.mode, config.ema_decay, config.eval.which = 'eval', 0.9, 'best'
  copy = tmp_path / 'w'
  shutil.copytree(workdir, copy)
  summary = trainer.evaluate_checkpoint(config, copy)
  trained = json.loads((workdir / 'eval' / f'step_{STEPS}.json').read_text())
  assert summary['miou'] == pytest.approx(trained['miou'], abs=1e-9)


@pytest.mark.end_to_end
def test_sigkill_then_resume_with_weight_ema_is_bitwise_equal(ema_run, tmp_path):
  _killed_at_step_2_then_resumed(tmp_path, *EMA_RUN)
  chex.assert_trees_all_equal(
      checkpoints.restore_variables(tmp_path), checkpoints.restore_variables(ema_run[0])
  )


@pytest.mark.end_to_end
def test_resuming_a_weight_ema_run_without_it_says_so(ema_run, tmp_path):
  workdir = tmp_path / 'w'
  shutil.copytree(ema_run[0], workdir)
  out = run_main(
      workdir, *RUN[:-3], f'--config.num_train_steps={STEPS + 2}', '--config.ema_decay=0'
  )
  assert out.returncode != 0 and 'Traceback' not in out.stderr
  assert 'the weight average (config.ema_decay is 0 in one of the two runs)' in out.stderr


BF16_RUN = (*RUN, '--config.model.dtype=bfloat16', '--config.ema_decay=0.9')


@pytest.fixture(scope='module')
def bf16_run(tmp_path_factory) -> tuple[Path, str]:
  """One uninterrupted smoke run in bfloat16 with weight EMA: (workdir, its stdout)."""
  return finished_run(tmp_path_factory.mktemp('bf16'), *BF16_RUN)


@pytest.mark.end_to_end
def test_a_bfloat16_run_resumes_bitwise_and_its_weights_serve_every_surface(bf16_run, tmp_path):
  """bfloat16 training (issue #41): float32 master weights in the checkpoint, SIGKILL then
  resume bitwise equal, and the weights export to ONNX and run in Segmenter."""
  from esnet_jax import export as export_command
  from esnet_jax.inference.segmenter import Segmenter

  workdir, out = bf16_run
  assert 'weight average sha256' in out
  variables = checkpoints.restore_variables(workdir)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {np.dtype(np.float32)}
  _killed_at_step_2_then_resumed(tmp_path / 'resumed', *BF16_RUN)
  chex.assert_trees_all_equal(checkpoints.restore_variables(tmp_path / 'resumed'), variables)
  onnx = tmp_path / 'model.onnx'
  assert (
      export_command.main(['--checkpoint', str(workdir), '--format', 'onnx', '--out', str(onnx)])
      == 0
  )
  assert onnx.stat().st_size > 1_000_000
  image = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
  classes = Segmenter(variables, dtype=jnp.bfloat16).predict(image)
  assert classes.shape == (64, 96) and classes.max() < 8
