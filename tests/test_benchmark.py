"""Benchmark module (fields, counts, CLI, PyTorch side by side) and the default XLA flags.

Only the shape of the results is checked, never the timings: they depend on the
machine and on whatever else it runs.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from esnet_jax import benchmark, benchmark_cli, xla_flags

SMALL = dict(height=64, width=128, warmup=1)
# Params of ESNet(19) without the encoder-only head (`encoder_output_conv`).
DEPLOYED_PARAMS_C19 = 1_659_071
FIELDS = {
    'latency_ms_p50': float,
    'latency_ms_p90': float,
    'latency_ms_p99': float,
    'latency_ms_min': float,
    'fps': float,
    'params': int,
    'flops': float,
    'compile_s': float,
    'h2d_ms': float,
    'preprocess_ms': float,
    'postprocess_ms': float,
    'd2h_ms': float,
    'peak_memory_bytes': int,
    'peak_memory_source': str,
    'device_kind': str,
    'platform': str,
    'threads': int,
    'jax_version': str,
    'jaxlib_version': str,
    'xla_flags': str,
    'runs': int,
    'batch': int,
    'dtype': str,
    'fold_bn': bool,
    'num_classes': int,
    'native_kernels': bool,
    'cpu_model': str,
    'cpu_isa': str,
}
CPU_ISAS = ('avx512', 'avx2', 'neon', 'other')


def _check_fields(result):
  for key, kind in FIELDS.items():
    assert isinstance(result[key], kind), (key, result[key])
  assert result['params'] == DEPLOYED_PARAMS_C19
  assert result['flops'] > 0
  assert result['threads'] >= 1 and result['peak_memory_bytes'] > 0
  assert result['cpu_isa'] in CPU_ISAS and result['cpu_model']
  assert (
      result['latency_ms_min']
      <= result['latency_ms_p50']
      <= result['latency_ms_p90']
      <= result['latency_ms_p99']
  )


@pytest.fixture(scope='module')
def result():
  return benchmark.run_inference_benchmark(runs=3, **SMALL)


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


def test_cli_writes_json_and_prints_a_table(tmp_path, capsys):
  path = tmp_path / 'bench.json'
  benchmark_cli.main(
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


@pytest.mark.torch
def test_compare_torch_times_the_same_weights():
  pytest.importorskip('torch')
  result = benchmark.run_inference_benchmark(runs=2, compare_torch=True, **SMALL)
  _check_fields(result)
  for name in ('torch_nchw', 'torch_channels_last'):
    assert result[f'{name}_ms_p50'] > 0
    assert result[f'ratio_jax_{name}'] == pytest.approx(
        result['latency_ms_p50'] / result[f'{name}_ms_p50']
    )
  assert result['torch_threads'] == result['threads']
  assert result['torch_max_abs_diff'] < 1e-4


@pytest.mark.torch
@pytest.mark.filterwarnings('ignore::FutureWarning')  # torch.export internals
def test_compare_onnxruntime_times_the_export_of_the_same_weights(tmp_path, capsys):
  for name in benchmark._ONNXRUNTIME_NEEDS:  # pylint: disable=protected-access
    pytest.importorskip(name)
  path = tmp_path / 'bench.json'
  benchmark_cli.main(
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
  assert 'torch_nchw_ms_p50' not in result
  assert 'onnxruntime p50' in out and 'jax/onnxruntime' in out
  assert f"{result['cpu_model']}, {result['cpu_isa']}" in out


def test_compare_onnxruntime_without_its_packages_says_what_to_install(monkeypatch, capsys):
  real = importlib.util.find_spec
  missing = [
      n
      for n in benchmark._ONNXRUNTIME_NEEDS  # pylint: disable=protected-access
      if n == 'onnxruntime' or real(n) is None
  ]
  monkeypatch.setattr(
      importlib.util,
      'find_spec',
      lambda name, *a: None if name == 'onnxruntime' else real(name, *a),
  )
  with pytest.raises(SystemExit) as exit_:
    benchmark_cli.main(['--height', '64', '--width', '128', '--runs', '1', '--compare-onnxruntime'])
  assert exit_.value.code == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert err[-1] == (
      f'error: --compare-onnxruntime needs {", ".join(missing)} (not installed): '
      'pip install torch==2.13.0 && pip install -e ".[export]"'
  )


@pytest.mark.parametrize(
    'args, message',
    [
        (['--dtype', 'bfloat16'], 'float32 ONNX export'),
        (['--train'], 'inference only'),
    ],
)
def test_compare_onnxruntime_bad_settings(args, message, capsys):
  with pytest.raises(SystemExit) as exit_:
    benchmark_cli.main(
        ['--height', '64', '--width', '128', '--runs', '1', '--compare-onnxruntime', *args]
    )
  assert message in str(exit_.value.code) + capsys.readouterr().err


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


def test_bad_sizes_exit_with_a_message():
  with pytest.raises(SystemExit, match='multiples of 8'):
    benchmark_cli.main(['--height', '60', '--runs', '1'])


@pytest.mark.parametrize(
    'environ, expected',
    [
        ({}, ' '.join(xla_flags.DEFAULT_CPU_FLAGS)),
        (
            {'XLA_FLAGS': '--xla_dump_to=/tmp/d'},
            ' '.join(('--xla_dump_to=/tmp/d',) + xla_flags.DEFAULT_CPU_FLAGS),
        ),
        ({xla_flags.OPT_OUT_ENV: '0'}, ' '.join(xla_flags.DEFAULT_CPU_FLAGS)),
    ],
)
def test_default_flags_are_appended(environ, expected):
  added = xla_flags.add_default_flags(environ)
  assert environ['XLA_FLAGS'] == expected
  assert added == list(xla_flags.DEFAULT_CPU_FLAGS)


def test_default_flags_never_override_the_users():
  user = ' '.join(f'{flag.split("=")[0]}=USER' for flag in xla_flags.DEFAULT_CPU_FLAGS)
  environ = {'XLA_FLAGS': user}
  assert xla_flags.add_default_flags(environ) == []
  assert environ['XLA_FLAGS'] == user


def test_default_flags_opt_out():
  environ = {xla_flags.OPT_OUT_ENV: '1', 'XLA_FLAGS': '--xla_dump_to=/tmp/d'}
  assert xla_flags.add_default_flags(environ) == []
  assert environ == {xla_flags.OPT_OUT_ENV: '1', 'XLA_FLAGS': '--xla_dump_to=/tmp/d'}


def test_no_flags_added_once_the_backend_runs(result, monkeypatch):
  # `result` has run a computation, so XLA has read XLA_FLAGS already.
  monkeypatch.setenv('XLA_FLAGS', '')
  monkeypatch.delenv(xla_flags.OPT_OUT_ENV, raising=False)
  assert xla_flags.apply_default_xla_flags() == []
  assert os.environ['XLA_FLAGS'] == ''


@pytest.mark.torch
def test_train_step_benchmark_reports_throughput_and_torch_ratio(tmp_path, monkeypatch):
  pytest.importorskip('torch')
  from esnet_jax import host_memory
  from esnet_jax.kernels import build
  # In-process: keep this test process's malloc as it is (tests/test_host_memory.py).
  monkeypatch.setenv(host_memory.OPT_OUT_ENV, '1')
  out = tmp_path / 'train.json'
  result = benchmark_cli.main(
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


@pytest.mark.torch
def test_layer_timing_covers_every_block_of_both_frameworks(tmp_path, capsys):
  pytest.importorskip('torch')
  from esnet_jax import layer_timing

  assert (
      layer_timing.main(
          [
              '--height',
              '16',
              '--width',
              '32',
              '--runs',
              '1',
              '--warmup',
              '0',
              '--compare-torch',
              '--json',
              str(tmp_path / 'l.json'),
          ]
      )
      == 0
  )
  result = json.loads((tmp_path / 'l.json').read_text())
  names = [row['block'] for row in result['blocks']]
  assert names == (
      ['encoder/initial_block']
      + [f'encoder/layers_{i}' for i in range(10)]
      + [f'decoder/layers_{i}' for i in range(6)]
      + ['decoder/output_conv']
  )
  shapes = {row['block']: tuple(row['input_shape']) for row in result['blocks']}
  assert shapes['encoder/initial_block'] == (1, 16, 32, 3)
  assert shapes['encoder/layers_9'] == (1, 2, 4, 128)  # the last PFCU, at 1/8
  assert shapes['decoder/output_conv'] == (1, 8, 16, 16)
  for row in result['blocks']:
    assert row['jax_ms'] > 0 and row['torch_channels_last_ms'] > 0
    assert row['ratio'] == pytest.approx(row['jax_ms'] / row['torch_channels_last_ms'])
  assert result['sum_of_blocks_jax_ms'] == pytest.approx(
      sum(row['jax_ms'] for row in result['blocks'])
  )
  assert 'decoder/output_conv' in capsys.readouterr().out
  assert layer_timing.main(['--height', '12']) == 2
  assert 'multiples of 8' in capsys.readouterr().err


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


def test_op_totals_pair_library_calls_with_their_end_events(tmp_path):
  from esnet_jax import profiling

  events = [
      {'ph': 'X', 'name': 'ThunkExecutor::Execute', 'ts': 0, 'dur': 100},
      {'ph': 'X', 'name': 'convolution.3', 'ts': 10, 'dur': 1},
      {'ph': 'X', 'name': 'end: convolution.3', 'ts': 40, 'dur': 2},  # finishes at 42
      {'ph': 'X', 'name': 'add_fusion.1', 'ts': 50, 'dur': 5},
      {'ph': 'X', 'name': 'end: add_fusion.1', 'ts': 90, 'dur': 1},  # ignored: a fusion
      {'ph': 'X', 'name': 'add_fusion.7', 'ts': 60, 'dur': 3},
      {'ph': 'X', 'name': '$python frame', 'ts': 0, 'dur': 500},
      {'ph': 'M', 'name': 'thread_name'},
  ]
  path = tmp_path / 'x.trace.json.gz'
  with gzip.open(path, 'wt') as f:
    json.dump({'traceEvents': events}, f)
  rows = {row['op']: row for row in profiling.op_totals(path, calls=2)}
  assert set(rows) == {'convolution', 'add_fusion'}
  assert rows['convolution']['ms_per_call'] == pytest.approx(32 / 2 / 1e3)
  assert rows['convolution']['async'] and not rows['add_fusion']['async']
  assert rows['add_fusion']['ms_per_call'] == pytest.approx(8 / 2 / 1e3)
  assert rows['add_fusion']['count_per_call'] == 1


def test_train_step_beside_jit_over_a_mesh_reports_both_and_their_ratio(tmp_path, monkeypatch):
  from esnet_jax import gpu_report, host_memory

  monkeypatch.setenv(host_memory.OPT_OUT_ENV, '1')
  out = tmp_path / 'train.json'
  # The GPU report's smoke train case: its float32 step comes from the compilation cache.
  height, width, batch = gpu_report.SMOKE_TRAIN_CASE
  result = benchmark_cli.main(
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
        (['--devices', '2'], '--devices and --compare-jit time the train step'),
        (['--smoke'], '--smoke belongs to --suite gpu'),
        (['--suite', 'gpu', '--train'], 'drop --train'),
    ],
)
def test_benchmark_options_that_do_not_go_together_are_refused(argv, expected, capsys):
  with pytest.raises(SystemExit) as e:
    benchmark_cli.main(argv)
  assert e.value.code == 2 and expected in capsys.readouterr().err


def test_train_benchmark_on_more_devices_than_there_are_says_so():
  with pytest.raises(SystemExit, match='devices=64: this process has 1 local device'):
    benchmark_cli.main(['--train', '--devices', '64', '--runs', '1'])


def test_gpu_suite_refuses_a_cpu_and_runs_its_smoke_sizes_on_one(tmp_path, monkeypatch):
  """The GPU report end to end at its tiny sizes: every case and field, and the
  custom-call check seeing this CPU's own kernels where they build."""
  from esnet_jax import gpu_report, host_memory
  from esnet_jax.kernels import build

  monkeypatch.setenv(host_memory.OPT_OUT_ENV, '1')
  with pytest.raises(SystemExit, match="--suite gpu times a GPU, but JAX runs on 'cpu'"):
    benchmark_cli.main(['--suite', 'gpu'])
  out = tmp_path / 'gpu.json'
  benchmark_cli.main(['--suite', 'gpu', '--smoke', '--json', str(out)])
  report = json.loads(out.read_text())
  assert report['suite'] == 'gpu' and report['smoke'] and report['ok']
  env = report['environment']
  assert env['platform'] == 'cpu' and env['jax_version'] and env['jaxlib_version']
  cases = [(e['height'], e['width'], e['batch'], e['dtype']) for e in report['inference']]
  assert cases == [
      (h, w, b, d) for d in gpu_report.DTYPES for h, w, b in gpu_report.SMOKE_INFERENCE_CASES
  ]
  assert [e['dtype'] for e in report['train']] == list(gpu_report.DTYPES)
  for entry in report['inference'] + report['train']:
    assert entry['compile_s'] > 0 and entry['peak_memory_bytes'] > 0
  assert all(e['fps'] > 0 for e in report['inference'])
  assert all(e['images_per_sec'] > 0 and e['devices'] == 1 for e in report['train'])
  assert bool(report['cpu_kernel_calls']) == build.available()
  assert all(t.startswith(benchmark.KERNEL_TARGET_PREFIX) for t in report['cpu_kernel_calls'])
