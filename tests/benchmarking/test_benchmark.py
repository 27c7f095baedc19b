"""`python -m esnet_jax.benchmark` (esnet_jax.benchmark): flags, JSON, config mode, refusals.

Only the shape of the results is checked, never the timings: they depend on the
machine and on whatever else it runs.
"""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import CPU_ISAS, REPO, check_benchmark_fields as _check_fields
from esnet_jax import benchmark
from esnet_jax.benchmarking import contenders


def test_cli_writes_json_and_prints_a_table(tmp_path, capsys):
  path = tmp_path / 'bench.json'
  benchmark.main(
      [
          '--height',
          '64',
          '--width',
          '128',
          '--batch',
          '2',
          '--runs',
          '2',
          '--warmup',
          '0',
          '--dtype',
          'bfloat16',
          '--no-fold-bn',
          '--json',
          str(path),
      ]
  )
  out, err = capsys.readouterr()
  assert 'latency p50 / p90 / p99' in out and '1,659,071' in out
  assert '--runs 2 < 50' in err
  result = json.loads(path.read_text())
  _check_fields(result)
  assert (result['batch'], result['runs'], result['dtype'], result['fold_bn']) == (
      2,
      2,
      'bfloat16',
      False,
  )


def test_compare_onnxruntime_times_the_export_of_the_same_weights(tmp_path, capsys):
  for name in contenders._ONNXRUNTIME_NEEDS:  # pylint: disable=protected-access
    pytest.importorskip(name)
  path = tmp_path / 'bench.json'
  benchmark.main(
      [
          '--height',
          '64',
          '--width',
          '128',
          '--runs',
          '2',
          '--warmup',
          '1',
          '--compare-onnxruntime',
          '--json',
          str(path),
      ]
  )
  out = capsys.readouterr().out
  result = json.loads(path.read_text())
  _check_fields(result)
  assert math.isfinite(result['onnxruntime_ms_p50']) and result['onnxruntime_ms_p50'] > 0
  assert result['onnxruntime_ms_min'] <= result['onnxruntime_ms_p50']
  assert result['ratio_jax_onnxruntime'] == pytest.approx(
      result['latency_ms_p50'] / result['onnxruntime_ms_p50']
  )
  assert result['onnxruntime_threads'] == result['threads']
  assert result['onnxruntime_providers'][0] == 'CPUExecutionProvider'
  assert result['onnxruntime_max_abs_diff'] < 1e-4
  # The INT8 file is timed too, and it is a quantized graph, not the float32 one again.
  assert math.isfinite(result['onnxruntime_int8_ms_p50']) and result['onnxruntime_int8_ms_p50'] > 0
  assert result['ratio_jax_onnxruntime_int8'] == pytest.approx(
      result['latency_ms_p50'] / result['onnxruntime_int8_ms_p50']
  )
  assert result['onnx_int8_quantize_nodes'] > 20
  assert result['onnxruntime_int8_max_abs_diff'] > result['onnxruntime_max_abs_diff']
  assert 'onnxruntime INT8 p50' in out
  assert 'torch_nchw_ms_p50' not in result
  assert 'onnxruntime p50' in out and 'jax/onnxruntime' in out
  assert f"{result['cpu_model']}, {result['cpu_isa']}" in out


def test_compare_onnxruntime_without_its_packages_says_what_to_install(monkeypatch, capsys):
  real = importlib.util.find_spec
  missing = [
      n
      for n in contenders._ONNXRUNTIME_NEEDS  # pylint: disable=protected-access
      if n == 'onnxruntime' or real(n) is None
  ]
  monkeypatch.setattr(
      importlib.util,
      'find_spec',
      lambda name, *a: None if name == 'onnxruntime' else real(name, *a),
  )
  status = benchmark.main(
      ['--height', '64', '--width', '128', '--runs', '1', '--compare-onnxruntime']
  )
  assert status == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1] == (
      f'error: --compare-onnxruntime needs {", ".join(missing)} (not installed): '
      'pip install -e ".[export]"'
  )


@pytest.mark.parametrize(
    'args, message',
    [
        (['--dtype', 'bfloat16'], 'the ONNX export is float32'),
        (['--train'], 'it times inference only'),
    ],
)
def test_compare_onnxruntime_bad_settings(args, message, capsys):
  status = benchmark.main(
      ['--height', '64', '--width', '128', '--runs', '1', '--compare-onnxruntime', *args]
  )
  assert status == 2 and message in capsys.readouterr().err


@pytest.mark.end_to_end
@pytest.mark.parametrize('kernels', ['auto', 'xla'])
def test_benchmark_mode_through_main(tmp_path, kernels):
  """`python -m esnet_jax.main --config configs/benchmark.py` writes workdir/benchmark.json,
  computed by whom `config.model.kernels` says, as `--kernels` does."""
  from esnet_jax.kernels import build

  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'esnet_jax.main',
          '--config=configs/benchmark.py',
          f'--workdir={tmp_path}',
          '--config.benchmark.height=32',
          '--config.benchmark.width=48',
          '--config.benchmark.runs=2',
          f'--config.model.kernels={kernels}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert out.returncode == 0, out.stderr[-2000:]
  result = json.loads((tmp_path / 'benchmark.json').read_text())
  assert result['params'] == 1_659_071 and result['runs'] == 2 and result['flops'] > 0
  assert result['native_kernels'] == (kernels == 'auto' and build.available())
  assert 'latency p50' in out.stdout


