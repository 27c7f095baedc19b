"""esnet_jax.benchmarking.runners: what an inference measurement reports, beside PyTorch.

Only the shape of the results is checked, never the timings.
"""

from __future__ import annotations

import json

import pytest

from conftest import check_benchmark_fields as _check_fields
from esnet_jax.benchmarking import runners

SMALL = dict(height=64, width=128, warmup=1)


@pytest.fixture(scope='module')
def result():
  return runners.run_inference_benchmark(runs=3, **SMALL)


def test_run_inference_benchmark_reports_every_field(result):
  _check_fields(result)
  assert (
      result['mode'],
      result['runs'],
      result['batch'],
      result['dtype'],
      result['fold_bn'],
      result['height'],
      result['width'],
  ) == ('inference', 3, 1, 'float32', True, 64, 128)
  assert 'torch_nchw_ms_p50' not in result and 'onnxruntime_ms_p50' not in result
  from esnet_jax.kernels import build
  # The default model uses the kernels wherever they built, and the report says so.
  assert result['native_kernels'] == build.available()
  # `native_kernels` looks for custom calls named esnet_*: every kernel is.
  targets = build._SYMBOLS  # pylint: disable=protected-access
  assert all(target.startswith('esnet_') for target in targets)
  json.dumps(result)  # JSON-ready as it is.


@pytest.mark.torch
def test_compare_torch_times_the_same_weights():
  pytest.importorskip('torch')
  result = runners.run_inference_benchmark(runs=2, compare_torch=True, **SMALL)
  _check_fields(result)
  for name in ('torch_nchw', 'torch_channels_last'):
    assert result[f'{name}_ms_p50'] > 0
    assert result[f'ratio_jax_{name}'] == pytest.approx(
        result['latency_ms_p50'] / result[f'{name}_ms_p50']
    )
  assert result['torch_threads'] == result['threads']
  assert result['torch_max_abs_diff'] < 1e-4
