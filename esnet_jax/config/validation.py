"""The one check of a training/eval config: a bad value becomes a one-line `ConfigError`.

Everything downstream (the input pipeline, the datasets, the training loop)
trusts a config that passed `validate_config`. A tool's own settings
(`config.eval`, `config.predict`, `config.benchmark`, `config.export`) are checked
by its options object (`esnet_jax.config.options`), the same check as on its command line.
"""

from __future__ import annotations

from typing import Any, Callable

import ml_collections

from esnet_jax.data.datasets import registry as dataset_registry
from esnet_jax.data.datasets import camvid
from esnet_jax.errors import ConfigError
from esnet_jax.model.implementations import CHOICES as KERNELS, DTYPES
from esnet_jax.model.esnet import SIZE_MULTIPLE

MODES = ('train', 'eval', 'predict', 'benchmark', 'export')
WEIGHT_DECAY_MODES = ('coupled', 'decoupled')


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
  if not ok:
    raise ConfigError(f'config.{key}={value!r}: expected {expected}.')


def _positive_int(config: ml_collections.ConfigDict, key: str) -> None:
  value = _get(config, key)
  _check(isinstance(value, int) and value > 0, key, value, 'a positive integer')


def _get(config: ml_collections.ConfigDict, key: str) -> Any:
  node: Any = config
  for part in key.split('.'):
    if part not in node:
      raise ConfigError(f'config.{key} is missing; start your config from ' 'configs/default.py.')
    node = node[part]
  return node


def _one_of(config: ml_collections.ConfigDict, key: str, allowed: tuple[str, ...]) -> None:
  value = _get(config, key)
  _check(value in allowed, key, value, 'one of ' + ', '.join(allowed))


def _pair(
    config: ml_collections.ConfigDict, key: str, test: Callable[[Any], bool], expected: str
) -> None:
  value = _get(config, key)
  ok = isinstance(value, (tuple, list)) and len(value) == 2 and all(test(v) for v in value)
  _check(ok, key, value, expected)


def validate_config(
    config: ml_collections.ConfigDict, *, device_count: int, local_device_count: int
) -> None:
  """Raise `ConfigError` naming the first key whose value cannot work."""
  _one_of(config, 'mode', MODES)
  for key in (
      'batch_size',
      'eval_batch_size',
      'num_train_steps',
      'eval_every_steps',
      'checkpoint_every_steps',
      'log_every_steps',
      'keep_checkpoints',
  ):
    _positive_int(config, key)
  for key in ('batch_size', 'eval_batch_size'):
    value = _get(config, key)
    _check(
        value % device_count == 0,
        key,
        value,
        f'a multiple of the {device_count} devices (the global batch is split evenly '
        f'over {local_device_count} local devices per process)',
    )
  _check(isinstance(config.seed, int), 'seed', config.seed, 'an integer')
  _one_of(config, 'model.dtype', DTYPES)
  _one_of(config, 'model.kernels', KERNELS)
  _one_of(config, 'optimizer.weight_decay_mode', WEIGHT_DECAY_MODES)
  _check(
      config.optimizer.learning_rate > 0,
      'optimizer.learning_rate',
      config.optimizer.learning_rate,
      'a positive number',
  )
  _check(
      0 <= config.optimizer.warmup_steps < config.num_train_steps,
      'optimizer.warmup_steps',
      config.optimizer.warmup_steps,
      f'0 <= warmup_steps < num_train_steps ({config.num_train_steps})',
  )
  _check(
      config.optimizer.weight_decay >= 0,
      'optimizer.weight_decay',
      config.optimizer.weight_decay,
      'a non-negative number',
  )
  weights = _get(config, 'loss.class_weights')
  _check(
      weights in ('enet', 'none') or _is_float_list(weights),
      'loss.class_weights',
      weights,
      '"enet", "none" or comma-separated floats',
  )
  _check(
      config.loss.class_weight_power >= 0,
      'loss.class_weight_power',
      config.loss.class_weight_power,
      'a non-negative number',
  )
  _check(
      0 < config.loss.ohem_threshold < 1,
      'loss.ohem_threshold',
      config.loss.ohem_threshold,
      'a probability in (0, 1)',
  )
  _check(
      0 <= _get(config, 'ema_decay') < 1,
      'ema_decay',
      config.ema_decay,
      'a number in [0, 1) (0 = no weight EMA)',
  )
  _check(
      0 <= config.loss.label_smoothing < 1,
      'loss.label_smoothing',
      config.loss.label_smoothing,
      'a number in [0, 1)',
  )
  validate_dataset(config)


def check_dataset_name(config: ml_collections.ConfigDict) -> None:
  """`config.dataset.name` is a dataset this package reads."""
  _one_of(config, 'dataset.name', dataset_registry.names())


def validate_dataset(config: ml_collections.ConfigDict) -> None:
  """Raise `ConfigError` naming the first `config.dataset` key that cannot work."""
  check_dataset_name(config)
  name = config.dataset.name
  if name == 'camvid':  # Where CamVid is expected and how to pass it.
    error = camvid.root_error(_get(config, 'dataset.root'))
    if error:
      raise ConfigError(error)
  elif name in ('cityscapes', 'folder') and not _get(config, 'dataset.root'):
    raise ConfigError(f'config.dataset.root is not set: point it at the {name} folder.')
  multiple = lambda v: isinstance(v, int) and v > 0 and v % SIZE_MULTIPLE == 0
  _pair(config, 'dataset.crop_size', multiple, 'two positive multiples of 8 (H, W)')
  _pair(
      config,
      'dataset.scale_range',
      lambda v: isinstance(v, (int, float)) and v > 0,
      'two positive numbers (min, max)',
  )
  _check(
      config.dataset.scale_range[0] <= config.dataset.scale_range[1],
      'dataset.scale_range',
      config.dataset.scale_range,
      'min <= max',
  )
  previous = 0
  for i, phase in enumerate(config.dataset.get('phases', ())):
    ok = (
        isinstance(phase, (tuple, list))
        and len(phase) == 4
        and isinstance(phase[0], int)
        and phase[0] > previous
        and isinstance(phase[1], (int, float))
        and phase[1] > 0
        and all(multiple(side) for side in phase[2:])
    )
    _check(
        ok,
        f'dataset.phases[{i}]',
        tuple(phase) if isinstance(phase, (tuple, list)) else phase,
        '(until_step, scale, crop_h, crop_w) with until_step a positive integer above the '
        "previous phase's, scale > 0 and the crop sides positive multiples of 8",
    )
    previous = phase[0]
  _check(
      config.dataset.eval_scale > 0,
      'dataset.eval_scale',
      config.dataset.eval_scale,
      'a positive number',
  )


def _is_float_list(value: Any) -> bool:
  try:
    return bool([float(v) for v in str(value).split(',')])
  except ValueError:
    return False