@pytest.mark.torch
def test_train_step_benchmark_reports_throughput_and_torch_ratio(tmp_path, monkeypatch):
  pytest.importorskip('torch')
  from esnet_jax.system import host_memory
  from esnet_jax.kernels import build
  # In-process: keep this test process's malloc as it is (tests/system/test_host_memory.py).
  monkeypatch.setenv(host_memory.OPT_OUT_ENV, '1')
  out = tmp_path / 'train.json'
  result = benchmark.main(
      [
          '--train',
          '--height',
          '32',
          '--width',
          '48',
          '--batch',
          '2',
          '--runs',
          '2',
          '--warmup',
          '1',
          '--compare-torch',
          '--json',
          str(out),
      ]
  )
  saved = json.loads(out.read_text())
  assert saved == json.loads(json.dumps(result))
  assert saved['mode'] == 'train' and saved['batch'] == 2 and saved['runs'] == 2
  assert saved['native_kernels'] == build.available()
  assert saved['cpu_isa'] in CPU_ISAS and saved['cpu_model']
  for name in ('jax', 'torch_nchw', 'torch_channels_last'):
    assert saved[f'{name}_images_per_sec'] > 0
  assert saved['ratio_jax_to_torch_nchw'] == pytest.approx(
      saved['jax_step_ms_p50'] / saved['torch_nchw_step_ms_p50']
  )


@pytest.mark.end_to_end
def test_trace_names_the_compiled_operations(tmp_path):
  # A fresh process: XLA reads the profiler flag that --trace adds only at start-up.
  out = tmp_path / 'bench.json'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'esnet_jax.benchmark',
          '--height',
          '64',
          '--width',
          '128',
          '--runs',
          '2',
          '--warmup',
          '1',
          '--kernels',
          'xla',
          '--trace',
          str(tmp_path / 'trace'),
          '--json',
          str(out),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert '--xla_cpu_enable_xprof_traceme=true' in result['xla_flags']
  assert Path(result['trace_file']).is_file()
  assert Path(result['trace_file']).is_relative_to(tmp_path / 'trace')
  ops = {row['op']: row for row in result['trace_ops']}
  # ESNet's 69 convolutions (BN folded, per-phase transposed convs) are all seen.
  assert ops['conv_general_dilated']['count_per_call'] == 69
  assert ops['conv_general_dilated']['async']
  assert all(row['ms_per_call'] >= 0 for row in result['trace_ops'])
  assert 'profile of 3 more JAX calls' in proc.stdout and 'conv_general_dilated *' in proc.stdout


@pytest.mark.end_to_end
def test_train_step_beside_jit_over_a_mesh_reports_both_and_their_ratio(tmp_path, monkeypatch):
  from esnet_jax.system import host_memory
  from esnet_jax.benchmarking import gpu_report

  monkeypatch.setenv(host_memory.OPT_OUT_ENV, '1')
  out = tmp_path / 'train.json'
  # The GPU report's smoke train case: its float32 step comes from the compilation cache.
  height, width, batch = gpu_report.SMOKE_TRAIN_CASE
  result = benchmark.main(
      [
          '--train',
          '--height',
          str(height),
          '--width',
          str(width),
          '--batch',
          str(batch),
          '--runs',
          '2',
          '--warmup',
          '0',
          '--compare-jit',
          '--json',
          str(out),
      ]
  )
  saved = json.loads(out.read_text())
  assert saved == json.loads(json.dumps(result))
  assert saved['devices'] == 1 and saved['dtype'] == 'float32'
  for name in ('jax', 'jax_jit'):
    assert saved[f'{name}_images_per_sec'] == pytest.approx(
        batch / saved[f'{name}_step_ms_p50'] * 1e3
    )
  assert saved['ratio_pmap_to_jit'] == pytest.approx(
      saved['jax_step_ms_p50'] / saved['jax_jit_step_ms_p50']
  )
  assert saved['jax_jit_compile_s'] > 0 and saved['peak_memory_bytes'] > 0


@pytest.mark.parametrize(
    'argv, expected',
    [
        (['--devices', '2'], '--devices=2: expected 1 unless --train'),
        (['--compare-jit'], '--compare-jit=True: expected False unless --train'),
        (['--smoke'], '--smoke=True: expected False without --suite gpu'),
        (['--suite', 'gpu', '--train'], '--train=True: expected False with --suite gpu'),
        (['--height', '60'], '--height=60: expected a positive multiple of 8'),
    ],
)
def test_benchmark_options_that_do_not_go_together_are_refused(argv, expected, capsys):
  assert benchmark.main(argv) == 2 and expected in capsys.readouterr().err


def test_train_benchmark_on_more_devices_than_there_are_says_so(capsys):
  assert benchmark.main(['--train', '--devices', '64', '--runs', '1']) == 2
  assert 'devices=64: this process has 1 local device' in capsys.readouterr().err
