"""Inference speed of ESNet: `python -m esnet_jax.benchmark [--compare-torch]
[--compare-onnxruntime] [--json PATH]`.

What is timed: one call of the compiled network on device-resident, already
normalised float32 images, ended by `block_until_ready`; nothing else. The
network is the deployed one: BN folded into the convolutions (`--no-fold-bn`
keeps BatchNorm) and without the encoder-only head. Compilation
(`jit(...).lower(...).compile()`) happens once, before the warm-up calls, and
is reported as `compile_s`. Copying a uint8 image to the device, normalising
it, taking the argmax and copying the class map back are timed separately
(`h2d_ms`, `preprocess_ms`, `postprocess_ms`, `d2h_ms`), so the network's
latency is comparable across machines and frameworks.

`--compare-torch` times the original PyTorch ESNet (`esnet_jax.torch_reference`)
with the same weights, eager NCHW and eager channels_last, alternating with the
JAX calls in the same process so that machine noise hits all three alike.
`--compare-onnxruntime` exports the same weights to ONNX (`esnet_jax.export`,
BN folded or not as the JAX side) and times ONNX Runtime (CPU provider, all
graph optimisations, as many intra-op threads as XLA:CPU uses) on the same
input, alternating in the same way; both comparisons may be given together.
Each checks that its logits agree with JAX's (`*_max_abs_diff`).

The results name the machine: `cpu_model`, `cpu_isa` (the widest SIMD set the
compiled kernels know: avx512, avx2, neon or other) and `native_kernels`,
whether the package's compiled kernels are in the timed program.

`--train` times the training step instead, and `--trace DIR` records a
`jax.profiler` trace of a few more calls and prints the operations that took the
most time (`esnet_jax.profiling`).

Timings are medians; on shared machines repeat a measurement before trusting it.
`run_inference_benchmark` returns everything the CLI prints, as a dict.
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import resource
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax import convert, folding, implementations, profiling, weights
from esnet_jax.convert import num_classes_of
from esnet_jax.kernels import build as kernel_build
from esnet_jax.transforms import MEAN_RGB, STD_RGB

# Fewer timed runs give unstable tail percentiles; the CLI warns below this.
MIN_RUNS = 50
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16}
# Trained only for encoder pre-training; not part of the deployed network.
_ENCODER_ONLY_HEAD = 'encoder_output_conv'


def _count_params(params: Mapping[str, Any]) -> int:
  """Parameters of the deployed network: all of ESNet's but the encoder-only head."""
  return sum(
      int(np.size(leaf))
      for name, sub in params.items()
      if name != _ENCODER_ONLY_HEAD
      for leaf in jax.tree.leaves(sub)
  )


def random_variables(num_classes: int, seed: int) -> dict[str, Any]:
  """Random `{'params', 'batch_stats'}` of `ESNet(num_classes)`, drawn with numpy.

  Speed does not depend on the values, and `ESNet.init` spends seconds
  compiling its random-number graph. Kernels are LeCun-normal (like flax's
  default) and the BatchNorm statistics are non-trivial, so that folding and
  the PyTorch comparison exercise every parameter while logits stay O(1).
  """
  rng = np.random.default_rng(seed)

  def draw(path: tuple[Any, ...], leaf: jax.ShapeDtypeStruct) -> np.ndarray:
    name, shape = path[-1].key, leaf.shape
    if name == 'kernel':
      return rng.normal(0, np.sqrt(1 / np.prod(shape[:-1])), shape).astype(np.float32)
    if name in ('scale', 'var'):
      return rng.uniform(0.5, 1.5, shape).astype(np.float32)
    return rng.normal(0, 0.1, shape).astype(np.float32)  # Biases and means.

  return jax.tree_util.tree_map_with_path(draw, convert.template(num_classes))


def _peak_memory(device: jax.Device) -> tuple[int, str]:
  """Peak device memory where the backend tracks it, else the process's peak RSS."""
  stats = device.memory_stats()
  if stats and 'peak_bytes_in_use' in stats:
    return int(stats['peak_bytes_in_use']), 'device peak_bytes_in_use'
  rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
  # ru_maxrss is in KiB on Linux and in bytes on macOS.
  return int(rss if sys.platform == 'darwin' else rss * 1024), 'process peak RSS'


