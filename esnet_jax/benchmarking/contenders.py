"""What the benchmarks time against JAX, and the weights they time.

- `random_variables`: ESNet variables drawn with numpy (speed does not depend on
  the values);
- `torch_calls` / `torch_train_calls`: the original PyTorch ESNet
  (`esnet_jax.weights.torch_reference`), eager, NCHW and channels_last;
- `onnxruntime_calls`: ONNX Runtime on this package's float32 and INT8 ONNX exports.

Each returns zero-argument calls that block until their result is ready, for
`timing.time_alternating`.
"""

from __future__ import annotations

import os
import time
from typing import Any, Callable, Mapping

import jax
import numpy as np

from esnet_jax.weights import convert

# Trained only for encoder pre-training; not part of the deployed network.
_ENCODER_ONLY_HEAD = 'encoder_output_conv'


def count_params(params: Mapping[str, Any]) -> int:
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


def import_torch() -> Any:
  """`torch`, or an ImportError that says how to install it."""
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        '--compare-torch needs PyTorch: pip install "esnet-jax[torch]" (on '
        'CPU-only machines: pip install torch==2.13.0 first).'
    ) from e
  return torch


def torch_calls(
    variables: Mapping[str, Any], x_nhwc: np.ndarray, dtype: str, threads: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any], np.ndarray]:
  """Eager PyTorch ESNet with the same weights, NCHW and channels_last, ready to time.

  In `dtype` (the models and inputs cast to it); with bfloat16 also
  `torch_channels_last_autocast`: the float32 channels_last model under CPU bf16
  autocast, how PyTorch users run bf16 (issue #41's anchor). Returns the calls,
  version facts, and the NCHW model's logits as NHWC float32 (to check that both
  frameworks compute the same function).
  """
  torch = import_torch()
  from esnet_jax.weights import torch_reference

  torch.set_num_threads(threads)
  torch_dtype = {'float32': torch.float32, 'bfloat16': torch.bfloat16}[dtype]
  model = torch_reference.from_variables(variables).to(torch_dtype)
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2))).to(torch_dtype)
  model_cl = torch_reference.from_variables(variables, torch.channels_last).to(torch_dtype)
  x_cl = x.contiguous(memory_format=torch.channels_last)

  def run(m: Any, inputs: Any, autocast: bool = False) -> Callable[[], Any]:
    def call() -> Any:
      with torch.inference_mode(), torch.autocast('cpu', torch.bfloat16, enabled=autocast):
        return m(inputs)

    return call

  with torch.inference_mode():
    logits = model(x).float().numpy().transpose(0, 2, 3, 1)
  info = {'torch_version': torch.__version__, 'torch_threads': torch.get_num_threads()}
  calls = {'torch_nchw': run(model, x), 'torch_channels_last': run(model_cl, x_cl)}
  if dtype == 'bfloat16':
    model_f32 = torch_reference.from_variables(variables, torch.channels_last)
    x_f32 = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
    x_f32 = x_f32.contiguous(memory_format=torch.channels_last)
    calls['torch_channels_last_autocast'] = run(model_f32, x_f32, autocast=True)
  return calls, info, logits


# What `--compare-onnxruntime` imports: onnx to write the export, onnxruntime to run it.
_ONNXRUNTIME_NEEDS = ('onnx', 'onnxruntime')


def check_onnxruntime_installed() -> None:
  """Raise ImportError (one line: what is missing and how to install it) before any work."""
  import importlib.util

  missing = [name for name in _ONNXRUNTIME_NEEDS if importlib.util.find_spec(name) is None]
  if missing:
    raise ImportError(
        f'--compare-onnxruntime needs {", ".join(missing)} (not installed): '
        'pip install -e ".[export]"'
    )


