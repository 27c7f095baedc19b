"""The two measurements: compiled inference, and the pmapped train step.

Both take a `BenchmarkOptions` (or its fields as keywords, checked the same way)
and return a JSON-ready dict that names the machine (`machine.describe`).

Inference: one call of the compiled deployed network (`deployed.deployed_network`:
BN folded unless `fold_bn=False`, the implementation `kernels` picks) on
device-resident, already normalised float32 images, ended by
`block_until_ready`. Compilation happens once, before the warm-up calls
(`compile_s`); copying a uint8 image to the device, normalising it, taking the
argmax and copying the class map back are timed apart (`h2d_ms`,
`preprocess_ms`, `postprocess_ms`, `d2h_ms`), so the network's latency is
comparable across machines and frameworks. The PyTorch original and ONNX
Runtime, when asked for, run on the same weights and input, alternating with
JAX call by call, and their logits are compared with JAX's (`*_max_abs_diff`).

Train step: `trainer.train_step` pmapped over `devices` local devices, exactly as
training runs it.
"""

from __future__ import annotations

import functools
import os
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.model import deployed, implementations
from esnet_jax.weights import resolver
from esnet_jax.benchmarking import contenders, machine, timing
from esnet_jax.model.esnet import num_classes_of
from esnet_jax.kernels import build as kernel_build
from esnet_jax.config.options import MIN_RUNS, BenchmarkOptions

DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}


def _options(options: BenchmarkOptions | None, fields: dict[str, Any]) -> BenchmarkOptions:
  if options is not None and fields:
    raise TypeError('Pass a BenchmarkOptions or its fields as keywords, not both.')
  return options if options is not None else BenchmarkOptions(**fields)


def _check_contenders_installed(o: BenchmarkOptions) -> None:
  """Fail on a missing PyTorch or ONNX Runtime before the slow part, not after it."""
  if o.compare_torch:
    contenders.import_torch()
  if o.compare_onnxruntime:
    contenders.check_onnxruntime_installed()


def _inference_variables(o: BenchmarkOptions) -> tuple[dict[str, Any], int]:
  """The weights to time (the checkpoint's, else random ones) and their number of classes."""
  if o.checkpoint is not None:
    variables = resolver.load(o.checkpoint).variables
    found = num_classes_of(variables)
    if o.num_classes is not None and o.num_classes != found:
      raise ValueError(f'--num-classes {o.num_classes} but {o.checkpoint} has {found} classes.')
    return variables, found
  num_classes = 19 if o.num_classes is None else o.num_classes
  return contenders.random_variables(num_classes, o.seed), num_classes


def _lower_and_compile(model: Any, device_variables: Any, x: jax.Array) -> tuple[Any, float, float]:
  """The compiled forward pass, with the seconds lowering and compiling each took."""
  forward = jax.jit(lambda v, images: model.apply(v, images, train=False))
  start = time.perf_counter()
  lowered = forward.lower(device_variables, x)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  return compiled, lower_s, time.perf_counter() - start


def _flops_per_call(
    o: BenchmarkOptions,
    model: Any,
    compiled: Any,
    variables: dict[str, Any],
    device_variables: Any,
    x: jax.Array,
) -> float:
  """XLA's count of the FLOPs of one call, on XLA's convolutions where kernels hide them."""
  if implementations.uses_kernels(model):
    # XLA cannot count the FLOPs inside custom calls: count those of the same
    # network on XLA's convolutions (identical arithmetic).
    xla_model, _ = deployed.deployed_network(
        variables, kernels='xla', dtype=DTYPES[o.dtype], fold_bn=o.fold_bn
    )
    xla_forward = jax.jit(lambda v, images: xla_model.apply(v, images, train=False))
    cost = xla_forward.lower(device_variables, x).compile().cost_analysis()
  else:
    cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', 0.0))


def _inference_config(o: BenchmarkOptions, num_classes: int, targets: list[str]) -> dict[str, Any]:
  """The settings an inference result opens with, and what the compiled program calls."""
  return {
      'mode': 'inference',
      'height': o.height,
      'width': o.width,
      'batch': o.batch_size,
      'dtype': o.dtype,
      'fold_bn': o.fold_bn,
      'native_kernels': machine.uses_native_kernels(targets),  # What ran, not what was asked.
      'num_classes': num_classes,
      'runs': o.runs,
      'warmup': o.warmup,
      'checkpoint': None if o.checkpoint is None else os.fspath(o.checkpoint),
      'custom_call_targets': targets,
  }