def _summary(seconds: Sequence[float], prefix: str) -> dict[str, float]:
  ms = np.asarray(seconds) * 1e3
  return {
      f'{prefix}_p50': float(np.median(ms)),
      f'{prefix}_p90': float(np.percentile(ms, 90)),
      f'{prefix}_p99': float(np.percentile(ms, 99)),
      f'{prefix}_min': float(ms.min()),
  }


def time_alternating(
    calls: Mapping[str, Callable[[], Any]], runs: int, warmup: int, seed: int = 0
) -> dict[str, list[float]]:
  """Seconds per call of each function: `runs` rounds, each calling every function once.

  Interleaving the contenders spreads load from other processes and thermal
  drift evenly over them; shuffling the order every round keeps any one
  contender from always following the same other one (a framework's worker
  threads may still be spinning down when the next call starts). Each call
  must block until its result is ready.
  """
  for call in calls.values():
    for _ in range(warmup):
      call()
  names = list(calls)
  order = np.random.default_rng(seed)
  times: dict[str, list[float]] = {name: [] for name in names}
  for _ in range(runs):
    for name in order.permutation(names):
      start = time.perf_counter()
      calls[name]()
      times[name].append(time.perf_counter() - start)
  return times


def _median_ms(fn: Callable[[], Any], runs: int) -> float:
  fn()
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def _io_timings(images: np.ndarray, logits: jax.Array, runs: int) -> dict[str, float]:
  """Median ms of the steps around the network that a deployment also pays for."""
  mean, std = np.asarray(MEAN_RGB, np.float32), np.asarray(STD_RGB, np.float32)
  preprocess = jax.jit(lambda u8: (u8.astype(jnp.float32) - mean) / std)
  postprocess = jax.jit(lambda y: jnp.argmax(y, axis=-1).astype(jnp.int32))
  on_device = jax.device_put(images)
  d2h = []
  for _ in range(runs + 1):
    # A fresh array each time: jax caches an array's host copy after the first read.
    classes = postprocess(logits).block_until_ready()
    start = time.perf_counter()
    np.asarray(classes)
    d2h.append(time.perf_counter() - start)
  return {
      'h2d_ms': _median_ms(lambda: jax.device_put(images).block_until_ready(), runs),
      'preprocess_ms': _median_ms(lambda: preprocess(on_device).block_until_ready(), runs),
      'postprocess_ms': _median_ms(lambda: postprocess(logits).block_until_ready(), runs),
      'd2h_ms': float(np.median(d2h[1:]) * 1e3),
  }


def import_torch() -> Any:
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        '--compare-torch needs PyTorch: pip install "esnet-jax[torch]" (on '
        'CPU-only machines: pip install torch==2.13.0 first).'
    ) from e
  return torch


