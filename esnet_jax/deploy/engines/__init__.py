"""Inference engines: the one builder that turns trained weights into a running network.

  engine = engines.build(variables, meta, 'auto', EngineSettings(precision='int8'))
  logits = engine(normalised_images)      # float32 NHWC in, float32 logits out

Engines (`ENGINES`, a registry found in this package: adding one is one `*_engine` module):

- `jax`: the Flax network compiled by XLA, with the package's CPU kernels (float32,
  bfloat16);
- `onnxruntime`: the package's ONNX export on ONNX Runtime's CPU provider (float32, INT8);
- `openvino`: the same files compiled by OpenVINO (float32, bfloat16 by its precision
  hint where the CPU has bf16 instructions, INT8).

`auto` picks, for the precision asked, the first engine of `AUTO_ORDER` that is installed
and can run it here: the order is the measured speed on CPUs (docs/benchmarks.md). The
precision itself is never chosen for the user: bfloat16 and INT8 change the outputs.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, Mapping

from esnet_jax.deploy.engines.base import PRECISIONS, Engine, EngineSettings
from esnet_jax.errors import OptionError


def _discover() -> dict[str, type[Engine]]:
  """Every engine class in this package's `*_engine` modules, by its `name`: adding an
  engine is one new module, whose class says its name, precisions and place in auto's order."""
  found: dict[str, type[Engine]] = {}
  for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
    if not info.name.endswith('_engine'):
      continue
    module = importlib.import_module(f'{__name__}.{info.name}')
    for value in vars(module).values():
      if (
          isinstance(value, type)
          and issubclass(value, Engine)
          and value.__module__ == module.__name__
          and value.name
      ):
        found[value.name] = value
  return found


ENGINES = _discover()
ENGINE_CHOICES = ('auto', *ENGINES)
# Fastest first, per precision, on the CPUs measured (each engine's `auto_rank`).
AUTO_ORDER = {
    precision: tuple(
        sorted(
            (name for name, cls in ENGINES.items() if precision in cls.auto_rank),
            key=lambda name, p=precision: ENGINES[name].auto_rank[p],
        )
    )
    for precision in PRECISIONS
}


def unavailable(engine: str, precision: str) -> str | None:
  """Why ENGINE cannot run PRECISION here, or None if it can."""
  return ENGINES[engine].unavailable(precision)


def resolve(engine: str, precision: str, option: str = 'engine') -> str:
  """The engine that runs: ENGINE itself if it can run PRECISION here, `auto`'s choice.

  Raises:
    OptionError: an unknown engine or precision, or one that cannot run here (why).
  """
  if precision not in PRECISIONS:
    raise OptionError('precision', precision, 'one of ' + ', '.join(PRECISIONS))
  if engine not in ENGINE_CHOICES:
    raise OptionError(option, engine, 'one of ' + ', '.join(ENGINE_CHOICES))
  if engine == 'auto':
    reasons = []
    for candidate in AUTO_ORDER[precision]:
      why = unavailable(candidate, precision)
      if why is None:
        return candidate
      reasons.append(f'{candidate}: {why}')
    raise OptionError(
        'precision',
        precision,
        'a precision an installed engine runs here (' + '; '.join(reasons) + ')',
    )
  why = unavailable(engine, precision)
  if why is not None:
    raise OptionError(option, engine, f'an engine that runs {precision} here ({why})')
  return engine


def faster_choice(engine: str, precision: str, names: Mapping[str, str]) -> str | None:
  """One line naming a faster, opt-in choice this machine has, or None.

  Only precisions that change outputs are gated: from float32, INT8 where an engine runs
  it here (OpenVINO or ONNX Runtime); bfloat16 where OpenVINO has the CPU's bf16.
  """
  if precision != 'float32':
    return None
  flag = lambda key: names.get(key, key)
  for faster in ('int8', 'bfloat16'):
    runner = next((e for e in AUTO_ORDER[faster] if unavailable(e, faster) is None), None)
    if runner is not None and runner != 'jax':
      return (
          f'{flag("precision")} {faster} (with {flag("engine")} {runner}) runs faster on '
          f'this CPU than {engine} float32, with slightly different outputs '
          '(docs/benchmarks.md, "Engines")'
      )
  return None


def build(
    variables: Mapping[str, Any],
    meta: Mapping[str, Any],
    engine: str = 'auto',
    settings: EngineSettings = EngineSettings(),
) -> Engine:
  """The running engine for VARIABLES: ENGINE (or `auto`'s choice) at `settings.precision`."""
  name = resolve(engine, settings.precision)
  return ENGINES[name](variables, meta, settings)


__all__ = [
    'AUTO_ORDER',
    'ENGINES',
    'ENGINE_CHOICES',
    'PRECISIONS',
    'Engine',
    'EngineSettings',
    'build',
    'faster_choice',
    'resolve',
    'unavailable',
]