def _inference_contenders(
    o: BenchmarkOptions, variables: dict[str, Any], x_host: np.ndarray
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any], dict[str, np.ndarray]]:
  """The PyTorch and ONNX Runtime calls asked for, their facts, and their logits by name."""
  threads = kernel_build.threads()
  calls: dict[str, Callable[[], Any]] = {}
  info: dict[str, Any] = {}
  logits: dict[str, np.ndarray] = {}
  if o.compare_torch:
    torch_fns, torch_info, logits['torch'] = contenders.torch_calls(
        variables, x_host, o.dtype, threads
    )
    calls.update(torch_fns)
    info.update(torch_info)
  if o.compare_onnxruntime:
    ort_fns, ort_info, ort_logits = contenders.onnxruntime_calls(
        variables, x_host, o.fold_bn, threads
    )
    calls.update(ort_fns)
    info.update(ort_info)
    logits.update(ort_logits)
  return calls, info, logits


def _contender_comparisons(
    o: BenchmarkOptions,
    times: dict[str, Any],
    jax_p50: float,
    jax_logits: np.ndarray,
    logits: dict[str, np.ndarray],
) -> dict[str, Any]:
  """Each contender's latencies, JAX's median over theirs and the largest logit difference."""
  result: dict[str, Any] = {}
  if o.compare_torch:
    for name in (n for n in times if n.startswith('torch_')):
      result.update(timing.summary(times[name], f'{name}_ms'))
      result[f'ratio_jax_{name}'] = jax_p50 / result[f'{name}_ms_p50']
    result['torch_max_abs_diff'] = float(np.abs(jax_logits - logits['torch']).max())
  if o.compare_onnxruntime:
    for name in ('onnxruntime', 'onnxruntime_int8'):
      result.update(timing.summary(times[name], f'{name}_ms'))
      result[f'ratio_jax_{name}'] = jax_p50 / result[f'{name}_ms_p50']
      result[f'{name}_max_abs_diff'] = float(np.abs(jax_logits - logits[name]).max())
  return result


def _device_facts(device: jax.Device) -> dict[str, Any]:
  """The device's peak memory (and where that number came from) and the machine's facts."""
  peak, source = timing.peak_memory(device)
  return {'peak_memory_bytes': peak, 'peak_memory_source': source, **machine.describe(device)}


def run_inference_benchmark(
    options: BenchmarkOptions | None = None, **fields: Any
) -> dict[str, Any]:
  """Time compiled ESNet inference; return the measurements as a JSON-ready dict.

  The settings are `options` (or `BenchmarkOptions(**fields)`): the input size
  and batch, dtype, runs and warm-up calls (>= `MIN_RUNS` runs for stable tail
  percentiles), BN folding, `kernels`, the weights (`checkpoint`, anything
  `resolver.load` accepts, else random ones for `num_classes` classes, 19 by
  default), `compare_torch`, `compare_onnxruntime`, `seed` and `trace_dir` (a
  `jax.profiler` trace of three more calls, with its per-op totals).

  Returns:
    The configuration plus `latency_ms_{p50,p90,p99,min}`, `fps` (images per
    second at the median), `params`, `flops` (XLA cost analysis of one call),
    `compile_s`, I/O step timings, memory and machine facts and, with
    `compare_torch`, `torch_*` medians and `ratio_jax_torch_*` (JAX / PyTorch
    median latency: below 1 means JAX is faster), with `compare_onnxruntime`
    `onnxruntime_ms_*` and `ratio_jax_onnxruntime` likewise, and
    `onnxruntime_int8_ms_*` and `ratio_jax_onnxruntime_int8` for the INT8 file. `native_kernels`
    says whether the compiled kernels are in the timed program.
  """
  o = _options(options, fields)
  batch = o.batch_size
  _check_contenders_installed(o)
  variables, num_classes = _inference_variables(o)
  model, model_variables = deployed.deployed_network(
      variables, kernels=o.kernels, dtype=DTYPES[o.dtype], fold_bn=o.fold_bn
  )
  device = jax.devices()[0]
  rng = np.random.default_rng(o.seed)
  x_host = rng.standard_normal((batch, o.height, o.width, 3), dtype=np.float32)
  device_variables = jax.device_put(model_variables, device)
  x = jax.device_put(x_host, device)

  compiled, lower_s, compile_s = _lower_and_compile(model, device_variables, x)
  flops = _flops_per_call(o, model, compiled, variables, device_variables, x)
  result = _inference_config(o, num_classes, machine.custom_call_targets(compiled.as_text()))
  contender_calls, contender_info, contender_logits = _inference_contenders(o, variables, x_host)
  calls: dict[str, Callable[[], Any]] = {
      'jax': lambda: compiled(device_variables, x).block_until_ready(),
      **contender_calls,
  }
  result.update(contender_info)

  times = timing.time_alternating(calls, o.runs, o.warmup)
  result.update(timing.summary(times['jax'], 'latency_ms'))
  result['fps'] = batch / (result['latency_ms_p50'] / 1e3)
  result.update(
      {
          'params': contenders.count_params(variables['params']),
          'flops': flops,
          'compile_s': compile_s,
          'lower_s': lower_s,
      }
  )
  logits = compiled(device_variables, x)
  images = rng.integers(0, 256, x_host.shape, dtype=np.uint8)
  result.update(timing.io_timings(images, logits, min(o.runs, MIN_RUNS)))
  result.update(
      _contender_comparisons(
          o, times, result['latency_ms_p50'], np.asarray(logits), contender_logits
      )
  )
  if o.trace_dir is not None:
    result.update(timing.trace(calls['jax'], o.trace_dir))
  result.update(_device_facts(device))
  return result


