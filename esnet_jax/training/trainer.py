"""Training and evaluation of ESNet: pure step functions and the loop around them.

`train_step` and `eval_step` are pure functions of `(state, batch)` plus
keyword-only settings bound with `functools.partial` before `jax.pmap` over all
local devices (`axis_name='batch'`): gradients are pmean'd, BatchNorm statistics
are cross-replica, metric sums and confusion matrices are psum'd across devices
and hosts. `train_and_evaluate(config, workdir)` is the whole run: data, class
weights, state, resume, logging, periodic evaluation and checkpoints.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import signal
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import linen as nn
from flax.training import train_state

from esnet_jax.data import input_pipeline
from esnet_jax.deploy import engines
from esnet_jax.evaluation import metrics
from esnet_jax.inference import segmenter
from esnet_jax.model import implementations
from esnet_jax.training import losses, plots, workdir_lock
from esnet_jax.training.checkpointer import TrainCheckpointer
from esnet_jax.training.progress import Progress
from esnet_jax.weights import checkpoints, resolver
from esnet_jax.model.esnet import num_classes_of
from esnet_jax.config.validation import ConfigError, validate_config
from esnet_jax.data.datasets import ClassTable, build_source
from esnet_jax.training.metric_writers import MetricWriter
from esnet_jax.config.options import EvalOptions
from esnet_jax.model.esnet import ESNet
from esnet_jax.errors import NonFiniteLossError, OptionError
from esnet_jax.evaluation.evaluator import Evaluator
from esnet_jax.inference.segmenter import Segmenter

AXIS = 'batch'
CLASS_WEIGHTS_FILE = 'class_weights.json'


class TrainState(train_state.TrainState):
  batch_stats: Any
  rng: jax.Array  # Base dropout key; each step and device folds in its own numbers.
  # With `config.ema_decay`: `{'params', 'batch_stats'}` averaged over the steps, the
  # weights that evaluations measure and checkpoints hand to inference. None without.
  ema: Any = None


def eval_variables(state: TrainState) -> dict[str, Any]:
  """The variables a state is evaluated (and used) with: its weight average if it has one."""
  if state.ema is not None:
    return state.ema
  return {'params': state.params, 'batch_stats': state.batch_stats}


def update_ema(ema: Any, variables: Any, step: jax.Array, decay: float) -> Any:
  """The average after the update numbered `step` (0 for the first).

  The decay ramps up as (1 + step) / (10 + step) until it reaches `decay`
  (tf.train.ExponentialMovingAverage's `num_updates`), so that the early average is
  not dominated by the random initialisation.
  """
  step = jnp.asarray(step, jnp.float32)
  d = jnp.minimum(decay, (1.0 + step) / (10.0 + step))
  return jax.tree.map(lambda e, v: d * e + (1.0 - d) * v, ema, variables)


def create_model(
    config: ml_collections.ConfigDict, num_classes: int, axis_name: str | None = AXIS
) -> ESNet:
  """ESNet as the config describes it, from the blocks `config.model.kernels` selects."""
  return implementations.esnet(
      num_classes,
      kernels=config.model.kernels,
      dtype=jnp.dtype(config.model.dtype),
      bn_axis_name=axis_name,
      use_dropout=config.model.dropout,
  )


def create_learning_rate_fn(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Linear warmup to `optimizer.learning_rate`, then poly decay (power 0.9) to zero."""
  opt = config.optimizer
  warmup = int(opt.warmup_steps)
  decay = optax.polynomial_schedule(
      init_value=opt.learning_rate,
      end_value=0.0,
      power=opt.poly_power,
      transition_steps=max(1, config.num_train_steps - warmup),
  )
  if warmup == 0:
    return decay
  ramp = optax.linear_schedule(0.0, opt.learning_rate, warmup)
  return optax.join_schedules([ramp, decay], boundaries=[warmup])


def create_optimizer(
    config: ml_collections.ConfigDict, lr_fn: optax.Schedule
) -> optax.GradientTransformation:
  """Adam; weight decay 'coupled' (PyTorch Adam's L2 in the gradient) or 'decoupled' (AdamW)."""
  opt = config.optimizer
  if opt.weight_decay_mode == 'decoupled':
    return optax.adamw(lr_fn, b1=opt.b1, b2=opt.b2, eps=opt.eps, weight_decay=opt.weight_decay)
  return optax.chain(
      optax.add_decayed_weights(opt.weight_decay),
      optax.scale_by_adam(b1=opt.b1, b2=opt.b2, eps=opt.eps),
      optax.scale_by_learning_rate(lr_fn),
  )


# XLA's CPU backend at its default level spends ~45 s (jax 0.12) optimising the unrolled
# partitionable-threefry code of ESNet's initialisers; level 1 compiles in ~5 s and draws
# the same bits (tests/training/test_trainer.py compares them).
_INIT_COMPILER_OPTIONS = {'cpu': {'xla_backend_optimization_level': 1}}


def init_variables(model: nn.Module, rng: jax.Array, image_size: tuple[int, int]) -> dict[str, Any]:
  """`model.init` in inference mode on one (1, H, W, 3) image, compiled for quick starts."""
  x = jnp.zeros((1, *image_size, 3), jnp.float32)
  lowered = jax.jit(functools.partial(model.init, train=False)).lower(rng, x)
  options = _INIT_COMPILER_OPTIONS.get(jax.default_backend())
  return lowered.compile(compiler_options=options)(rng, x)


def create_train_state(
    rng: jax.Array,
    config: ml_collections.ConfigDict,
    model: ESNet,
    image_size: tuple[int, int],
    lr_fn: optax.Schedule,
) -> TrainState:
  """Initial variables, the optimizer, and the weight average if `config.ema_decay` asks."""
  init_rng, dropout_rng = jax.random.split(rng)
  variables = init_variables(model, init_rng, image_size)
  ema = None
  if config.ema_decay > 0:
    ema = {'params': variables['params'], 'batch_stats': variables['batch_stats']}
  return TrainState.create(
      apply_fn=model.apply,
      params=variables['params'],
      tx=create_optimizer(config, lr_fn),
      batch_stats=variables['batch_stats'],
      rng=dropout_rng,
      ema=ema,
  )


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    model: ESNet,
    loss_fn: Callable[[jax.Array, jax.Array], tuple[jax.Array, jax.Array]],
    lr_fn: optax.Schedule,
    ema_decay: float = 0.0,
) -> tuple[TrainState, dict[str, jax.Array]]:
  """One optimisation step on this device's shard; collectives over `AXIS`.

  A state with a weight average (`state.ema`) updates it with `ema_decay`.
  """
  dropout_rng = jax.random.fold_in(
      jax.random.fold_in(state.rng, state.step), jax.lax.axis_index(AXIS)
  )
  num_devices = jax.lax.psum(1, AXIS)

  def compute_loss(params):
    logits, new_vars = model.apply(
        {'params': params, 'batch_stats': state.batch_stats},
        batch['image'],
        train=True,
        mutable=['batch_stats'],
        rngs={'dropout': dropout_rng},
    )
    loss_sum, weight = loss_fn(logits, batch['label'])
    # Normalised by the GLOBAL weight, scaled so that the pmean over devices is the
    # loss of the whole global batch.
    total_weight = jax.lax.stop_gradient(jax.lax.psum(weight, AXIS))
    loss = loss_sum * num_devices / jnp.maximum(total_weight, 1e-12)
    return loss, (new_vars['batch_stats'], logits)

  (loss, (batch_stats, logits)), grads = jax.value_and_grad(compute_loss, has_aux=True)(
      state.params
  )
  grads = jax.lax.pmean(grads, AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if state.ema is not None:
    new_state = new_state.replace(
        ema=update_ema(
            state.ema,
            {'params': new_state.params, 'batch_stats': batch_stats},
            state.step,
            ema_decay,
        )
    )
  labels = batch['label']
  valid = (labels >= 0) & (labels < logits.shape[-1])
  correct = jnp.sum((jnp.argmax(logits, -1) == labels) & valid)
  return new_state, {
      'loss': jax.lax.pmean(loss, AXIS),
      'learning_rate': lr_fn(state.step),
      'pixel_accuracy': jax.lax.psum(correct, AXIS)
      / jnp.maximum(jax.lax.psum(jnp.sum(valid), AXIS), 1),
  }


def eval_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    model: ESNet,
    num_classes: int,
    ignore_label: int,
    scales: tuple[float, ...] = (1.0,),
    flip: bool = False,
) -> jax.Array:
  """Confusion matrix of this batch, summed over all devices and hosts."""
  label = batch['label']
  probs = segmenter.predict_probabilities(
      eval_variables(state),
      batch['image'],
      model=model,
      out_size=label.shape[1:3],
      scales=scales,
      flip=flip,
  )
  confusion = metrics.confusion_matrix(jnp.argmax(probs, -1), label, num_classes, ignore_label)
  return jax.lax.psum(confusion, AXIS)