def _torch_calls(
    variables: Mapping[str, Any], x_nhwc: np.ndarray, dtype: str, threads: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any], np.ndarray]:
  """Eager PyTorch ESNet with the same weights, NCHW and channels_last, ready to time.

  Returns the two calls, version facts, and the NCHW model's logits as NHWC
  float32 (to check that both frameworks compute the same function).
  """
  torch = import_torch()
  from esnet_jax.torch_reference import ESNet as TorchESNet

  torch.set_num_threads(threads)
  torch_dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[dtype]
  state = {k: torch.tensor(v) for k, v in convert.flax_to_torch(variables).items()}
  model = TorchESNet(num_classes_of(variables))
  model.load_state_dict(state, strict=True)
  model = model.eval().to(torch_dtype)
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(torch_dtype)
  model_cl = TorchESNet(num_classes_of(variables))
  model_cl.load_state_dict(state, strict=True)
  model_cl = model_cl.eval().to(torch_dtype).to(memory_format=torch.channels_last)
  x_cl = x.contiguous(memory_format=torch.channels_last)

  def run(m: Any, inputs: Any) -> Callable[[], Any]:
    def call() -> Any:
      with torch.inference_mode():
        return m(inputs)

    return call

  with torch.inference_mode():
    logits = model(x).float().numpy().transpose(0, 2, 3, 1)
  info = {'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}
  return {'torch_nchw': run(model, x), 'torch_channels_last': run(model_cl, x_cl)}, info, logits


# What `--compare-onnxruntime` imports: the ONNX export goes through PyTorch's exporter.
_ONNXRUNTIME_NEEDS = ('torch', 'onnx', 'onnxscript', 'onnxruntime')


def _check_onnxruntime_installed() -> None:
  """Raise ImportError (one line: what is missing and how to install it) before any work."""
  import importlib.util

  missing = [name for name in _ONNXRUNTIME_NEEDS if importlib.util.find_spec(name) is None]
  if missing:
    raise ImportError(
        f'--compare-onnxruntime needs {", ".join(missing)} (not installed): '
        'pip install torch==2.13.0 && pip install -e ".[export]"'
    )


def _onnxruntime_calls(
    variables: Mapping[str, Any], x_nhwc: np.ndarray, fold_bn: bool, threads: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any], np.ndarray]:
  """ONNX Runtime on this package's ONNX export of the same weights, ready to time.

  The graph is `esnet_jax.export.export_onnx`'s (BN folded when `fold_bn`), with
  the batch fixed to the input's, run on the CPU provider with every graph
  optimisation, `threads` intra-op threads and one inter-op thread. Returns the
  call, version facts and its logits (NHWC float32, as JAX's).
  """
  _check_onnxruntime_installed()
  import tempfile

  import onnxruntime as ort

  from esnet_jax import export

  batch, height, width, _ = x_nhwc.shape
  with tempfile.TemporaryDirectory(prefix='esnet_bench_onnx_') as tmp:
    start = time.perf_counter()
    path = export.export_onnx(
        variables, height, width, os.path.join(tmp, 'esnet.onnx'), batch=batch, fold_bn=fold_bn
    )
    export_s = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
  feed = {export.INPUT_NAME: np.ascontiguousarray(x_nhwc, dtype=np.float32)}

  def call() -> Any:
    return session.run([export.OUTPUT_NAME], feed)[0]

  info = {
      'onnxruntime_version': ort.__version__,
      'onnxruntime_threads': session.get_session_options().intra_op_num_threads,
      'onnxruntime_providers': session.get_providers(),
      'onnx_export_s': export_s,
  }
  return {'onnxruntime': call}, info, call()


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


# Every FFI target of `esnet_jax.kernels` is named esnet_* (`kernels.build`).
# The targets of this package's CPU kernels (esnet_jax.kernels) all start so.
KERNEL_TARGET_PREFIX = 'esnet_'
# A custom call in compiled HLO text, and in lowered StableHLO text.
_CUSTOM_CALL = re.compile(r'custom_call_target="([^"]+)"|stablehlo\.custom_call @([\w.$-]+)')


def custom_call_targets(program_text: str) -> list[str]:
  """The distinct custom-call targets of a program's HLO or StableHLO text."""
  return sorted({a or b for a, b in _CUSTOM_CALL.findall(program_text)})


