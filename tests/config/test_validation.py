"""esnet_jax.config.validation: the one check of a config, a one-line error naming the key.

The input pipeline and the datasets trust a config that passed it, so every bad
value they once refused themselves is refused here, before anything is built.
"""

from __future__ import annotations

import pytest

from configs import smoke
from esnet_jax.config.validation import validate_config
from esnet_jax.errors import ConfigError


def _validate(config, devices=1, local=None):
  validate_config(config, device_count=devices, local_device_count=local or devices)


def _with(**changes):
  config = smoke.get_config()
  for key, value in changes.items():
    node = config
    *parents, leaf = key.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  return config


def test_the_smoke_config_passes():
  _validate(smoke.get_config())


@pytest.mark.parametrize(
    'changes, devices, message',
    [
        ({'batch_size': 6}, 4, r'config.batch_size=6: expected a multiple of the 4 devices'),
        ({'eval_batch_size': 3}, 2, r'config.eval_batch_size=3: expected a multiple'),
        ({'dataset.crop_size': (15, 24)}, 1, r'config.dataset.crop_size=\(15, 24\)'),
        ({'dataset.name': 'kitti'}, 1, r"config.dataset.name='kitti': expected one of .*camvid"),
        ({'dataset.eval_scale': 0.0}, 1, r'config.dataset.eval_scale=0.0'),
        ({'loss.class_weight_power': -1.0}, 1, r'loss.class_weight_power=-1.0.*non-negative'),
        (
            {'loss.label_smoothing': 1.0},
            1,
            r'loss.label_smoothing=1.0: expected a number in \[0, 1\)',
        ),
        ({'ema_decay': 1.0}, 1, r'config.ema_decay=1.0: expected a number in \[0, 1\) \(0 = no'),
        ({'model.kernels': 'gpu'}, 1, r"config.model.kernels='gpu': expected one of auto"),
        ({'mode': 'serve'}, 1, r"config.mode='serve': expected one of .*export"),
    ],
)
def test_a_bad_value_is_one_line_naming_its_key(changes, devices, message):
  with pytest.raises(ConfigError, match=message) as error:
    _validate(_with(**changes), devices)
  assert '\n' not in str(error.value)


@pytest.mark.parametrize(
    'phases',
    [
        ((0, 0.5, 8, 16),),
        ((2, 0.5, 8, 16), (2, 1.0, 8, 16)),
        ((2, 0.0, 8, 16),),
        ((2, 0.5, 9, 16),),
        ((2, 0.5, 8),),
    ],
)
def test_bad_phases_name_the_phase(phases):
  with pytest.raises(ConfigError, match=r'config.dataset.phases\[\d\]'):
    _validate(_with(**{'dataset.phases': phases}))


@pytest.mark.parametrize('name', ['cityscapes', 'folder'])
def test_a_dataset_read_from_files_needs_its_root(name):
  with pytest.raises(ConfigError, match=f'config.dataset.root is not set: .* the {name} folder'):
    _validate(_with(**{'dataset.name': name, 'dataset.root': ''}))


def test_camvid_missing_root_is_one_line_naming_path_and_flag(tmp_path, monkeypatch):
  """The config's default: ../shared/data/camvid beside the checkout; where it is not
  there, validation (before anything is built) stops with one line."""
  from configs import camvid as camvid_config

  missing = tmp_path / 'no_camvid'
  assert camvid_config.get_config().dataset.root == camvid_config.CAMVID_ROOT
  monkeypatch.setattr(camvid_config, 'CAMVID_ROOT', str(missing))
  config = camvid_config.get_config()
  with pytest.raises(ConfigError) as error:
    _validate(config)
  message = str(error.value)
  assert '\n' not in message and message.startswith(f"config.dataset.root='{missing}'")
  assert '--config.dataset.root=/path/to/CamVid' in message
  # An empty folder is no CamVid either; the SegNet layout passes.
  missing.mkdir()
  with pytest.raises(ConfigError, match='no CamVid there'):
    _validate(config)
  for folder in ('train', 'trainannot', 'val', 'valannot'):
    (missing / folder).mkdir()
  _validate(config)


def test_the_cpu_trainval_config_is_camvid_s_recipe_longer_on_train_and_val():
  """Only the split and the schedule's length differ from configs/camvid.py, in proportion."""
  from configs import camvid, camvid_trainval_cpu

  base, long = camvid.get_config(), camvid_trainval_cpu.get_config()
  assert long.dataset.train_split == 'train+val' and long.num_train_steps == 5850
  (half, *rest), (base_half, *base_rest) = long.dataset.phases[0], base.dataset.phases[0]
  assert rest == base_rest
  assert half / long.num_train_steps == pytest.approx(base_half / base.num_train_steps)
  assert long.num_train_steps // long.eval_every_steps == 6
  for key, value in (
      ('dataset.train_split', base.dataset.train_split),
      ('num_train_steps', base.num_train_steps),
      ('dataset.phases', base.dataset.phases),
      ('eval_every_steps', base.eval_every_steps),
  ):
    node = long
    *parents, leaf = key.split('.')
    for part in parents:
      node = node[part]
    node[leaf] = value
  assert long.to_dict() == base.to_dict()