def batch_confusions(
    p_eval_step: Callable, state: TrainState, batches: Iterable[Mapping[str, np.ndarray]]
) -> Iterator[np.ndarray]:
  """The pmapped eval step over a finite iterator of batches: each batch's confusion."""
  for batch in batches:
    yield np.asarray(jax.device_get(p_eval_step(state, batch))[0], np.int64)


def class_weights(
    config: ml_collections.ConfigDict, workdir: Path, class_table: ClassTable, source: Any
) -> np.ndarray | None:
  """Per-class loss weights from `config.loss.class_weights` to the power
  `config.loss.class_weight_power`; ENet weights are cached in the workdir (unpowered,
  so that a resumed run may change the power)."""
  mode = config.loss.class_weights
  if mode == 'none':
    return None
  if mode == 'enet':
    weights = _enet_class_weights(workdir, class_table, source)
  else:
    weights = np.asarray([float(w) for w in str(mode).split(',')], np.float32)
    if weights.shape != (class_table.num_classes,):
      raise ConfigError(
          f'config.loss.class_weights has {weights.size} values; '
          f'expected {class_table.num_classes} (or "enet" / "none").'
      )
  return (weights ** np.float32(config.loss.class_weight_power)).astype(np.float32)


def _enet_class_weights(workdir: Path, class_table: ClassTable, source: Any) -> np.ndarray:
  cache = workdir / CLASS_WEIGHTS_FILE
  cached = losses.read_cached_class_weights(cache, class_table.names)  # None if damaged.
  if cached is not None:
    return cached
  counts = losses.count_pixels(
      (source[i]['label'] for i in range(len(source))), class_table.num_classes
  )
  weights = losses.enet_class_weights(counts)
  if jax.process_index() == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix('.tmp')
    tmp.write_text(
        json.dumps(
            {
                'classes': list(class_table.names),
                'pixel_counts': counts.tolist(),
                'weights': weights.tolist(),
            },
            indent=1,
        )
    )
    tmp.replace(cache)
  return weights