def run_inference_benchmark(
    *,
    height: int = 512,
    width: int = 1024,
    batch: int = 1,
    dtype: str = 'float32',
    runs: int = MIN_RUNS,
    warmup: int = 5,
    fold_bn: bool = True,
    num_classes: int | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    compare_torch: bool = False,
    compare_onnxruntime: bool = False,
    seed: int = 0,
    trace_dir: str | os.PathLike[str] | None = None,
    kernels: str = 'auto',
) -> dict[str, Any]:
  """Time compiled ESNet inference; return the measurements as a JSON-ready dict.

  Args:
    height, width, batch: input size (H and W multiples of 8).
    dtype: 'float32' or 'bfloat16' compute dtype (parameters stay float32).
    runs, warmup: timed and untimed calls (`runs` >= 1; use >= MIN_RUNS for
      stable tail percentiles).
    fold_bn: time the BN-folded network (what `Segmenter` deploys).
    num_classes: classes of the random-weight network (default 19); must
      match the checkpoint's when both are given.
    checkpoint: time these weights instead (anything `weights.load`
      accepts); speed does not depend on the weights, the option is for
      checking a deployed model end to end.
    compare_torch: also time the PyTorch original with the same weights.
    compare_onnxruntime: also time ONNX Runtime on the ONNX export of the same
      weights (float32 only; needs the `export` extra).
    seed: seed of the random weights and input.
    trace_dir: after the timed runs, record a `jax.profiler` trace of three
      more calls here and add its per-op totals (`esnet_jax.profiling`).
    kernels: who computes the network, 'auto' | 'xla' | 'native'
      (`esnet_jax.implementations`), as for `Segmenter`.

  Returns:
    The configuration plus `latency_ms_{p50,p90,p99,min}`, `fps` (images per
    second at the median), `params`, `flops` (XLA cost analysis of one call),
    `compile_s`, I/O step timings, memory and environment facts and, with
    `compare_torch`, `torch_*` medians and `ratio_jax_torch_*` (JAX / PyTorch
    median latency: below 1 means JAX is faster), with `compare_onnxruntime`
    `onnxruntime_ms_*` and `ratio_jax_onnxruntime` likewise; each comparison
    adds `*_max_abs_diff`, the largest difference of its logits from JAX's.
    `cpu_model` and `cpu_isa` name the machine, `native_kernels` says whether
    the compiled kernels are in the timed program.
  """
  if dtype not in DTYPES:
    raise ValueError(f'dtype={dtype!r}: expected one of {", ".join(DTYPES)}.')
  if runs < 1 or warmup < 0:
    raise ValueError(f'Need runs >= 1 and warmup >= 0; got runs={runs}, warmup={warmup}.')
  if height % 8 or width % 8:
    raise ValueError(f'height and width must be multiples of 8; got {height}x{width}.')
  if compare_onnxruntime and dtype != 'float32':
    raise ValueError(f'--compare-onnxruntime times the float32 ONNX export; got --dtype {dtype}.')
  if compare_torch:
    import_torch()  # Fail before the slow part.
  if compare_onnxruntime:
    _check_onnxruntime_installed()

  if checkpoint is not None:
    variables = weights.load(checkpoint).variables
    found = num_classes_of(variables)
    if num_classes is not None and num_classes != found:
      raise ValueError(f'--num-classes {num_classes} but {checkpoint} has {found} classes.')
    num_classes = found
  else:
    num_classes = 19 if num_classes is None else num_classes
    variables = random_variables(num_classes, seed)

  model = implementations.esnet(
      num_classes, kernels=kernels, dtype=DTYPES[dtype], bn_folded=fold_bn
  )
  native = implementations.uses_kernels(model)
  model_variables = (
      folding.fold_batch_norm(variables, epsilon=model.bn_epsilon)
      if fold_bn
      else {k: variables[k] for k in ('params', 'batch_stats')}
  )
  device = jax.devices()[0]
  rng = np.random.default_rng(seed)
  x_host = rng.standard_normal((batch, height, width, 3), dtype=np.float32)
  device_variables = jax.device_put(model_variables, device)
  x = jax.device_put(x_host, device)

  forward = jax.jit(lambda v, images: model.apply(v, images, train=False))
  start = time.perf_counter()
  lowered = forward.lower(device_variables, x)
  lower_s = time.perf_counter() - start
  start = time.perf_counter()
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  if native:
    # XLA cannot count the FLOPs inside custom calls: count those of the same
    # network on XLA's convolutions (identical arithmetic).
    xla_model = implementations.esnet(
        num_classes, kernels='xla', dtype=DTYPES[dtype], bn_folded=fold_bn
    )
    cost = (
        jax.jit(lambda v, images: xla_model.apply(v, images, train=False))
        .lower(device_variables, x)
        .compile()
        .cost_analysis()
    )
  else:
    cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost

  calls: dict[str, Callable[[], Any]] = {
      'jax': lambda: compiled(device_variables, x).block_until_ready()
  }
  threads = kernel_build.threads()
  result: dict[str, Any] = {
      'mode': 'inference',
      'height': height,
      'width': width,
      'batch': batch,
      'dtype': dtype,
      'fold_bn': fold_bn,
      'native_kernels': native,
      'num_classes': num_classes,
      'runs': runs,
      'warmup': warmup,
      'checkpoint': None if checkpoint is None else os.fspath(checkpoint),
  }
  result['custom_call_targets'] = custom_call_targets(compiled.as_text())
  # What ran, not what was asked:
  result['native_kernels'] = any(
      t.startswith(KERNEL_TARGET_PREFIX) for t in result['custom_call_targets']
  )
  result.update({'cpu_model': cpu_model(), 'cpu_isa': kernel_build.cpu_isa()})
  if compare_torch:
    torch_fns, torch_info, torch_logits = _torch_calls(variables, x_host, dtype, threads)
    calls.update(torch_fns)
    result.update(torch_info)
  if compare_onnxruntime:
    ort_fns, ort_info, ort_logits = _onnxruntime_calls(variables, x_host, fold_bn, threads)
    calls.update(ort_fns)
    result.update(ort_info)

  times = time_alternating(calls, runs, warmup)
  result.update(_summary(times['jax'], 'latency_ms'))
  result['fps'] = batch / (result['latency_ms_p50'] / 1e3)
  result.update(
      {
          'params': _count_params(variables['params']),
          'flops': float(cost.get('flops', 0.0)),
          'compile_s': compile_s,
          'lower_s': lower_s,
      }
  )
  logits = compiled(device_variables, x)
  result.update(
      _io_timings(rng.integers(0, 256, x_host.shape, dtype=np.uint8), logits, min(runs, MIN_RUNS))
  )
  if compare_torch:
    for name in ('torch_nchw', 'torch_channels_last'):
      result.update(_summary(times[name], f'{name}_ms'))
      result[f'ratio_jax_{name}'] = result['latency_ms_p50'] / result[f'{name}_ms_p50']
    result['torch_max_abs_diff'] = float(np.abs(np.asarray(logits) - torch_logits).max())
  if compare_onnxruntime:
    result.update(_summary(times['onnxruntime'], 'onnxruntime_ms'))
    result['ratio_jax_onnxruntime'] = result['latency_ms_p50'] / result['onnxruntime_ms_p50']
    result['onnxruntime_max_abs_diff'] = float(np.abs(np.asarray(logits) - ort_logits).max())
  if trace_dir is not None:
    result.update(_trace(calls['jax'], trace_dir))
  peak, source = _peak_memory(device)
  result.update(
      {
          'peak_memory_bytes': peak,
          'peak_memory_source': source,
          'platform': device.platform,
          'device_kind': device.device_kind,
          'device_count': jax.device_count(),
          'threads': threads,
          'jax_version': jax.__version__,
          'jaxlib_version': importlib.metadata.version('jaxlib'),
          'xla_flags': os.environ.get('XLA_FLAGS', ''),
      }
  )
  return result


