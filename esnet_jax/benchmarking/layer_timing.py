"""Where ESNet's inference time goes: the latency of each block, in JAX and PyTorch.

  python -m esnet_jax.layer_timing [--height 512 --width 1024 --batch 1 --runs 20] \
      [--compare-torch] [--json PATH]

The blocks are the encoder's initial block and layers and the decoder's layers and
output convolution (the original's `nn.ModuleList` entries). Each is compiled on
its own and timed on the very input the whole network hands it, BN-folded as
`Segmenter` deploys it; with `--compare-torch` the same block of the PyTorch
original (eager, channels_last, `inference_mode`, same weights and thread count)
is timed alternating with it. The per-block ratios show which kind of layer
decides the whole-network gap that `esnet_jax.benchmark` reports; the sum of the
blocks, printed beside the whole network, shows what fusion across blocks gains.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import flax.linen as nn
import jax
import numpy as np

from esnet_jax.model import deployed, implementations
from esnet_jax.benchmarking.contenders import import_torch, random_variables
from esnet_jax.benchmarking.timing import time_alternating
from esnet_jax.kernels import build
from esnet_jax.model.esnet import ESNet

Block = tuple[str, Callable[..., Any], tuple[Any, ...]]


def jax_blocks(model: ESNet, variables: Mapping[str, Any], x: np.ndarray) -> list[Block]:
  """(name, jitted call, arguments) of each top-level block, in execution order.

  The blocks' inputs come from one eager run of the whole network, caught with
  `nn.intercept_methods`; `name` is the block's scope path, e.g. 'encoder/layers_3'.
  """
  blocks: list[Block] = []

  def catch(
      next_fun: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any], context: Any
  ) -> Any:
    path = context.module.scope.path if context.module.scope is not None else ()
    if context.method_name == '__call__' and len(path) == 2 and path[0] in ('encoder', 'decoder'):
      block = context.module.clone(parent=None, name=None)
      block_variables = jax.device_put(dict(context.module.variables))
      # The image is the only array argument; `train` and the like stay static.
      call = jax.jit(block.apply, static_argnums=tuple(range(2, len(args) + 1)))
      blocks.append(('/'.join(path), call, (block_variables, *args)))
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(catch):
    model.apply(variables, x, train=False)
  return blocks


def torch_blocks(
    variables: Mapping[str, Any], x_nhwc: np.ndarray, threads: int
) -> dict[str, Callable[[], Any]]:
  """A call per block of the channels_last PyTorch original, keyed like `jax_blocks`."""
  torch = import_torch()
  from esnet_jax.weights import torch_reference

  torch.set_num_threads(threads)
  model = torch_reference.from_variables(variables, torch.channels_last)
  modules = {
      'encoder/initial_block': model.encoder.initial_block,
      'decoder/output_conv': model.decoder.output_conv,
  }
  modules.update({f'encoder/layers_{i}': m for i, m in enumerate(model.encoder.layers)})
  modules.update({f'decoder/layers_{i}': m for i, m in enumerate(model.decoder.layers)})
  inputs: dict[str, Any] = {}
  hooks = [
      m.register_forward_pre_hook(
          lambda _, args, name=name: inputs.__setitem__(name, args[0].clone())
      )
      for name, m in modules.items()
  ]
  x = torch.from_numpy(np.ascontiguousarray(x_nhwc.transpose(0, 3, 1, 2)))
  with torch.inference_mode():
    model(x.contiguous(memory_format=torch.channels_last))
  for hook in hooks:
    hook.remove()

  def call(module: Any, inp: Any) -> Callable[[], Any]:
    def run() -> Any:
      with torch.inference_mode():
        return module(inp)

    return run

  return {
      name: call(modules[name], inputs[name].contiguous(memory_format=torch.channels_last))
      for name in modules
  }


def run_layer_timing(
    *,
    height: int = 512,
    width: int = 1024,
    batch: int = 1,
    runs: int = 20,
    warmup: int = 3,
    num_classes: int = 19,
    compare_torch: bool = False,
    seed: int = 0,
    kernels: str = 'auto',
) -> dict[str, Any]:
  """Median ms per block (and per PyTorch block), plus the whole network for reference."""
  if height % 8 or width % 8:
    raise ValueError(f'height and width must be multiples of 8; got {height}x{width}.')
  if runs < 1:
    raise ValueError(f'runs must be >= 1; got {runs}.')
  if compare_torch:
    import_torch()
  variables = random_variables(num_classes, seed)
  model, folded = deployed.deployed_network(variables, kernels=kernels)
  folded = jax.device_put(folded)
  x = np.random.default_rng(seed).standard_normal((batch, height, width, 3), np.float32)
  blocks = jax_blocks(model, folded, x)
  whole = jax.jit(lambda v, images: model.apply(v, images, train=False))
  calls: dict[str, Callable[[], Any]] = {'whole/jax': lambda: whole(folded, x).block_until_ready()}
  for name, fn, args in blocks:
    calls[f'{name}/jax'] = lambda fn=fn, args=args: jax.block_until_ready(fn(*args))
  if compare_torch:
    for name, fn in torch_blocks(variables, x, build.threads()).items():
      calls[f'{name}/torch'] = fn
  times = time_alternating(calls, runs, warmup, seed)
  ms = {name: float(np.median(t) * 1e3) for name, t in times.items()}
  rows = []
  for name, _, args in blocks:
    row = {'block': name, 'input_shape': list(np.shape(args[1])), 'jax_ms': ms[f'{name}/jax']}
    if compare_torch:
      row['torch_channels_last_ms'] = ms[f'{name}/torch']
      row['ratio'] = row['jax_ms'] / row['torch_channels_last_ms']
    rows.append(row)
  return {
      'height': height,
      'width': width,
      'batch': batch,
      'runs': runs,
      'cpu_isa': build.cpu_isa(),
      'native_kernels': implementations.uses_kernels(model),
      'whole_network_jax_ms': ms['whole/jax'],
      'sum_of_blocks_jax_ms': sum(r['jax_ms'] for r in rows),
      **(
          {'sum_of_blocks_torch_channels_last_ms': sum(r['torch_channels_last_ms'] for r in rows)}
          if compare_torch
          else {}
      ),
      'blocks': rows,
  }


def format_table(result: Mapping[str, Any]) -> str:
  lines = [
      f"{'block':<24}{'input (NHWC)':<22}{'JAX ms':>9}"
      + (
          f"{'torch CL ms':>13}{'ratio':>8}"
          if 'sum_of_blocks_torch_channels_last_ms' in result
          else ''
      )
  ]
  for row in result['blocks']:
    line = f"{row['block']:<24}{str(tuple(row['input_shape'])):<22}{row['jax_ms']:>9.1f}"
    if 'ratio' in row:
      line += f"{row['torch_channels_last_ms']:>13.1f}{row['ratio']:>8.2f}"
    lines.append(line)
  total = f"{'sum of blocks':<46}{result['sum_of_blocks_jax_ms']:>9.1f}"
  if 'sum_of_blocks_torch_channels_last_ms' in result:
    torch_total = result['sum_of_blocks_torch_channels_last_ms']
    total += f"{torch_total:>13.1f}{result['sum_of_blocks_jax_ms'] / torch_total:>8.2f}"
  lines += [total, f"{'whole network (one jit)':<46}{result['whole_network_jax_ms']:>9.1f}"]
  return '\n'.join(lines)
