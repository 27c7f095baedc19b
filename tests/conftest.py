"""Shared test fixtures: paths to ../shared beside the checkout, reference weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / 'shared'
TORCH_FIXTURES = SHARED / 'fixtures' / 'esnet_torch'
CAMVID = SHARED / 'data' / 'camvid'


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
