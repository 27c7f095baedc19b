"""Every inference engine side by side: `python -m esnet_jax.benchmark --engines`.

Each engine of `esnet_jax.deploy.engines.ENGINES` is built once per precision it runs here
(`engines.unavailable` is None) on the same weights, and its call is timed at each input
size: a batch of normalised float32 images (standard normal: speed does not depend on the
values) in, float32 logits out, as `inference.Segmenter` calls it. Normalisation, padding
and the argmax are the caller's and are not timed. Per size, every (engine, precision) is
first called once, untimed (`first_call_s`: JAX and OpenVINO compile for the shape then),
then all are timed alternating, call by call (`timing.time_alternating`), so that load
from other processes falls on all alike.

The weights default to `pretrained:camvid`, which ships its INT8 file (no calibration);
other weights run INT8 from a cached file (made by an earlier `--precision int8
--calibration ...` run of another tool) or skip it, with the reason in `skipped`.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from esnet_jax.deploy import engines
from esnet_jax.model import implementations
from esnet_jax.weights import resolver
from esnet_jax.benchmarking import machine, timing
from esnet_jax.model.esnet import num_classes_of
from esnet_jax.errors import OptionError
from esnet_jax.config.options import BenchmarkOptions

# The tools run `auto`'s engine at this precision unless told otherwise (`PredictOptions`).
DEFAULT_PRECISION = 'float32'


def auto_choices() -> dict[str, str | None]:
  """The engine `auto` picks here for each precision; None where no engine runs it."""
  choices: dict[str, str | None] = {}
  for precision in engines.PRECISIONS:
    try:
      choices[precision] = engines.resolve('auto', precision)
    except OptionError:
      choices[precision] = None
  return choices


def _build_all(
    variables: Mapping[str, Any],
    meta: Mapping[str, Any],
    options: BenchmarkOptions,
    progress: Callable[[str], None],
) -> tuple[dict[tuple[str, str], engines.Engine], list[dict[str, Any]], list[dict[str, str]]]:
  """Every (engine, precision) that runs here, built; each one's facts; the others, and why."""
  built: dict[tuple[str, str], engines.Engine] = {}
  info: list[dict[str, Any]] = []
  skipped: list[dict[str, str]] = []
  for precision in engines.PRECISIONS:
    for name in engines.ENGINES:
      why = engines.unavailable(name, precision)
      if why is not None:
        skipped.append({'engine': name, 'precision': precision, 'reason': why})
        continue
      progress(f'building {name} {precision}')
      settings = engines.EngineSettings(
          precision=precision,
          kernels=options.kernels,
          fold_bn=options.fold_bn,
          threads=options.threads,
      )
      start = time.perf_counter()
      try:
        engine = engines.build(variables, meta, name, settings)
      except OptionError as e:  # No INT8 file of these weights is shipped or cached.
        skipped.append({'engine': name, 'precision': precision, 'reason': str(e)})
        continue
      built[name, precision] = engine
      info.append(
          {
              'engine': name,
              'precision': precision,
              'description': engine.describe(),
              'build_s': time.perf_counter() - start,
              # Only JAX runs the package's CPU kernels (the runtimes run the ONNX files).
              'native_kernels': name == 'jax' and implementations.uses_kernels(engine.model),
          }
      )
  return built, info, skipped


def run_engines_benchmark(
    options: BenchmarkOptions, progress: Callable[[str], None] = lambda line: None
) -> dict[str, Any]:
  """Time every runnable (engine, precision) at each of `options.engine_sizes`.

  Returns a JSON-ready dict: the settings, `auto` (each precision's `auto` engine),
  `default` (what the tools run by default), `built` (each engine's `build_s` and
  description), `skipped` (what cannot run here, and why), `rows` (per engine, precision
  and size: `ms_{p50,p90,p99,min}`, `fps` at the median, `first_call_s`, and whether it is
  `auto`'s choice, the `default` and the `fastest` at its size) and the machine
  (`machine.describe`, `machine.engine_facts`). `progress` receives a line per step.
  """
  checkpoint = options.checkpoint or options.ENGINE_CHECKPOINT
  loaded = resolver.load(checkpoint)
  auto = auto_choices()
  default_engine = auto[DEFAULT_PRECISION]
  built, info, skipped = _build_all(loaded.variables, loaded.meta, options, progress)
  rng = np.random.default_rng(options.seed)
  rows = []
  for height, width in options.engine_sizes:
    x = rng.standard_normal((options.batch_size, height, width, 3), dtype=np.float32)
    first_call_s = {}
    for (name, precision), engine in built.items():
      progress(f'{height}x{width}: first call of {name} {precision}')
      start = time.perf_counter()
      engine(x)
      first_call_s[name, precision] = time.perf_counter() - start
    progress(f'{height}x{width}: timing {len(built)} engines, {options.runs} rounds')
    calls = {f'{n} {p}': (lambda e=e: e(x)) for (n, p), e in built.items()}
    times = timing.time_alternating(calls, options.runs, options.warmup, options.seed)
    at_size = []
    for name, precision in built:
      row = {'engine': name, 'precision': precision, 'height': height, 'width': width}
      row.update(timing.summary(times[f'{name} {precision}'], 'ms'))
      row['fps'] = options.batch_size / (row['ms_p50'] / 1e3)
      row['first_call_s'] = first_call_s[name, precision]
      row['auto'] = auto[precision] == name
      row['default'] = (name, precision) == (default_engine, DEFAULT_PRECISION)
      at_size.append(row)
    fastest = min(at_size, key=lambda row: row['ms_p50'])
    for row in at_size:
      row['fastest'] = row is fastest
    rows += sorted(at_size, key=lambda row: row['ms_p50'])
  result: dict[str, Any] = {
      'mode': 'engines',
      'checkpoint': checkpoint,
      'num_classes': num_classes_of(loaded.variables),
      'batch': options.batch_size,
      'runs': options.runs,
      'warmup': options.warmup,
      'kernels': options.kernels,
      'fold_bn': options.fold_bn,
      'engine_threads': options.threads,  # ONNX Runtime's and OpenVINO's; None: theirs.
      'sizes': [list(size) for size in options.engine_sizes],
      'auto': auto,
      'default': {'engine': default_engine, 'precision': DEFAULT_PRECISION},
      'built': info,
      'skipped': skipped,
      'rows': rows,
  }
  result.update(machine.describe(jax.devices()[0]))
  result.update(machine.engine_facts())
  return result
