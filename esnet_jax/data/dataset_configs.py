"""The dataset part of a `configs/*.py` file, for tools that take a config path as an option.

Training reads its config through ml_collections' flags; `export --calibration` and
`onnx_eval --config` take a path as a plain option and need only `get_config().dataset`.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import ml_collections

from esnet_jax.system.runner import one_line
from esnet_jax.errors import OptionError


def load_dataset_config(path: str | Path, option: str) -> ml_collections.ConfigDict:
  """`get_config().dataset` of the config file PATH.

  The file is user code: whatever it raises while it is imported or while `get_config`
  runs (not only an import error: a typo's NameError, a ValueError of its own) is
  reported in one line naming PATH.

  Raises:
    OptionError: PATH does not load as a config with a dataset (named as OPTION).
  """
  path = Path(path)
  if not (path.is_file() and path.suffix == '.py'):
    raise OptionError(option, str(path), 'a config file (a .py file with get_config())')
  try:
    spec = importlib.util.spec_from_file_location(f'_dataset_config_{path.stem}', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config().dataset
  except Exception as e:  # pylint: disable=broad-except  # User code may raise anything.
    hint = (
        ' (run from the repository root so that `configs` imports)'
        if isinstance(e, ImportError)
        else ''
    )
    raise OptionError(
        option,
        str(path),
        f'a dataset config that loads, not {type(e).__name__}: {one_line(e, 300)}{hint}',
    ) from e
