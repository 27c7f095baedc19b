"""Which machine and software a benchmark ran on, and what the timed program holds."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
from typing import Any

import jax

from esnet_jax.kernels import build as kernel_build

# Every FFI target of `esnet_jax.kernels` is named esnet_* (`kernels.build`).
KERNEL_TARGET_PREFIX = 'esnet_'
# A custom call in compiled HLO text, and in lowered StableHLO text.
_CUSTOM_CALL = re.compile(r'custom_call_target="([^"]+)"|stablehlo\.custom_call @([\w.$-]+)')


def cpu_model() -> str:
  """The CPU's name as /proc/cpuinfo gives it ('model name'; else `platform.processor()`)."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  import platform

  return platform.processor() or platform.machine() or 'unknown'


# The CPU features that decide which engine and precision run fastest: the SIMD width,
# 8-bit dot products (VNNI, AMX; on Arm `asimddp`, `i8mm`) and bfloat16 arithmetic.
ENGINE_CPU_FLAGS = (
    'avx2',
    'fma',
    'avx512f',
    'avx_vnni',
    'avx512_vnni',
    'avx512_bf16',
    'amx_tile',
    'amx_int8',
    'amx_bf16',
    'asimddp',
    'i8mm',
    'bf16',
)
# The runtimes of `esnet_jax.deploy.engines` beside JAX, whose versions a timing names.
ENGINE_PACKAGES = ('onnx', 'onnxruntime', 'openvino')


def cpu_flags(names: tuple[str, ...] = ENGINE_CPU_FLAGS) -> dict[str, bool]:
  """Which of NAMES the CPU has, by /proc/cpuinfo's `flags` (x86) or `Features` (Arm) line.

  All False where there is no /proc/cpuinfo (not Linux): unknown, not absent.
  """
  try:
    with open('/proc/cpuinfo') as f:
      line = next((line for line in f if line.startswith(('flags', 'Features'))), '')
  except OSError:
    line = ''
  have = set(line.partition(':')[2].split())
  return {name: name in have for name in names}


def package_version(name: str) -> str | None:
  """The installed version of package NAME, None if it is not installed."""
  try:
    return importlib.metadata.version(name)
  except importlib.metadata.PackageNotFoundError:
    return None


def engine_facts() -> dict[str, Any]:
  """What, beside `describe`'s facts, decides the engines' speeds here: CPU flags and cores,
  the runtimes' versions and OpenVINO's view of the CPU (`OPTIMIZATION_CAPABILITIES`)."""
  facts: dict[str, Any] = {'cpu_flags': cpu_flags(), 'cpu_count': os.cpu_count()}
  facts.update({f'{name}_version': package_version(name) for name in ENGINE_PACKAGES})
  capabilities = None
  if importlib.util.find_spec('openvino') is not None:
    from esnet_jax.deploy.engines import openvino_engine  # pylint: disable=g-import-not-at-top

    capabilities = list(openvino_engine.cpu_capabilities())
  facts['openvino_cpu_capabilities'] = capabilities
  return facts


def custom_call_targets(program_text: str) -> list[str]:
  """The distinct custom-call targets of a program's HLO or StableHLO text."""
  return sorted({a or b for a, b in _CUSTOM_CALL.findall(program_text)})


def uses_native_kernels(targets: list[str]) -> bool:
  """Whether a program with these custom-call targets runs this package's CPU kernels."""
  return any(t.startswith(KERNEL_TARGET_PREFIX) for t in targets)


def describe(device: jax.Device) -> dict[str, Any]:
  """The facts every result carries: CPU and ISA, device, threads, versions, XLA_FLAGS."""
  return {
      'cpu_model': cpu_model(),
      'cpu_isa': kernel_build.cpu_isa(),
      'platform': device.platform,
      'device_kind': device.device_kind,
      'device_count': jax.device_count(),
      'threads': kernel_build.threads(),
      'jax_version': jax.__version__,
      'jaxlib_version': importlib.metadata.version('jaxlib'),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
