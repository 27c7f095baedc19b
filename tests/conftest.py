"""Shared test fixtures: paths to ../shared beside the checkout, reference weights, and
`esnet_jax.main` in a subprocess with the one uninterrupted reference run that the
training and fault-injection tests compare against.

The whole session, and every process it starts, shares one persistent XLA
compilation cache (unless JAX_COMPILATION_CACHE_DIR is already set): the many
short training runs in subprocesses compile the same smoke-config programs, and
only the first one needs to.
"""

from __future__ import annotations

import os
import resource
import shutil
import signal
import subprocess
import sys
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
  """`benchmarking.contenders.random_variables`: ESNet variables drawn with numpy, quicker than
  compiling `init` (imported here, after `pytest_configure` has set up JAX's cache)."""
  from esnet_jax.benchmarking import contenders

  return contenders.random_variables(num_classes, seed)


def write_onnx_export(path: Path, variables: dict, meta: dict | None = None, **size) -> Path:
  """`esnet_jax.deploy.export`'s ONNX file of VARIABLES at PATH with its JSON (META's extra keys),
  H and W symbolic unless SIZE fixes them."""
  from esnet_jax.model.esnet import num_classes_of
  from esnet_jax.deploy import export

  path = export.export_onnx(variables, path, **size)
  export.write_metadata(
      path,
      meta or {},
      fmt='onnx',
      num_classes=num_classes_of(variables),
      height=size.get('height'),
      width=size.get('width'),
      batch=None,
      fold_bn=True,
  )
  return path


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
  from esnet_jax.weights import resolver

  return resolver.load_torch_weights(torch_fixtures / 'state_dict_c19.npz')


@pytest.fixture(scope='session')
def parity(torch_fixtures):
  with np.load(torch_fixtures / 'parity_c19.npz') as data:
    return {k: data[k] for k in data.files}


# The smoke config as the subprocess tests run it: 8 steps, a checkpoint every 2.
STEPS = 8
RUN = (
    f'--config.num_train_steps={STEPS}',
    '--config.checkpoint_every_steps=2',
    f'--config.eval_every_steps={STEPS}',
    '--config.log_every_steps=4',
)


def subprocess_env(**extra: str) -> dict[str, str]:
  """This environment (the shared compilation cache included), the checkout importable."""
  env = dict(os.environ)
  env.update(extra)
  env['PYTHONPATH'] = str(REPO) + os.pathsep + env.get('PYTHONPATH', '')
  return env


def main_command(
    workdir: Path, *overrides: str, config: str = 'configs/smoke.py', fault: str | None = None
) -> list[str]:
  """`python -m esnet_jax.main`, or with `fault` the same through tests/training/checkpoint_faults.py."""
  entry = ['tests/training/checkpoint_faults.py', fault] if fault else ['-m', 'esnet_jax.main']
  return [sys.executable, *entry, f'--config={config}', f'--workdir={workdir}', *overrides]


def start_main(
    workdir: Path, *overrides: str, config: str = 'configs/smoke.py', fault: str | None = None
) -> subprocess.Popen:
  """A training started in the background (text pipes), for tests that signal it."""
  return subprocess.Popen(
      main_command(workdir, *overrides, config=config, fault=fault),
      cwd=REPO,
      env=subprocess_env(),
      stdout=subprocess.PIPE,
      stderr=subprocess.PIPE,
      text=True,
  )


def run_main(
    workdir: Path,
    *overrides: str,
    config: str = 'configs/smoke.py',
    fault: str | None = None,
    file_size_limit: int | None = None,
    timeout: float = 900,
) -> subprocess.CompletedProcess:
  """A training run to its end; `file_size_limit` bytes act as a full disk (EFBIG)."""

  def limit_file_size():
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

  return subprocess.run(
      main_command(workdir, *overrides, config=config, fault=fault),
      cwd=REPO,
      env=subprocess_env(),
      capture_output=True,
      text=True,
      timeout=timeout,
      preexec_fn=limit_file_size if file_size_limit else None,
  )


def finished_run(workdir: Path, *overrides: str) -> tuple[Path, str]:
  """An uninterrupted smoke run that must succeed: (workdir, its stdout)."""
  out = run_main(workdir, *overrides)
  assert out.returncode == 0, out.stderr[-3000:]
  return workdir, out.stdout


@pytest.fixture(scope='session')
def reference_run(tmp_path_factory) -> tuple[Path, str]:
  """One uninterrupted smoke run of `RUN`: (workdir, its stdout)."""
  return finished_run(tmp_path_factory.mktemp('reference'), *RUN)


# What an inference benchmark result holds (tests of esnet_jax.benchmark and its runners).
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


def check_benchmark_fields(result: dict) -> None:
  """What every inference benchmark result holds, of the right types and in order."""
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


def png_claiming(width: int, height: int) -> bytes:
  """A 45-byte PNG whose header claims WIDTHxHEIGHT RGB pixels (and holds none)."""
  import struct
  import zlib

  def chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack('>I', len(data)) + kind + data + struct.pack('>I', zlib.crc32(kind + data))

  header = struct.pack('>IIBBBBB', width, height, 8, 2, 0, 0, 0)
  return b'\x89PNG\r\n\x1a\n' + chunk(b'IHDR', header) + chunk(b'IEND', b'')
