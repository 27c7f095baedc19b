"""One error family: every error the package raises on purpose is an `EsnetError`."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

from esnet_jax import errors

# Where each error is raised, and so where callers have imported it from.
_RAISED_IN = {
    'ConfigError': 'esnet_jax.config.validation',
    'DatasetError': 'esnet_jax.data.datasets',
    'InputError': 'esnet_jax.inference.predict',
    'PaletteError': 'esnet_jax.inference.visualize',
    'VideoError': 'esnet_jax.data.video',
    'ExportError': 'esnet_jax.deploy.export',
    'KernelsUnavailableError': 'esnet_jax.model.implementations',
    'NonFiniteLossError': 'esnet_jax.training.trainer',
    'CheckpointNotFoundError': 'esnet_jax.weights.checkpoints',
    'ConversionError': 'esnet_jax.weights.convert',
    'PretrainedError': 'esnet_jax.weights.pretrained',
    'DemoError': 'esnet_jax.browser_demo.static_site',
}


def _family() -> list[type]:
  return [
      c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__
  ]


def test_no_module_but_errors_defines_an_error():
  import esnet_jax

  elsewhere = []
  for info in pkgutil.walk_packages(esnet_jax.__path__, 'esnet_jax.'):
    try:
      module = importlib.import_module(info.name)
    except ModuleNotFoundError as e:  # An optional package's module (torch_reference).
      assert e.name in ('torch', 'onnx', 'onnxruntime', 'av'), e
      continue
    elsewhere += [
        f'{info.name}.{name}'
        for name, c in inspect.getmembers(module, inspect.isclass)
        if issubclass(c, Exception) and c.__module__ == info.name != errors.__name__
    ]
  assert not elsewhere


def test_every_error_is_one_of_the_family_with_an_exit_status():
  family = _family()
  assert errors.EsnetError in family and len(family) > 10
  for cls in family:
    assert issubclass(cls, errors.EsnetError), cls
    assert cls.exit_status in (1, 2), cls
  user = {
      'ConfigError',
      'DatasetError',
      'InputError',
      'PaletteError',
      'VideoError',
      'ExportError',
      'KernelsUnavailableError',
      'NonFiniteLossError',
      'DemoError',
  }
  for name in user:
    assert issubclass(getattr(errors, name), errors.UserInputError), name
  for name in (
      'WeightsNotFoundError',
      'CheckpointNotFoundError',
      'DamagedCheckpointError',
      'ConversionError',
      'PretrainedError',
  ):
    assert issubclass(getattr(errors, name), errors.WeightsError), name


@pytest.mark.parametrize(
    'name, builtin',
    [
        ('ConfigError', ValueError),
        ('DatasetError', ValueError),
        ('InputError', ValueError),
        ('KernelsUnavailableError', RuntimeError),
        ('NonFiniteLossError', FloatingPointError),
        ('WeightsError', ValueError),
        ('WeightsNotFoundError', FileNotFoundError),
        ('CheckpointSaveError', RuntimeError),
        ('WorkdirBusyError', RuntimeError),
    ],
)
def test_errors_stay_the_builtins_their_callers_caught(name, builtin):
  assert issubclass(getattr(errors, name), builtin)


@pytest.mark.parametrize('name, module', sorted(_RAISED_IN.items()))
def test_the_modules_that_raise_an_error_hand_out_the_same_class(name, module):
  assert getattr(importlib.import_module(module), name) is getattr(errors, name)
