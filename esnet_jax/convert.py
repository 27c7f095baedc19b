"""Weights of the original PyTorch ESNet <-> Flax variables of `esnet_jax.models.ESNet`.

PyTorch names map one-to-one onto the Flax tree (`encoder.layers.3.bn.running_var`
is `batch_stats/encoder/layers_3/bn/var`); conv weights go OIHW -> HWIO and
transposed-conv weights (in, out, kH, kW) -> (kH, kW, in, out).

CLI: `python -m esnet_jax.convert --torch ESNet.pth --out DIR` writes an orbax
checkpoint that `esnet_jax.inference.Segmenter.from_checkpoint(DIR)` restores;
`--checkpoint WORKDIR --which best --out-torch esnet.npz` goes the other way (how
the shipped `esnet_jax/pretrained/*.npz` files are made).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from esnet_jax import cli
from esnet_jax.errors import ConversionError, WeightsError, WeightsNotFoundError
from esnet_jax.models import ESNet

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


# How each kind of weights file starts: zip archives (.npz, PyTorch >= 1.6) with 'PK',
# PyTorch's legacy format with a pickle protocol byte, safetensors with a little-endian
# header length (8 bytes; its top bytes are zero for any real header).
_ZIP = (b'PK\x03\x04', b'PK\x05\x06')
_MAGIC = {'.npz': _ZIP, '.pth': _ZIP + (b'\x80',), '.pt': _ZIP + (b'\x80',), '.safetensors': (b'',)}


# Weights are arrays of a few MB (ESNet's state dict is about 7 MB); a zip archive that
# unpacks to more than this is refused before it is read (a zip bomb exhausts memory).
MAX_UNPACKED_BYTES = 1 << 30


def _refuse_zip_bomb(path: str) -> None:
  """`ConversionError` if the zip archive `path` declares more than `MAX_UNPACKED_BYTES`.

  Reading a member never yields more than its declared size, so the sum bounds memory.
  """
  import zipfile

  try:
    with zipfile.ZipFile(path) as archive:
      total = sum(member.file_size for member in archive.infolist())
  except (zipfile.BadZipFile, OSError, ValueError):
    return  # Not a readable archive: the reader says why.
  if total > MAX_UNPACKED_BYTES:
    raise ConversionError(
        f'{path} unpacks to {total / 2**20:.0f} MiB, more than the '
        f'{MAX_UNPACKED_BYTES / 2**20:.0f} MiB accepted for a weights file (an ESNet state '
        'dict is about 7 MB); it was not read.'
    )


def load_state_dict(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
  """Read a PyTorch ESNet state dict from `.npz`, `.safetensors` or `.pth`/`.pt`.

  `.pth` needs the `torch` extra and is read with `weights_only=True`, so a
  malicious pickle cannot run code. Checkpoints that wrap the state dict
  (`{'state_dict': ...}` or `{'model': ...}`) are unwrapped. An empty,
  truncated, garbage or wrong-format file, or an archive that would unpack to more
  than `MAX_UNPACKED_BYTES`, is a `ConversionError` naming it.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise WeightsNotFoundError(f'Weights file not found: {path}')
  ext = os.path.splitext(path)[1].lower()
  expected = {
      '.npz': 'a zip archive of named arrays, as numpy.savez writes',
      '.safetensors': 'a safetensors file of named tensors',
      '.pth': 'a PyTorch state dict saved with torch.save',
      '.pt': 'a PyTorch state dict saved with torch.save',
  }
  if ext not in expected:
    raise ConversionError(
        f'Unsupported weights file {path}: expected .npz, ' f'.safetensors, .pth or .pt'
    )
  if os.path.getsize(path) == 0:
    raise ConversionError(f'{path} is empty (0 bytes): expected {expected[ext]}.')
  with open(path, 'rb') as f:
    head = f.read(8)
  if not any(head.startswith(m) for m in _MAGIC[ext]):
    raise ConversionError(
        f'{path} is not {expected[ext]}: it starts with bytes {head!r}, '
        f'not {" or ".join(repr(m) for m in _MAGIC[ext])}.'
    )
  if head.startswith(_ZIP):
    _refuse_zip_bomb(path)
  if ext in ('.pth', '.pt'):
    return _load_pth(path)
  try:
    if ext == '.npz':
      with np.load(path, allow_pickle=False) as data:
        if not hasattr(data, 'files'):  # A bare .npy array, renamed.
          raise ValueError(f'it holds one {type(data).__name__}, not named arrays')
        state_dict = {k: data[k] for k in data.files}
    else:
      from safetensors.numpy import load_file

      state_dict = dict(load_file(path))
  except Exception as e:  # pylint: disable=broad-except  # zipfile, zlib, pickle, safetensors.
    raise ConversionError(
        f'Could not read {path}: expected {expected[ext]} '
        f'({type(e).__name__}: {" ".join(str(e).split())[:200]}).'
    ) from e
  if not state_dict:
    raise ConversionError(f'{path} holds no arrays: expected an ESNet state dict.')
  return state_dict