def params_fingerprint(params: Any) -> str:
  """sha256 over the bytes of every parameter: equal digests mean bitwise-equal params."""
  digest = hashlib.sha256()
  for leaf in jax.tree.leaves(params):
    digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
  return digest.hexdigest()


def replicate(tree: Any, devices: Sequence[jax.Device] | None = None) -> Any:
  """One copy of `tree` per device (default: the local ones), laid out as the pmapped
  steps lay out theirs.

  That is, sharded along a mesh axis named `AXIS` over the local devices. With
  `flax.jax_utils.replicate` (a mesh axis of its own name), the first step's
  output state differs in sharding from its input, and JAX traces and lowers the
  whole train step a second time at step 2.
  """
  devices = list(devices or jax.local_devices())
  sharding = jax.sharding.NamedSharding(
      jax.sharding.Mesh(np.array(devices), (AXIS,)), jax.sharding.PartitionSpec(AXIS)
  )
  return jax.tree.map(
      lambda x: jax.device_put(
          np.broadcast_to(np.asarray(x), (len(devices), *np.shape(x))), sharding
      ),
      tree,
  )


def _host_state(state: TrainState) -> TrainState:
  """First replica of a replicated state, on the host (no device computation)."""
  return jax.tree.map(lambda x: np.asarray(x.addressable_data(0))[0], state)


def _make_eval_fn(
    config: ml_collections.ConfigDict, model: ESNet, class_table: ClassTable
) -> Callable[[TrainState], dict[str, Any]]:
  """Periodic evaluation: the pmapped eval step over the eval split's batches, summed and
  summarised by the one `Evaluator` of the split."""
  settings = EvalOptions.from_config(config)
  evaluator = Evaluator(config.dataset)
  p_eval_step = jax.pmap(
      functools.partial(
          eval_step,
          model=model,
          num_classes=class_table.num_classes,
          ignore_label=class_table.ignore_label,
          scales=settings.scales,
          flip=settings.flip,
      ),
      axis_name=AXIS,
  )

  def run(state: TrainState) -> dict[str, Any]:
    batches = input_pipeline.create_eval_iterator(
        config,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        local_device_count=jax.local_device_count(),
    )
    return evaluator.run_batched(batch_confusions(p_eval_step, state, batches))

  return run


