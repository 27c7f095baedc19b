"""Where the tools write: an output never replaces an input, and a file lands whole or not at all.

Every command that writes files (export and its INT8 quantization, predict, the demo's site
builder, onnx_eval's `--json`, plots, convert) goes through these helpers:

- `check_output_file` refuses, in one line naming both, an output that is (after resolving
  symbolic links) one of the files the command reads, and one that cannot be a file at all
  (an existing folder, a path under a file such as `/dev/null/x`).
- `replacing` yields a temporary name beside the target, with the target's suffix (writers
  such as PIL, PyAV and ONNX pick the format from it), and renames it onto the target only
  when the writer finished: a failure or an interrupt leaves an earlier file as it was.

Why here and not in each tool: the cases are the same everywhere (a typo that names the
weights as the output, a shell glob that passes earlier outputs back as inputs), and one
place keeps the wording and the guarantees the same.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterable, Iterator

from esnet_jax.errors import OutputError

# What a temporary file's name holds between its target's stem and suffix.
PARTIAL_MARK = '.partial-'


def resolved(path: str | os.PathLike[str]) -> Path:
  """`path` absolute, with `~` expanded and every symbolic link resolved (missing parts kept)."""
  return Path(path).expanduser().resolve()


def check_output_file(
    path: str | os.PathLike[str],
    option: str,
    inputs: Iterable[tuple[str, str | os.PathLike[str]]] = (),
) -> Path:
  """Checks that PATH can be written as a file without replacing an input; returns it.

  Args:
    path: the output file.
    option: how the user named it (`--out`), for the message.
    inputs: (how the user named it, path) of each file or folder the command reads.

  Raises:
    OutputError: PATH is one of `inputs` (after resolving links), an existing folder, or
      lies under something that is not a folder.
  """
  path = Path(path)
  target = resolved(path)
  for name, source in inputs:
    if resolved(source) == target:
      raise OutputError(
          f'{option} {path}: is {name} {source}, which this command reads; refusing to '
          'overwrite it (choose another output).'
      )
  if target.is_dir():
    raise OutputError(f'{option} {path}: is a folder; expected a file name.')
  _check_parents(path, target, option)
  return path


def check_output_folder(path: str | os.PathLike[str], option: str) -> Path:
  """Checks that PATH is, or can be made, a folder; returns it.

  Raises:
    OutputError: PATH is an existing file, or lies under something that is not a folder.
  """
  if not os.fspath(path).strip():  # Before Path(), which reads '' as '.'.
    raise OutputError(f'{option} {os.fspath(path)!r}: expected a folder name, not an empty one.')
  path = Path(path)
  target = resolved(path)
  if target.exists() and not target.is_dir():
    raise OutputError(f'{option} {path}: is a file; expected a folder.')
  _check_parents(path, target, option)
  return path


def _check_parents(path: Path, target: Path, option: str) -> None:
  """Raises OutputError if the nearest existing folder above TARGET is not a folder."""
  for parent in target.parents:
    if parent.exists():
      if not parent.is_dir():
        raise OutputError(
            f'{option} {path}: {parent} is not a folder, so nothing can be written there.'
        )
      return


def partial_name(path: Path) -> Path:
  """A fresh temporary name beside PATH that keeps its suffix: `.a.partial-1f2e3d4c.png`."""
  return path.with_name(f'.{path.stem}{PARTIAL_MARK}{uuid.uuid4().hex[:8]}{path.suffix}')


@contextlib.contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
  """Yields a temporary path beside PATH; renamed onto PATH when the block ends without error.

  The folder of PATH is made if missing. On any exception (KeyboardInterrupt included) the
  temporary file is removed and PATH keeps what it held.
  """
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = partial_name(path)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    tmp.unlink(missing_ok=True)
    raise


def write_text(path: str | os.PathLike[str], text: str) -> Path:
  """Writes TEXT to PATH whole (`replacing`)."""
  with replacing(path) as tmp:
    tmp.write_text(text)
  return Path(path)


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
  """Writes DATA to PATH whole (`replacing`)."""
  with replacing(path) as tmp:
    tmp.write_bytes(data)
  return Path(path)
