"""Which machine and software a benchmark ran on, and what the timed program holds."""

from __future__ import annotations

import importlib.metadata
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
