"""Weights of the original PyTorch ESNet <-> Flax variables of `esnet_jax.model.esnet.ESNet`.

PyTorch names map one-to-one onto the Flax tree (`encoder.layers.3.bn.running_var`
is `batch_stats/encoder/layers_3/bn/var`); conv weights go OIHW -> HWIO and
transposed-conv weights (in, out, kH, kW) -> (kH, kW, in, out).

The name and layout mapping only: reading and writing weights files is
`esnet_jax.weights.resolver`' job, and the command `python -m esnet_jax.convert` lives in
`esnet_jax.convert`.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax.errors import ConversionError
from esnet_jax.model.esnet import ESNet

Variables = dict[str, Any]

_BN_TORCH_TO_FLAX = {
    'weight': ('params', 'scale'),
    'bias': ('params', 'bias'),
    'running_mean': ('batch_stats', 'mean'),
    'running_var': ('batch_stats', 'var'),
}
_BN_FLAX_TO_TORCH = {v: k for k, v in _BN_TORCH_TO_FLAX.items()}


def _is_transposed_conv(module_path: tuple[str, ...]) -> bool:
  """Upsampler convs and the output conv are ConvTranspose2d in the original."""
  return module_path[0] == 'decoder' and module_path[-1] in ('conv', 'output_conv')


def _is_batch_norm(module_path: tuple[str, ...]) -> bool:
  return module_path[-1].startswith('bn')


def _flax_module_path(torch_key: str) -> tuple[tuple[str, ...], str]:
  """'encoder.layers.3.bn.weight' -> (('encoder', 'layers_3', 'bn'), 'weight')."""
  parts = torch_key.split('.')
  module, leaf = parts[:-1], parts[-1]
  out: list[str] = []
  for part in module:
    if part.isdigit() and out and out[-1] == 'layers':
      out[-1] = f'layers_{part}'
    else:
      out.append(part)
  return tuple(out), leaf


def _torch_module_path(flax_path: tuple[str, ...]) -> str:
  return '.'.join(
      p.replace('layers_', 'layers.') if p.startswith('layers_') else p for p in flax_path
  )


def template(num_classes: int) -> Variables:
  """Shapes of the Flax variables of `ESNet(num_classes)`, including the head."""
  model = ESNet(num_classes)
  return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 3))))


def _flatten(tree: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
  flat = {}
  for k, v in tree.items():
    if isinstance(v, Mapping):
      flat.update(_flatten(v, prefix + (k,)))
    else:
      flat[prefix + (k,)] = v
  return flat


def _unflatten(flat: Mapping[tuple[str, ...], Any]) -> dict[str, Any]:
  tree: dict[str, Any] = {}
  for path, v in flat.items():
    node = tree
    for p in path[:-1]:
      node = node.setdefault(p, {})
    node[path[-1]] = v
  return tree


def _strip_prefix(state_dict: Mapping[str, Any]) -> dict[str, Any]:
  """Drop the `module.` prefix that `nn.DataParallel` adds to every key."""
  if state_dict and all(k.startswith('module.') for k in state_dict):
    return {k[len('module.') :]: v for k, v in state_dict.items()}
  return dict(state_dict)


# Where the number of classes can be read, in order: (key, axis of the class dimension).
_CLASS_COUNT_KEYS = (
    ('decoder.output_conv.bias', 0),
    ('decoder.output_conv.weight', 1),
    ('encoder_output_conv.bias', 0),
    ('encoder_output_conv.weight', 0),
)


def infer_num_classes(state_dict: Mapping[str, Any]) -> int:
  """Number of classes of a PyTorch ESNet state dict (from its output convs)."""
  state_dict = _strip_prefix(state_dict)
  for key, axis in _CLASS_COUNT_KEYS:
    shape = np.shape(state_dict[key]) if key in state_dict else ()
    if len(shape) > axis:
      return int(shape[axis])
  raise ConversionError(
      f'State dict has none of {", ".join(k for k, _ in _CLASS_COUNT_KEYS)}: '
      f'not an ESNet checkpoint? First keys: {sorted(state_dict)[:5]}'
  )


def torch_to_flax(state_dict: Mapping[str, Any]) -> Variables:
  """Convert a PyTorch ESNet state dict (name -> array) to Flax variables.

  Returns `{'params': ..., 'batch_stats': ...}` including the encoder-only head.
  Raises `ConversionError` naming every missing, unexpected or mis-shaped key.
  """
  state_dict = _strip_prefix(state_dict)
  num_classes = infer_num_classes(state_dict)
  expected = _flatten(template(num_classes))
  flat: dict[tuple[str, ...], np.ndarray] = {}
  unexpected, misshaped = [], []
  for key, value in state_dict.items():
    module, leaf = _flax_module_path(key)
    if leaf == 'num_batches_tracked':
      continue
    value = np.asarray(value)
    if _is_batch_norm(module) and leaf in _BN_TORCH_TO_FLAX:
      collection, name = _BN_TORCH_TO_FLAX[leaf]
    elif leaf in ('weight', 'bias'):
      collection, name = 'params', 'kernel' if leaf == 'weight' else 'bias'
      if leaf == 'weight' and value.ndim == 4:
        value = value.transpose((2, 3, 0, 1) if _is_transposed_conv(module) else (2, 3, 1, 0))
    else:
      unexpected.append(key)
      continue
    path = (collection,) + module + (name,)
    if path not in expected:
      unexpected.append(key)
    elif tuple(expected[path].shape) != value.shape:
      misshaped.append(
          f'{key}: got {tuple(np.shape(state_dict[key]))}, expected '
          f'{_torch_shape(path, expected[path].shape)}'
      )
    else:
      flat[path] = value.astype(np.float32)
  missing = [_torch_key(p) for p in expected if p not in flat and _torch_key(p) not in state_dict]
  problems = []
  if missing:
    problems.append('missing keys: ' + ', '.join(sorted(missing)))
  if unexpected:
    problems.append('unexpected keys: ' + ', '.join(sorted(unexpected)))
  if misshaped:
    problems.append('mis-shaped keys: ' + '; '.join(misshaped))
  if problems:
    raise ConversionError(
        f'State dict does not match ESNet({num_classes}): ' + ' | '.join(problems)
    )
  return _unflatten(flat)


def _torch_key(path: tuple[str, ...]) -> str:
  collection, module, name = path[0], path[1:-1], path[-1]
  if collection == 'batch_stats' or _is_batch_norm(module):
    leaf = _BN_FLAX_TO_TORCH[(collection, name)]
  else:
    leaf = 'weight' if name == 'kernel' else 'bias'
  return f'{_torch_module_path(module)}.{leaf}'


def _torch_shape(path: tuple[str, ...], flax_shape: tuple[int, ...]) -> tuple[int, ...]:
  if len(flax_shape) != 4:
    return tuple(flax_shape)
  h, w, i, o = flax_shape
  return (i, o, h, w) if _is_transposed_conv(path[1:-1]) else (o, i, h, w)


def flax_to_torch(variables: Mapping[str, Any]) -> dict[str, np.ndarray]:
  """Inverse of `torch_to_flax`: Flax variables -> PyTorch state dict of numpy arrays.

  `num_batches_tracked` is written as 0 for every BatchNorm so that
  `torch.nn.Module.load_state_dict(strict=True)` accepts the result.
  """
  out: dict[str, np.ndarray] = {}
  for path, value in _flatten({k: variables[k] for k in ('params', 'batch_stats')}).items():
    value = np.asarray(value, dtype=np.float32)
    module = path[1:-1]
    if value.ndim == 4:
      value = value.transpose((2, 3, 0, 1) if _is_transposed_conv(module) else (3, 2, 0, 1))
    out[_torch_key(path)] = np.ascontiguousarray(value)
    if path[0] == 'batch_stats' and path[-1] == 'mean':
      out[f'{_torch_module_path(module)}.num_batches_tracked'] = np.array(0, np.int64)
  return out