def _write_eval(
    workdir: Path,
    step: int | None,
    summary: Mapping[str, Any],
    writer: MetricWriter,
    class_table: ClassTable,
    name: str | None = None,
) -> None:
  if jax.process_index() != 0:
    return
  out = workdir / 'eval'
  out.mkdir(parents=True, exist_ok=True)
  path = out / (name or f'step_{step}.json')
  path.write_text(
      json.dumps({'step': step, 'class_names': list(class_table.names), **summary}, indent=1)
  )
  if step is not None:  # Weights without a training step have no place on the curves.
    scalars = {'eval/miou': summary['miou'], 'eval/pixel_accuracy': summary['pixel_accuracy']}
    scalars.update({f'eval/iou/{k}': v for k, v in summary['per_class_iou'].items()})
    writer.write_scalars(step, scalars)
  per_class = ', '.join(
      f'{k} {100 * v:.1f}' if v is not None else f'{k} -'
      for k, v in summary['per_class_iou'].items()
  )
  where = f'step {step}' if step is not None else summary.get('checkpoint', '?')
  writer.print(
      f'eval @ {where}: mIoU {100 * summary["miou"]:.2f}% | pixel acc '
      f'{100 * summary["pixel_accuracy"]:.2f}% | {per_class} -> {path}'
  )


def _checkpoint_meta(config: ml_collections.ConfigDict, class_table: ClassTable) -> dict:
  return {
      'num_classes': class_table.num_classes,
      'class_names': list(class_table.names),
      'colours': [list(c) for c in class_table.colours],
      'ignore_label': class_table.ignore_label,
      'mean': list(config.dataset.mean),
      'std': list(config.dataset.std),
      'config': config.to_dict(),
  }


class _Preemption:
  """Remembers a SIGTERM so that the loop can checkpoint and exit cleanly."""

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    self.requested = True

  def restore(self) -> None:
    signal.signal(signal.SIGTERM, self._previous)