def _train_data(
    seed: int, count: int, height: int, width: int, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
  """Random images and labels for all devices' steps, the same for every contender."""
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(count, height, width, 3)).astype(np.float32)
  labels = rng.integers(0, num_classes, size=(count, height, width)).astype(np.int32)
  return images, labels


def _train_holders(
    o: BenchmarkOptions,
    model: Any,
    lr_fn: Callable[[Any], Any],
    state: Any,
    images: np.ndarray,
    labels: np.ndarray,
    used: list[jax.Device],
    num_classes: int,
) -> dict[str, dict[str, Any]]:
  """Per contender, its step with the state and batch placed on `used` as it wants them."""
  from esnet_jax.training import losses, mesh_step, trainer

  batch, devices, height, width = o.batch_size, o.devices, o.height, o.width
  device_mesh = mesh_step.mesh(trainer.AXIS, used)
  loss_fn = functools.partial(
      losses.cross_entropy, ignore_label=255, class_weights=jnp.ones((num_classes,))
  )
  step = functools.partial(trainer.train_step, model=model, loss_fn=loss_fn, lr_fn=lr_fn)
  p_step = jax.pmap(step, axis_name=trainer.AXIS, devices=used, donate_argnums=(0,))
  per_device = {
      'image': images.reshape(devices, batch, height, width, 3),
      'label': labels.reshape(devices, batch, height, width),
  }
  holders = {
      'jax': {
          'state': trainer.replicate(state, devices=used),
          'batch': mesh_step.sharded(per_device, device_mesh),
          'step': p_step,
      }
  }
  if o.compare_jit:
    holders['jax_jit'] = {
        'state': mesh_step.replicated(state, device_mesh),
        'batch': mesh_step.sharded({'image': images, 'label': labels}, device_mesh),
        'step': mesh_step.jit_over_mesh(step, device_mesh),
    }
  return holders


def _step_call(holder: dict[str, Any]) -> Callable[[], Any]:
  """One step of `holder`, keeping the state it returns (the old one is donated)."""

  def call() -> Any:
    holder['state'], m = holder['step'](holder['state'], holder['batch'])
    return jax.block_until_ready(m)

  return call


def _compile_steps(
    holders: dict[str, dict[str, Any]],
) -> tuple[dict[str, Callable[[], Any]], dict[str, float]]:
  """A call per holder, and the seconds its first step took to trace, compile and run."""
  calls: dict[str, Callable[[], Any]] = {}
  compile_s = {}
  for name, holder in holders.items():
    calls[name] = _step_call(holder)
    start = time.perf_counter()
    calls[name]()  # Traces, compiles and runs the first step.
    compile_s[name] = time.perf_counter() - start
  return calls, compile_s


