"""Model variables from any source a user can name.

One resolver for inference, predict, export and evaluation, so that every
entry point accepts the same things:

  - `pretrained:NAME`: weights shipped with the package (see `esnet_jax.weights.pretrained`);
  - an original PyTorch weights file (`.pth`, `.pt`, `.npz`, `.safetensors`);
  - a training workdir (its latest or best checkpoint), an orbax manager
    directory, or one checkpoint step directory.

Whatever goes wrong reading them (a missing, empty, truncated, garbage or
wrong-format file, a directory that is not a checkpoint, a damaged step with no
intact one before it) is an `esnet_jax.errors.WeightsError` naming the path and
what was expected. A workdir whose newest step is damaged falls back to the
newest intact one with a warning (see `checkpointing`).

The readers and writer of PyTorch weights files (`load_state_dict`,
`load_torch_weights`, `save_torch_weights`) live here too; `esnet_jax.weights.convert` is
the name and layout mapping they apply.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from esnet_jax.weights import checkpoints, convert, pretrained
from esnet_jax.system import output_files
from esnet_jax.errors import ConversionError, WeightsError, WeightsNotFoundError

Variables = dict[str, Any]

PRETRAINED_PREFIX = 'pretrained:'
WEIGHT_FILE_SUFFIXES = ('.pth', '.pt', '.npz', '.safetensors')


@dataclasses.dataclass(frozen=True)
class LoadedWeights:
  """Variables (`params`, `batch_stats`) with what is known about where they came from."""

  variables: dict[str, Any]
  meta: dict[str, Any]
  source: str  # What to print: the checkpoint step directory, file, or pretrained name.
  step: int | None  # The training step of an orbax checkpoint; None otherwise.


def is_pretrained(source: str | os.PathLike[str]) -> bool:
  return isinstance(source, str) and source.startswith(PRETRAINED_PREFIX)


def load(
    source: str | os.PathLike[str],
    which: str = 'latest',
    *,
    warn: checkpoints.Warn = checkpoints.warn_stderr,
) -> LoadedWeights:
  """Reads the variables `source` designates (see the module docstring).

  `which` ('latest' or 'best') picks a workdir's checkpoint; other sources ignore it.
  `warn` receives the one-line warning for each damaged checkpoint step skipped.
  Raises `WeightsError` (or a subclass) naming the path on any unreadable source.
  """
  if is_pretrained(source):
    name = source[len(PRETRAINED_PREFIX) :]
    path = pretrained.weights_file(name)
    return LoadedWeights(load_torch_weights(path), pretrained.get(name).meta(), source, None)
  path = Path(source)
  if path.suffix.lower() in WEIGHT_FILE_SUFFIXES and path.is_file():
    return LoadedWeights(load_torch_weights(path), {'source': str(path)}, str(path), None)
  step_dir, variables, meta = checkpoints.restore_checkpoint(path, which, warn=warn)
  try:
    step = int(step_dir.name)
  except ValueError:
    step = None
  return LoadedWeights(variables, meta, str(step_dir), step)


__all__ = [
    'LoadedWeights',
    'WeightsError',
    'is_pretrained',
    'load',
    'PRETRAINED_PREFIX',
    'WEIGHT_FILE_SUFFIXES',
]


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
  """`convert.torch_to_flax(load_state_dict(path))`, with the file named in any error."""
  state_dict = load_state_dict(path)
  try:
    return convert.torch_to_flax(state_dict)
  except ConversionError as e:
    raise ConversionError(f'{path}: {e}') from e


# What `save_torch_weights` writes: a NumPy archive or a PyTorch file.
TORCH_OUTPUT_SUFFIXES = ('.npz', '.pth', '.pt')


def save_torch_weights(variables: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
  """Write Flax variables as an original-layout PyTorch state dict (`.npz` or `.pth`).

  The file is written whole (`output_files.replacing`): a failure leaves an earlier
  file at PATH as it was.
  """
  path = Path(path)
  ext = path.suffix.lower()
  if ext not in TORCH_OUTPUT_SUFFIXES:
    raise ConversionError(f'Unsupported output {path}: expected .npz, .pth or .pt')
  state_dict = convert.flax_to_torch(variables)
  if ext == '.npz':
    with output_files.replacing(path) as tmp, open(tmp, 'wb') as f:
      np.savez(f, **state_dict)  # A file object: given a name, savez might append '.npz'.
    return
  import torch

  tensors = {k: torch.from_numpy(np.asarray(v)) for k, v in state_dict.items()}
  with output_files.replacing(path) as tmp:
    torch.save(tensors, tmp)