def run_train_benchmark(
    *,
    height: int = 512,
    width: int = 1024,
    batch: int = 8,
    dtype: str = 'float32',
    devices: int = 1,
    runs: int = 10,
    warmup: int = 2,
    compare_torch: bool = False,
    compare_jit: bool = False,
    seed: int = 0,
    trace_dir: str | os.PathLike[str] | None = None,
    kernels: str = 'auto',
) -> dict[str, Any]:
  """Images/s of one training step (forward, loss, backward, Adam update).

  JAX: `train.train_step` pmapped over `devices` local devices, `batch` images
  each, exactly as training runs it (train-mode cross-replica BatchNorm, dropout,
  ENet-style weighted cross-entropy, coupled weight decay, donated state). With
  `compare_jit`, the same step under `jit` over a mesh of the same devices
  (`esnet_jax.mesh_step`), alternating steps; `ratio_pmap_to_jit` is the ratio of
  their medians. With `compare_torch` (one device only), the original PyTorch
  network in eager train mode with `torch.optim.Adam(weight_decay=1e-4)` and
  `CrossEntropyLoss(ignore_index=255)` on the same batch, alternating likewise.
  `trace_dir` and `kernels` as for `run_inference_benchmark` (`config.model.kernels`
  in training). Images/s count all devices' images.
  """
  import functools

  from esnet_jax import losses, mesh_step, train

  if dtype not in DTYPES:
    raise ValueError(f'dtype={dtype!r}: expected one of {", ".join(DTYPES)}.')
  local = jax.local_devices()
  if not 1 <= devices <= len(local):
    raise ValueError(f'devices={devices}: this process has {len(local)} local device(s).')
  if compare_torch and devices != 1:
    raise ValueError(f'--compare-torch times one device; got --devices {devices}.')
  config = _train_config(kernels, dtype)
  num_classes = 19
  model = train.create_model(config, num_classes)
  lr_fn = train.create_learning_rate_fn(config)
  state = train.create_train_state(jax.random.PRNGKey(seed), config, model, (height, width), lr_fn)
  rng = np.random.default_rng(seed)
  images = rng.normal(size=(devices * batch, height, width, 3)).astype(np.float32)
  labels = rng.integers(0, num_classes, size=(devices * batch, height, width)).astype(np.int32)
  used = local[:devices]
  device_mesh = mesh_step.mesh(used)
  loss_fn = functools.partial(
      losses.cross_entropy, ignore_label=255, class_weights=jnp.ones((num_classes,))
  )
  step = functools.partial(train.train_step, model=model, loss_fn=loss_fn, lr_fn=lr_fn)
  p_step = jax.pmap(step, axis_name=train.AXIS, devices=used, donate_argnums=(0,))
  per_device = {
      'image': images.reshape(devices, batch, height, width, 3),
      'label': labels.reshape(devices, batch, height, width),
  }
  holders = {
      'jax': {
          'state': train.replicate(state, devices=used),
          'batch': mesh_step.sharded(per_device, device_mesh),
          'step': p_step,
      }
  }
  if compare_jit:
    holders['jax_jit'] = {
        'state': mesh_step.replicated(state, device_mesh),
        'batch': mesh_step.sharded({'image': images, 'label': labels}, device_mesh),
        'step': mesh_step.jit_over_mesh(step, device_mesh),
    }

  def make_call(holder: dict[str, Any]) -> Callable[[], Any]:
    def call() -> Any:
      holder['state'], m = holder['step'](holder['state'], holder['batch'])
      return jax.block_until_ready(m)

    return call

  calls: dict[str, Callable[[], Any]] = {}
  compile_s = {}
  for name, holder in holders.items():
    calls[name] = make_call(holder)
    start = time.perf_counter()
    calls[name]()  # Traces, compiles and runs the first step.
    compile_s[name] = time.perf_counter() - start
  result: dict[str, Any] = {
      'mode': 'train',
      'height': height,
      'width': width,
      'batch': batch,
      'dtype': dtype,
      'devices': devices,
      'runs': runs,
      'compile_s': compile_s['jax'],
      'native_kernels': implementations.uses_kernels(model),
      'platform': used[0].platform,
      'device_kind': used[0].device_kind,
      'jax_version': jax.__version__,
      'jaxlib_version': importlib.metadata.version('jaxlib'),
      'xla_flags': os.environ.get('XLA_FLAGS', ''),
  }
  result.update({'cpu_model': cpu_model(), 'cpu_isa': kernel_build.cpu_isa()})
  result['custom_call_targets'] = custom_call_targets(
      p_step.lower(holders['jax']['state'], holders['jax']['batch']).as_text()
  )
  if compare_jit:
    result['jax_jit_compile_s'] = compile_s['jax_jit']
  if compare_torch:
    calls.update(_torch_train_calls(images, labels, num_classes, kernel_build.threads()))
  times = time_alternating(calls, runs=runs, warmup=warmup, seed=seed)
  for name, seconds in times.items():
    median = float(np.median(seconds))
    result[f'{name}_step_ms_p50'] = median * 1e3
    result[f'{name}_step_ms_min'] = float(np.min(seconds)) * 1e3
    result[f'{name}_images_per_sec'] = devices * batch / median
  for name in ('torch_nchw', 'torch_channels_last'):
    if name in times:
      result[f'ratio_jax_to_{name}'] = result['jax_step_ms_p50'] / result[f'{name}_step_ms_p50']
  if compare_jit:
    result['ratio_pmap_to_jit'] = result['jax_step_ms_p50'] / result['jax_jit_step_ms_p50']
  if trace_dir is not None:
    result.update(_trace(calls['jax'], trace_dir))
  peak, source = _peak_memory(used[0])
  result.update({'peak_memory_bytes': peak, 'peak_memory_source': source})
  return result