def _step_summaries(
    times: dict[str, Any], images_per_step: int, compare_jit: bool
) -> dict[str, float]:
  """Each contender's median and fastest step and images/s, and JAX's ratios to the others."""
  result: dict[str, float] = {}
  for name, seconds in times.items():
    median = float(np.median(seconds))
    result[f'{name}_step_ms_p50'] = median * 1e3
    result[f'{name}_step_ms_min'] = float(np.min(seconds)) * 1e3
    result[f'{name}_images_per_sec'] = images_per_step / median
  for name in ('torch_nchw', 'torch_channels_last', 'torch_channels_last_autocast'):
    if name in times:
      result[f'ratio_jax_to_{name}'] = result['jax_step_ms_p50'] / result[f'{name}_step_ms_p50']
  if compare_jit:
    result['ratio_pmap_to_jit'] = result['jax_step_ms_p50'] / result['jax_jit_step_ms_p50']
  return result


def run_train_benchmark(options: BenchmarkOptions | None = None, **fields: Any) -> dict[str, Any]:
  """Images/s of one training step (forward, loss, backward, Adam update).

  JAX: `trainer.train_step` pmapped over `devices` local devices, `batch` images
  each (8 by default), exactly as training runs it (train-mode cross-replica
  BatchNorm, dropout, ENet-style weighted cross-entropy, coupled weight decay,
  donated state). With `compare_jit`, the same step under `jit` over a mesh of
  the same devices (`esnet_jax.training.mesh_step`), alternating steps;
  `ratio_pmap_to_jit` is the ratio of their medians. With `compare_torch` (one
  device only), the original PyTorch network in eager train mode with
  `torch.optim.Adam(weight_decay=1e-4)` and `CrossEntropyLoss(ignore_index=255)`
  on the same batch, alternating likewise. Images/s count all devices' images.
  """
  from esnet_jax.training import trainer

  o = _options(options, {'train': True, **fields} if options is None else fields)
  batch, devices, height, width = o.batch_size, o.devices, o.height, o.width
  local = jax.local_devices()
  if devices > len(local):
    raise ValueError(f'devices={devices}: this process has {len(local)} local device(s).')
  config = _train_config(o.kernels, o.dtype)
  num_classes = 19
  model = trainer.create_model(config, num_classes)
  lr_fn = trainer.create_learning_rate_fn(config)
  state = trainer.create_train_state(
      jax.random.PRNGKey(o.seed), config, model, (height, width), lr_fn
  )
  images, labels = _train_data(o.seed, devices * batch, height, width, num_classes)
  used = local[:devices]
  holders = _train_holders(o, model, lr_fn, state, images, labels, used, num_classes)
  calls, compile_s = _compile_steps(holders)
  jax_holder = holders['jax']
  result: dict[str, Any] = {
      'mode': 'train',
      'height': height,
      'width': width,
      'batch': batch,
      'dtype': o.dtype,
      'devices': devices,
      'runs': o.runs,
      'compile_s': compile_s['jax'],
      'native_kernels': implementations.uses_kernels(model),
      'custom_call_targets': machine.custom_call_targets(
          jax_holder['step'].lower(jax_holder['state'], jax_holder['batch']).as_text()
      ),
  }
  if o.compare_jit:
    result['jax_jit_compile_s'] = compile_s['jax_jit']
  threads = kernel_build.threads()
  if o.compare_torch:
    calls.update(contenders.torch_train_calls(images, labels, num_classes, threads, o.dtype))
  times = timing.time_alternating(calls, runs=o.runs, warmup=o.warmup, seed=o.seed)
  result.update(_step_summaries(times, devices * batch, o.compare_jit))
  if o.trace_dir is not None:
    result.update(timing.trace(calls['jax'], o.trace_dir))
  result.update(_device_facts(used[0]))
  return result


def _train_config(kernels: str = 'auto', dtype: str = 'float32') -> Any:
  """The parts of configs/default.py that a train step reads (the paper's recipe)."""
  import ml_collections

  return ml_collections.ConfigDict(
      {
          'num_train_steps': 1000,
          'ema_decay': 0.0,
          'model': {'dtype': dtype, 'dropout': True, 'kernels': kernels},
          'optimizer': {
              'learning_rate': 5e-4,
              'b1': 0.9,
              'b2': 0.999,
              'eps': 1e-8,
              'weight_decay': 1e-4,
              'weight_decay_mode': 'coupled',
              'poly_power': 0.9,
              'warmup_steps': 0,
          },
      }
  )