def _load_pth(path: str) -> dict[str, np.ndarray]:
  try:
    import torch
  except ImportError as e:
    raise ImportError(
        f'Reading {path} needs PyTorch: pip install "esnet-jax[torch]" '
        '(on CPU-only machines: pip install torch==2.13.0 first).'
    ) from e
  try:
    obj = torch.load(path, map_location='cpu', weights_only=True)
  except Exception as e:  # pickle errors name no file; add it.
    message = str(e)
    if 'WeightsUnpickler error:' in message:  # The reason, after torch's long preamble.
      message = message.split('WeightsUnpickler error:', 1)[1]
    raise ConversionError(
        f'Could not read {path}: expected a PyTorch state dict saved with '
        f'torch.save, readable with weights_only=True '
        f'({type(e).__name__}: {" ".join(message.split())[:300]})'
    ) from e
  for wrapper in ('state_dict', 'model', 'model_state_dict'):
    if isinstance(obj, Mapping) and wrapper in obj and isinstance(obj[wrapper], Mapping):
      obj = obj[wrapper]
  if not isinstance(obj, Mapping):
    raise ConversionError(f'{path} holds a {type(obj).__name__}, not a state dict.')
  not_tensors = sorted(str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor))
  if not_tensors:
    raise ConversionError(
        f'{path} is not a state dict of tensors: {", ".join(not_tensors[:5])} '
        f'{"are" if len(not_tensors) > 1 else "is"} not a tensor.'
    )
  return {k: v.detach().cpu().numpy() for k, v in obj.items()}


def load_torch_weights(path: str | os.PathLike[str]) -> Variables:
  """`torch_to_flax(load_state_dict(path))`, with the file named in any error."""
  state_dict = load_state_dict(path)
  try:
    return torch_to_flax(state_dict)
  except ConversionError as e:
    raise ConversionError(f'{path}: {e}') from e


def save_torch_weights(variables: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
  """Write Flax variables as an original-layout PyTorch state dict (`.npz` or `.pth`)."""
  path = os.fspath(path)
  state_dict = flax_to_torch(variables)
  ext = os.path.splitext(path)[1].lower()
  if ext == '.npz':
    np.savez(path, **state_dict)
  elif ext in ('.pth', '.pt'):
    import torch

    torch.save({k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}, path)
  else:
    raise ConversionError(f'Unsupported output {path}: expected .npz, .pth or .pt')


def main(argv: list[str] | None = None) -> int:
  import argparse
  import sys

  from esnet_jax import checkpointing, weights

  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.convert',
      description='Convert ESNet weights between the original PyTorch layout and orbax. '
      'Either --torch FILE --out DIR, or --checkpoint SRC --out-torch FILE.',
  )
  parser.add_argument('--torch', help='PyTorch weights to read: .pth, .pt, .npz, .safetensors')
  parser.add_argument('--out', help='with --torch: output orbax checkpoint directory')
  parser.add_argument(
      '--checkpoint',
      help='weights to write in the PyTorch layout: a '
      'training workdir, orbax checkpoint, or pretrained:NAME',
  )
  parser.add_argument(
      '--which',
      default='latest',
      choices=('latest', 'best'),
      help="with --checkpoint: a workdir's latest or best checkpoint",
  )
  parser.add_argument('--out-torch', help='with --checkpoint: output .npz, .pth or .pt file')
  args = parser.parse_args(argv)
  if (
      bool(args.torch) == bool(args.checkpoint)
      or bool(args.torch) != bool(args.out)
      or (bool(args.checkpoint) != bool(args.out_torch))
  ):
    parser.error('give either --torch FILE --out DIR, or --checkpoint SRC --out-torch FILE')
  try:
    if args.torch:
      variables = load_torch_weights(args.torch)
      num_classes = int(variables['params']['decoder']['output_conv']['bias'].shape[0])
      out = checkpointing.save_variables(
          args.out, variables, num_classes=num_classes, meta={'source': os.path.abspath(args.torch)}
      )
      print(f'Wrote ESNet({num_classes}) variables to {out}')
    else:
      loaded = weights.load(args.checkpoint, args.which)
      save_torch_weights(loaded.variables, args.out_torch)
      print(f'Wrote the PyTorch state dict of {loaded.source} to {args.out_torch}')
  except (WeightsError, FileNotFoundError, FileExistsError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  cli.run(main)
