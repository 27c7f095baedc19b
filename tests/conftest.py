"""Shared test fixtures: paths to ../shared beside the checkout, reference weights.

The whole session, and every process it starts, shares one persistent XLA
compilation cache (unless JAX_COMPILATION_CACHE_DIR is already set): the many
short training runs in subprocesses compile the same smoke-config programs, and
only the first one needs to.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
TORCH_FIXTURES = SHARED / 'fixtures' / 'esnet_torch'
CAMVID = SHARED / 'data' / 'camvid'


_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
_CACHE_KEY = pytest.StashKey[str]()


def pytest_configure(config) -> None:
  # Before any test module imports jax, which reads these variables once.
  if _CACHE_ENV not in os.environ:
    cache = tempfile.mkdtemp(prefix='esnet-jax-test-xla-cache-')
    config.stash[_CACHE_KEY] = cache
    os.environ[_CACHE_ENV] = cache
    os.environ['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '1'


def pytest_unconfigure(config) -> None:
  cache = config.stash.get(_CACHE_KEY, None)
  if cache:
    shutil.rmtree(cache, ignore_errors=True)


def random_variables(num_classes: int, seed: int = 0) -> dict:
  """ESNet variables with LeCun-normal kernels and plausible BatchNorm statistics.

  Filled in numpy from the shapes (much faster than compiling `init`); logits stay
  O(1), so tolerances mean something and many classes win somewhere.
  """
  import jax
  from esnet_jax import convert
  rng = np.random.default_rng(seed)

  def fill(path, leaf):
    name = path[-1].key
    if name == 'kernel':
      return rng.normal(0, 1 / np.sqrt(np.prod(leaf.shape[:-1])), leaf.shape).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32)
    return rng.normal(0, 0.1, leaf.shape).astype(np.float32)

  return jax.tree_util.tree_map_with_path(fill, convert.template(num_classes))


def _require(path: Path) -> Path:
  if not path.exists():
    pytest.skip(f'{path} not present (the ../shared folder beside the checkout)')
  return path


@pytest.fixture(scope='session')
def torch_fixtures() -> Path:
  return _require(TORCH_FIXTURES)


@pytest.fixture(scope='session')
def camvid_root() -> Path:
  return _require(CAMVID)


@pytest.fixture(scope='session')
def reference_variables(torch_fixtures):
  """Flax variables converted from the original PyTorch ESNet(19) state dict."""
  from esnet_jax import convert
  return convert.load_torch_weights(torch_fixtures / 'state_dict_c19.npz')


@pytest.fixture(scope='session')
def parity(torch_fixtures):
  with np.load(torch_fixtures / 'parity_c19.npz') as data:
    return {k: data[k] for k in data.files}