def _trace(
    call: Callable[[], Any], trace_dir: str | os.PathLike[str], calls: int = 3
) -> dict[str, Any]:
  """Trace `calls` more calls; the trace file, its wall time and its top operations."""
  trace_file, wall = profiling.record_trace(call, trace_dir, calls)
  return {
      'trace_file': str(trace_file),
      'trace_ms_per_call': wall / calls * 1e3,
      'trace_ops': profiling.op_totals(trace_file, calls)[:20],
  }


def _train_config(kernels: str = 'auto', dtype: str = 'float32') -> Any:
  """The parts of configs/default.py that a train step reads (the paper's recipe)."""
  import ml_collections

  return ml_collections.ConfigDict(
      {
          'num_train_steps': 1000,
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


def _torch_train_calls(
    images: np.ndarray, labels: np.ndarray, num_classes: int, threads: int
) -> dict[str, Callable[[], Any]]:
  """Eager PyTorch train steps (NCHW and channels_last) on the same batch."""
  torch = import_torch()
  from esnet_jax.torch_reference import ESNet as TorchESNet

  torch.set_num_threads(threads)
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  y = torch.from_numpy(labels.astype(np.int64))
  calls = {}
  for name, memory_format in (
      ('torch_nchw', torch.contiguous_format),
      ('torch_channels_last', torch.channels_last),
  ):
    model = TorchESNet(num_classes).train().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    inputs = x.contiguous(memory_format=memory_format)

    def step(model=model, optimizer=optimizer, criterion=criterion, inputs=inputs) -> Any:
      optimizer.zero_grad(set_to_none=True)
      loss = criterion(model(inputs), y)
      loss.backward()
      optimizer.step()
      return loss

    calls[name] = step
  return calls


def format_report(result: Mapping[str, Any]) -> str:
  """A two-column table of a `run_inference_benchmark` result."""
  h, w = result['height'], result['width']
  rows = [
      (
          'network',
          f"ESNet({result['num_classes']}) {w}x{h} batch {result['batch']} "
          f"{result['dtype']} {'BN folded' if result['fold_bn'] else 'with BN'}"
          f"{', native kernels' if result['native_kernels'] else ''}",
      ),
      ('device', f"{result['device_kind']} ({result['platform']}), {result['threads']} threads"),
      ('cpu', f"{result['cpu_model']}, {result['cpu_isa']}"),
      ('jax / jaxlib', f"{result['jax_version']} / {result['jaxlib_version']}"),
      ('XLA_FLAGS', result['xla_flags'] or '(none)'),
      ('params', f"{result['params']:,}"),
      ('FLOPs per call', f"{result['flops'] / 1e9:.2f} G"),
      ('compile', f"{result['compile_s']:.2f} s"),
      (
          'latency p50 / p90 / p99',
          f"{result['latency_ms_p50']:.1f} / "
          f"{result['latency_ms_p90']:.1f} / "
          f"{result['latency_ms_p99']:.1f} ms",
      ),
      ('latency min', f"{result['latency_ms_min']:.1f} ms ({result['runs']} runs)"),
      ('throughput', f"{result['fps']:.2f} images/s"),
      ('host->device uint8', f"{result['h2d_ms']:.2f} ms"),
      (
          'normalise / argmax',
          f"{result['preprocess_ms']:.2f} / " f"{result['postprocess_ms']:.2f} ms",
      ),
      ('device->host classes', f"{result['d2h_ms']:.2f} ms"),
      (
          'peak memory',
          f"{result['peak_memory_bytes'] / 2**20:.0f} MiB " f"({result['peak_memory_source']})",
      ),
  ]
  if 'torch_nchw_ms_p50' in result:
    rows += [
        ('torch', f"{result['torch_version']}, {result['torch_threads']} threads, eager"),
        (
            'torch NCHW p50',
            f"{result['torch_nchw_ms_p50']:.1f} ms "
            f"(jax/torch {result['ratio_jax_torch_nchw']:.2f})",
        ),
        (
            'torch channels_last p50',
            f"{result['torch_channels_last_ms_p50']:.1f} ms "
            f"(jax/torch {result['ratio_jax_torch_channels_last']:.2f})",
        ),
        ('max |jax - torch| logits', f"{result['torch_max_abs_diff']:.2e}"),
    ]
  if 'onnxruntime_ms_p50' in result:
    rows += [
        (
            'onnxruntime',
            f"{result['onnxruntime_version']}, {result['onnxruntime_threads']} "
            f"threads, {result['onnxruntime_providers'][0]}, on esnet_jax.export's "
            'ONNX',
        ),
        (
            'onnxruntime p50',
            f"{result['onnxruntime_ms_p50']:.1f} ms "
            f"(jax/onnxruntime {result['ratio_jax_onnxruntime']:.2f})",
        ),
        ('max |jax - onnxruntime| logits', f"{result['onnxruntime_max_abs_diff']:.2e}"),
    ]
  width_ = max(len(name) for name, _ in rows)
  return '\n'.join(f'{name:<{width_}}  {value}' for name, value in rows)


if __name__ == '__main__':  # `python -m esnet_jax.benchmark` stays the command's name.
  from esnet_jax import benchmark_cli, cli

  cli.run(benchmark_cli.run_main)
