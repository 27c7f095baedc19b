"""The image and video files a tool is given: finding them (files, folders, globs) and reading images.

Shared by predict (which segments them) and INT8 calibration (`quantize`, which reads a
folder of images): one definition of what counts as an image, and one reader whose
every failure, a decompression bomb included, is a one-line `InputError` naming the file.
"""

from __future__ import annotations

import dataclasses
import glob
import os
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from esnet_jax.data import video
from esnet_jax.errors import InputError

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')


@dataclasses.dataclass(frozen=True)
class InputFile:
  """One file to segment and the sub-folder of the output its results go to."""

  path: Path
  subdir: Path = Path()

  @property
  def is_video(self) -> bool:
    return self.path.suffix.lower() in video.VIDEO_SUFFIXES


def _is_supported(path: Path) -> bool:
  return path.suffix.lower() in IMAGE_SUFFIXES + video.VIDEO_SUFFIXES


def find_inputs(
    specs: Sequence[str | os.PathLike[str]], exclude: str | os.PathLike[str] | None = None
) -> tuple[list[InputFile], list[Path]]:
  """The files named by image/video paths, folders and globs, and the ones skipped.

  An explicitly named file (or glob match) is always returned, supported or not,
  so that an unsupported one is reported as a failure; inside a folder, files
  that are not images or videos (and hidden files) are skipped and listed.
  Files under `exclude` (the output folder, so that a second run does not
  segment the first one's results) are left out.

  Raises:
    InputError: If a path does not exist, or nothing is found at all.
  """
  found: list[InputFile] = []
  skipped: list[Path] = []
  excluded = Path(exclude).absolute() if exclude else None

  def keep(file: Path) -> bool:
    return excluded is None or not file.absolute().is_relative_to(excluded)

  for spec in map(str, specs):
    path = Path(spec)
    if path.is_dir():
      for file in sorted(p for p in path.rglob('*') if p.is_file() and keep(p)):
        hidden = any(part.startswith('.') for part in file.relative_to(path).parts)
        if _is_supported(file) and not hidden:
          found.append(InputFile(file, file.parent.relative_to(path)))
        else:
          skipped.append(file)
    elif path.is_file():
      found.append(InputFile(path))
    elif glob.has_magic(spec):
      base = Path(*leading_plain_parts(spec))
      matches = sorted(
          Path(m) for m in glob.glob(spec, recursive=True) if Path(m).is_file() and keep(Path(m))
      )
      found += [InputFile(m, m.parent.relative_to(base)) for m in matches]
    else:
      raise InputError(f'Input {spec} does not exist.')
  if not found:
    raise InputError(
        f'No images or videos found in {", ".join(map(str, specs))} (images: '
        f'{" ".join(IMAGE_SUFFIXES)}; videos: {" ".join(video.VIDEO_SUFFIXES)})'
        + (f'; {len(skipped)} other file(s) skipped.' if skipped else '.')
    )
  return found, skipped


def leading_plain_parts(pattern: str) -> list[str]:
  """The folders of a glob before its first wildcard: where relative output paths start."""
  plain = []
  for part in Path(pattern).parts[:-1]:
    if glob.has_magic(part):
      break
    plain.append(part)
  return plain


def load_image(path: Path) -> np.ndarray:
  """uint8 RGB [H, W, 3] of an image file (grey, palette and RGBA converted).

  Raises:
    InputError: naming PATH, if it is not an image file, cannot be decoded, or claims
      more pixels than PIL's decompression-bomb limit (`Image.MAX_IMAGE_PIXELS` x 2).
  """
  if path.suffix.lower() not in IMAGE_SUFFIXES:
    raise InputError(
        f'{path}: unsupported file type {path.suffix or "(none)"!r}; '
        f'expected an image ({" ".join(IMAGE_SUFFIXES)}) or a video '
        f'({" ".join(video.VIDEO_SUFFIXES)}).'
    )
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'), np.uint8)
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise InputError(f'Cannot read image {path}: {e}') from e
