"""Shared test fixtures: paths to ../shared beside the checkout, reference weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
TORCH_FIXTURES = SHARED / 'fixtures' / 'esnet_torch'
CAMVID = SHARED / 'data' / 'camvid'


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