def onnxruntime_calls(
    variables: Mapping[str, Any], x_nhwc: np.ndarray, fold_bn: bool, threads: int
) -> tuple[dict[str, Callable[[], Any]], dict[str, Any], dict[str, np.ndarray]]:
  """ONNX Runtime on this package's float32 and INT8 ONNX exports of the same weights.

  The float32 graph is `esnet_jax.deploy.export.export_onnx`'s (BN folded when
  `fold_bn`) with batch, height and width fixed to the input's, as for a
  deployment at one size (ONNX Runtime's CPU memory planner cannot share or
  reuse buffers in place when height and width are symbolic, which costs the
  symbolic file a few per cent). The INT8 graph is `esnet_jax.deploy.quantize`'s
  static quantization of it, calibrated on the timed input itself: its speed is
  what this measures (the INT8 accuracy is measured on CamVid val by
  tests/deploy/test_quantize.py). Both run on the CPU provider with every graph
  optimisation, `threads` intra-op threads and one inter-op thread. Returns the
  calls (`onnxruntime`, `onnxruntime_int8`), version facts and each one's logits
  (NHWC float32, as JAX's).
  """
  check_onnxruntime_installed()
  import tempfile

  import onnxruntime as ort

  from esnet_jax.deploy import export, quantize

  batch, height, width, _ = x_nhwc.shape
  x = np.ascontiguousarray(x_nhwc, dtype=np.float32)
  options = ort.SessionOptions()
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  sessions = {}
  with tempfile.TemporaryDirectory(prefix='esnet_bench_onnx_') as tmp:
    start = time.perf_counter()
    path = export.export_onnx(
        variables,
        os.path.join(tmp, 'esnet.onnx'),
        height=height,
        width=width,
        batch=batch,
        fold_bn=fold_bn,
    )
    export_s = time.perf_counter() - start
    int8_path = os.path.join(tmp, 'esnet_int8.onnx')
    start = time.perf_counter()
    quantize.quantize_int8(path, int8_path, [x], input_name=export.INPUT_NAME)
    quantize_s = time.perf_counter() - start
    import onnx

    int8_ops = [n.op_type for n in onnx.load(int8_path).graph.node]
    for name, file in (('onnxruntime', path), ('onnxruntime_int8', int8_path)):
      sessions[name] = ort.InferenceSession(str(file), options, providers=['CPUExecutionProvider'])
  feed = {export.INPUT_NAME: x}
  calls = {
      name: (lambda session=session: session.run([export.OUTPUT_NAME], feed)[0])
      for name, session in sessions.items()
  }
  first = sessions['onnxruntime']
  info = {
      'onnxruntime_version': ort.__version__,
      'onnxruntime_threads': first.get_session_options().intra_op_num_threads,
      'onnxruntime_providers': first.get_providers(),
      'onnx_export_s': export_s,
      'onnx_int8_quantize_s': quantize_s,
      'onnx_int8_method': dict(quantize.METHOD, calibration='the timed input'),
      'onnx_int8_quantize_nodes': int8_ops.count('QuantizeLinear'),
  }
  return calls, info, {name: call() for name, call in calls.items()}


def torch_train_calls(
    images: np.ndarray, labels: np.ndarray, num_classes: int, threads: int, dtype: str = 'float32'
) -> dict[str, Callable[[], Any]]:
  """Eager PyTorch train steps (NCHW and channels_last, float32) on the same batch; with
  `dtype` bfloat16 also `torch_channels_last_autocast`: channels_last with the forward
  and the loss under CPU bf16 autocast (float32 weights and Adam), PyTorch's mixed
  precision recipe."""
  torch = import_torch()
  from esnet_jax.weights.torch_reference import ESNet as TorchESNet

  torch.set_num_threads(threads)
  x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2)))
  y = torch.from_numpy(labels.astype(np.int64))
  calls = {}
  variants = [
      ('torch_nchw', torch.contiguous_format, False),
      ('torch_channels_last', torch.channels_last, False),
  ]
  if dtype == 'bfloat16':
    variants.append(('torch_channels_last_autocast', torch.channels_last, True))
  for name, memory_format, autocast in variants:
    model = TorchESNet(num_classes).train().to(memory_format=memory_format)
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4, weight_decay=1e-4)
    criterion = torch.nn.CrossEntropyLoss(ignore_index=255)
    inputs = x.contiguous(memory_format=memory_format)

    def step(
        model=model, optimizer=optimizer, criterion=criterion, inputs=inputs, autocast=autocast
    ) -> Any:
      optimizer.zero_grad(set_to_none=True)
      with torch.autocast('cpu', torch.bfloat16, enabled=autocast):
        loss = criterion(model(inputs), y)
      loss.backward()
      optimizer.step()
      return loss

    calls[name] = step
  return calls