def _validate(config: ml_collections.ConfigDict) -> EvalOptions:
  """Check the config once, before any work; the evaluation settings it holds."""
  validate_config(
      config, device_count=jax.device_count(), local_device_count=jax.local_device_count()
  )
  return EvalOptions.from_config(config)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Train with periodic evaluation and checkpoints; resume from the workdir if possible.

  The run holds the workdir for itself (`workdir_lock`): a second training on it
  refuses. Returns the last evaluation summary (with `step`).
  """
  _validate(config)
  workdir = Path(workdir).absolute()
  with workdir_lock.hold(workdir) as lock:
    return _train_in_held_workdir(config, workdir, lock)


def _open_checkpointer(
    config: ml_collections.ConfigDict, workdir: Path, meta: Mapping[str, Any]
) -> TrainCheckpointer:
  """The workdir's checkpointer; another dataset's workdir is refused before anything is
  computed or written."""
  checkpointer = TrainCheckpointer(workdir, keep=config.keep_checkpoints)
  try:
    checkpointer.check_classes(meta)
  except Exception:
    checkpointer.close()
    raise
  return checkpointer


def _loss_fn(
    config: ml_collections.ConfigDict, workdir: Path, class_table: ClassTable
) -> Callable[..., jax.Array]:
  """The training loss: cross-entropy with the run's class weights (counted on the train
  split once, then cached in the workdir), OHEM and label smoothing as configured. A bad
  eval split fails here too, before the first step rather than at the first evaluation."""
  train_source = build_source(config.dataset, config.dataset.train_split)
  build_source(config.dataset, config.dataset.eval_split)
  return functools.partial(
      losses.cross_entropy,
      ignore_label=class_table.ignore_label,
      class_weights=class_weights(config, workdir, class_table, train_source),
      ohem_threshold=config.loss.ohem_threshold if config.loss.ohem else None,
      ohem_min_kept=config.loss.ohem_min_kept,
      label_smoothing=config.loss.label_smoothing,
  )


def _check_finite_loss(loss: float, step: int, workdir: Path) -> None:
  if not np.isfinite(loss):
    raise NonFiniteLossError(
        f'Non-finite loss ({loss}) at step {step}; stopping. The last good checkpoint '
        f'is kept in {workdir / checkpoints.CHECKPOINTS_DIR}.'
    )


def _print_fingerprints(state: TrainState, step: int) -> None:
  """Every process prints its params' sha256 (and the weight average's), so that a
  multi-host run can be checked for identical params."""
  final = _host_state(state)
  average = (
      f' (weight average sha256 {params_fingerprint(final.ema["params"])})'
      if final.ema is not None
      else ''
  )
  print(
      f'process {jax.process_index()}: params sha256 '
      f'{params_fingerprint(final.params)}{average} at step {step}',
      flush=True,
  )


class _Run:
  """One training in a held workdir: its state, data iterator, checkpointer and writers,
  and the three things a step may do besides training: save, evaluate, report."""

  def __init__(
      self, config: ml_collections.ConfigDict, workdir: Path, lock: workdir_lock.WorkdirLock | None
  ):
    self.config, self.workdir, self.lock = config, workdir, lock
    self.primary = jax.process_index() == 0
    self.writer = MetricWriter(workdir, enabled=self.primary)
    self.class_table = input_pipeline.dataset_class_table(config)
    self.meta = _checkpoint_meta(config, self.class_table)
    self.checkpointer = _open_checkpointer(config, workdir, self.meta)
    loss_fn = _loss_fn(config, workdir, self.class_table)
    model = create_model(config, self.class_table.num_classes)
    lr_fn = create_learning_rate_fn(config)
    state = create_train_state(
        jax.random.PRNGKey(config.seed), config, model, tuple(config.dataset.crop_size), lr_fn
    )
    self.train_iter = input_pipeline.create_train_iterator(
        config,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
        local_device_count=jax.local_device_count(),
    )
    self.start_step = 0
    if self.checkpointer.latest_step() is not None:
      self.start_step, state = self.checkpointer.restore_latest(state, self.train_iter, self.meta)
      resumed = workdir / checkpoints.CHECKPOINTS_DIR / str(self.start_step)
      self.writer.print(f'Resumed from {resumed}')
    if self.primary:
      (workdir / 'config.json').write_text(config.to_json_best_effort(indent=1))
    self.state = replicate(state)
    self.p_train_step = jax.pmap(
        functools.partial(
            train_step, model=model, loss_fn=loss_fn, lr_fn=lr_fn, ema_decay=config.ema_decay
        ),
        axis_name=AXIS,
        donate_argnums=(0,),
    )
    self.run_eval = _make_eval_fn(
        config, create_model(config, self.class_table.num_classes), self.class_table
    )

  def host_state(self, step: int) -> TrainState:
    """The state on the host, refused if its parameters are not finite."""
    host = _host_state(self.state)
    if not all(np.isfinite(x).all() for x in jax.tree.leaves(host.params)):
      raise NonFiniteLossError(
          f'Non-finite parameters at step {step}; not saving them. '
          f'The last good checkpoint is kept in {self.workdir}.'
      )
    return host

  def still_ours(self) -> None:
    """Never write over a training that took the workdir meanwhile."""
    if self.lock is not None:
      self.lock.check()

  def save(self, step: int) -> None:
    self.still_ours()
    self.checkpointer.save(step, self.host_state(step), self.train_iter, self.meta)

  def evaluate(self, step: int) -> dict[str, Any]:
    """Periodic evaluation: written, on the curves, and kept as the best if it is."""
    summary = {'step': step, **self.run_eval(self.state)}
    _write_eval(self.workdir, step, summary, self.writer, self.class_table)
    self.still_ours()
    self.checkpointer.save_if_best(
        step, self.host_state(step), self.train_iter, self.meta, summary['miou']
    )
    return summary

  def train(self) -> dict[str, Any]:
    """Steps from the resumed step to the last; the last evaluation's summary."""
    config, total = self.config, self.config.num_train_steps
    progress = Progress(
        self.writer,
        total=total,
        batch_size=config.batch_size,
        log_every=config.log_every_steps,
        start_step=self.start_step,
    )
    preemption = _Preemption()
    summary: dict[str, Any] = {}
    try:
      step = self.start_step
      while step < total:
        self.state, step_metrics = self.p_train_step(self.state, next(self.train_iter))
        step += 1
        loss = float(step_metrics['loss'][0])
        _check_finite_loss(loss, step, self.workdir)
        progress.step(step, loss, step_metrics)
        if step % config.checkpoint_every_steps == 0 or step == total:
          self.save(step)
        if step % config.eval_every_steps == 0 or step == total:
          summary = self.evaluate(step)
        if preemption.requested:
          self.writer.print(f'SIGTERM: saving a checkpoint at step {step} and exiting.')
          self.save(step)
          break
      _print_fingerprints(self.state, step)
    finally:
      preemption.restore()
    return summary

  def close(self) -> None:
    self.checkpointer.close()
    self.writer.close()


