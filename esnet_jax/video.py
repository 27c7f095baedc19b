"""Video files for `esnet_jax.predict`: decoded RGB frames in, an H.264 MP4 out.

Uses PyAV (FFmpeg's libraries, shipped inside its wheel), an optional
dependency: `pip install "esnet-jax[video]"`. Any container and codec FFmpeg
decodes is read; the output is H.264 (yuv420p) at the input's frame rate.
"""

from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from types import ModuleType
from typing import Iterator

import numpy as np
from esnet_jax.errors import VideoError

VIDEO_SUFFIXES = ('.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm', '.mpg', '.mpeg')
_DEFAULT_FPS = Fraction(25)


def _av() -> ModuleType:
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('Video files need PyAV: pip install "esnet-jax[video]"') from e
  return av


class VideoReader:
  """The frames of a video file's first video stream as uint8 RGB [H, W, 3].

  Attributes:
    fps: Average frame rate (25 if the file does not say).
    size: (height, width) of the frames.
  """

  def __init__(self, path: str | os.PathLike[str]):
    self.path = Path(path)
    av = _av()
    try:
      self._container = av.open(str(self.path))
    except (av.error.FFmpegError, OSError) as e:
      raise VideoError(f'Cannot read video {self.path}: {e}') from e
    if not self._container.streams.video:
      self._container.close()
      raise VideoError(f'{self.path} has no video stream.')
    self._stream = self._container.streams.video[0]
    self.fps = Fraction(self._stream.average_rate or _DEFAULT_FPS)
    self.size = (self._stream.codec_context.height, self._stream.codec_context.width)

  def __iter__(self) -> Iterator[np.ndarray]:
    av = _av()
    try:
      for frame in self._container.decode(self._stream):
        yield frame.to_ndarray(format='rgb24')
    except (av.error.FFmpegError, OSError) as e:
      raise VideoError(f'Cannot decode video {self.path}: {e}') from e

  def close(self) -> None:
    self._container.close()

  def __enter__(self) -> 'VideoReader':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


class VideoWriter:
  """Writes uint8 RGB frames of one size to an H.264 MP4.

  yuv420p needs even sides: frames with an odd height or width are padded by
  one edge row/column.
  """

  def __init__(self, path: str | os.PathLike[str], fps: Fraction | float, size: tuple[int, int]):
    av = _av()
    self.path = Path(path)
    self.size = tuple(size)
    self._pad = (size[0] % 2, size[1] % 2)
    self._container = av.open(str(self.path), mode='w')
    self._stream = self._container.add_stream('libx264', rate=Fraction(fps).limit_denominator(1001))
    self._stream.height, self._stream.width = size[0] + self._pad[0], size[1] + self._pad[1]
    self._stream.pix_fmt = 'yuv420p'
    self._av = av

  def write(self, frame: np.ndarray) -> None:
    if frame.shape != (*self.size, 3) or frame.dtype != np.uint8:
      raise VideoError(
          f'{self.path}: expected uint8 frames of shape {(*self.size, 3)}, '
          f'got {frame.dtype} {frame.shape}.'
      )
    if any(self._pad):
      frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode='edge')
    video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')
    self._container.mux(self._stream.encode(video_frame))

  def close(self) -> None:
    self._container.mux(self._stream.encode(None))  # Flush the encoder.
    self._container.close()

  def __enter__(self) -> 'VideoWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
