"""esnet_jax.benchmarking.gpu_report: the GPU report, at its smoke sizes on a CPU."""

from __future__ import annotations

import pytest

import json


@pytest.mark.end_to_end
def test_gpu_suite_refuses_a_cpu_and_runs_its_smoke_sizes_on_one(tmp_path, monkeypatch, capsys):
  """The GPU report end to end at its tiny sizes: every case and field, and the
  custom-call check seeing this CPU's own kernels where they build."""
  from esnet_jax import benchmark
  from esnet_jax.system import host_memory
  from esnet_jax.benchmarking import gpu_report, machine
  from esnet_jax.kernels import build

  monkeypatch.setenv(host_memory.OPT_OUT_ENV, '1')
  assert benchmark.main(['--suite', 'gpu']) == 2
  assert "--suite gpu times a GPU, but JAX runs on 'cpu'" in capsys.readouterr().err
  out = tmp_path / 'gpu.json'
  benchmark.main(['--suite', 'gpu', '--smoke', '--json', str(out)])
  report = json.loads(out.read_text())
  # Each case reached stderr as it finished, so a cut-short lease keeps the finished ones.
  progress = capsys.readouterr().err.splitlines()
  cases_done = len(report['inference']) + len(report['train'])
  assert [line.split(':')[0] for line in progress if line.startswith(('inference', 'train'))] == [
      line.split(':')[0] for line in gpu_report.format_report(report).splitlines()[1:-1]
  ] and cases_done == len(gpu_report.DTYPES) * (len(gpu_report.SMOKE_INFERENCE_CASES) + 1)
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
  assert all(t.startswith(machine.KERNEL_TARGET_PREFIX) for t in report['cpu_kernel_calls'])