def _train_in_held_workdir(
    config: ml_collections.ConfigDict, workdir: Path, lock: workdir_lock.WorkdirLock | None
) -> dict[str, Any]:
  run = _Run(config, workdir, lock)
  try:
    summary = run.train()
  finally:
    run.close()
  if run.primary:
    plots.write_plots_or_warn(workdir)  # A plotting failure only warns.
  return summary


def _evaluate_variables(
    config: ml_collections.ConfigDict,
    settings: EvalOptions,
    variables: Mapping[str, Any],
    meta: Mapping[str, Any],
    class_table: ClassTable,
) -> dict[str, Any]:
  """Eval mode's metrics of VARIABLES: the pmapped JAX step, or a Segmenter on another engine.

  The engine is `config.eval.engine` at `config.eval.precision` (default: the model's
  dtype); where it resolves to JAX at the model's own dtype, the training's eval step runs
  (all devices); otherwise `Evaluator.run` over `Segmenter.predict`.
  """
  precision = settings.precision or config.model.dtype
  try:
    engine = engines.resolve(settings.engine, precision)
  except OptionError as e:
    raise ConfigError(f'config.eval.{e.field}={e.value!r}: expected {e.expected}.') from None
  if engine == 'jax' and precision == config.model.dtype:
    model = create_model(config, class_table.num_classes)
    state = replicate(
        TrainState(
            step=0,
            apply_fn=model.apply,
            params=variables['params'],
            tx=None,
            opt_state=None,
            batch_stats=variables['batch_stats'],
            rng=jax.random.PRNGKey(0),
        )
    )
    return {
        'engine': 'jax',
        'precision': precision,
        **_make_eval_fn(config, model, class_table)(state),
    }
  eval_scale = float(config.dataset.eval_scale)
  segmenter = Segmenter(
      variables,
      mean=config.dataset.mean,
      std=config.dataset.std,
      meta=meta,
      kernels=config.model.kernels,
      scales=tuple(eval_scale * s for s in settings.scales),
      flip=settings.flip,
      engine=engine,
      precision=precision,
      threads=settings.threads,
      calibration=settings.calibration,
  )
  summary = Evaluator(config.dataset).run(segmenter.predict)
  return {'engine': segmenter.engine_name, 'precision': segmenter.precision, **summary}


def evaluate_checkpoint(config: ml_collections.ConfigDict, workdir: str | Path) -> dict[str, Any]:
  """Evaluate `config.eval.checkpoint` (or the workdir's latest/best) on the eval split."""
  settings = _validate(config)
  workdir = Path(workdir).absolute()
  loaded = resolver.load(settings.checkpoint or workdir, settings.which)
  class_table = input_pipeline.dataset_class_table(config)
  variables = loaded.variables
  num_classes = num_classes_of(variables)
  if num_classes != class_table.num_classes:
    raise ConfigError(
        f'Checkpoint {loaded.source} is for {num_classes} classes; dataset '
        f'{config.dataset.name!r} has {class_table.num_classes}.'
    )
  summary = {
      'step': loaded.step,
      'checkpoint': loaded.source,
      **_evaluate_variables(config, settings, variables, loaded.meta, class_table),
  }
  name = (
      f'eval_{settings.which}_step_{loaded.step}.json'
      if loaded.step is not None
      else f'eval_{re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(loaded.source).name)}.json'
  )
  writer = MetricWriter(workdir, enabled=jax.process_index() == 0)
  try:
    _write_eval(workdir, summary['step'], summary, writer, class_table, name=name)
  finally:
    writer.close()
  if jax.process_index() == 0:
    plots.write_plots_or_warn(workdir)
  return summary
