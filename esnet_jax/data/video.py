"""Video for `esnet_jax.inference.predict`: decoded RGB frames in from files, cameras and streams, an MP4 out.

Uses PyAV (FFmpeg's libraries, shipped inside its wheel), an optional
dependency: `pip install "esnet-jax[video]"`. Any container and codec FFmpeg
decodes is read, from a file or from a live source: a camera device
(`/dev/video0`, FFmpeg's v4l2) or a stream URL (`LIVE_SCHEMES`: rtsp://, http://, ...).
The output is H.264 (yuv420p) at the input's frame rate; frames written with their
source times (a live source whose frames were dropped) keep those times, so the
file plays at the pace it was recorded.
"""

from __future__ import annotations

import dataclasses
import os
import re
import urllib.parse
from fractions import Fraction
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any, Iterator

import numpy as np
from esnet_jax.errors import VideoError

VIDEO_SUFFIXES = ('.mp4', '.m4v', '.mov', '.avi', '.mkv', '.webm', '.mpg', '.mpeg')
# URL schemes of live sources (FFmpeg's network protocols that carry video).
LIVE_SCHEMES = ('rtsp', 'rtmp', 'http', 'https', 'udp', 'tcp')
# Seconds a live source may take to open, and then to deliver each packet, before it fails.
LIVE_TIMEOUT_S = 10.0
_DEFAULT_FPS = Fraction(25)
_DEVICE = re.compile(r'^/dev/video\d+$')
_URL = re.compile(r'^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://')
# x264's 'superfast' preset at crf 23: on 640x368 overlay frames it takes 4.3 ms of CPU a
# frame where x264's default ('medium') takes 15.3 ms, for files about a third larger
# (1.4 against 1.0 Mbit/s); on a small CPU that time is the network's, whose pace bounds a
# video's (`esnet_jax.inference.video_pipeline`).
_X264_OPTIONS = {'preset': 'ultrafast', 'crf': '23'}


def _av() -> ModuleType:
  try:
    import av  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('Video files need PyAV: pip install "esnet-jax[video]"') from e
  return av


def _one_line(error: Exception) -> str:
  return ' '.join(str(error).split())


def is_live(spec: str | os.PathLike[str]) -> bool:
  """Whether SPEC names a live source: a camera device (/dev/videoN) or a stream URL
  (`scheme://...` with one of `LIVE_SCHEMES`)."""
  spec = os.fspath(spec)
  url = _URL.match(spec)
  return bool(_DEVICE.match(spec)) or bool(url and url['scheme'].lower() in LIVE_SCHEMES)


@dataclasses.dataclass(frozen=True)
class LiveSource:
  """A camera device or stream URL that predict segments as it plays (`--input`)."""

  url: str

  @property
  def name(self) -> str:
    """The stem of its results: the device's name (`video0`), else the URL's last path
    part without its suffix (`rtsp://cam:554/live/front.sdp` -> `front`), else its host."""
    if _DEVICE.match(self.url):
      return Path(self.url).name
    parts = urllib.parse.urlsplit(self.url)
    name = PurePosixPath(parts.path).stem or parts.hostname or 'stream'
    return re.sub(r'[^A-Za-z0-9._-]+', '_', name)


class VideoReader:
  """The frames of a video's first video stream as uint8 RGB [H, W, 3].

  SOURCE is a file, or a live source (`is_live`), which is opened with
  `LIVE_TIMEOUT_S` so that one that stops answering fails instead of hanging.

  Attributes:
    source: SOURCE as given, for messages.
    path: SOURCE as a path (meaningful for files).
    live: Whether SOURCE is a live source.
    fps: Average frame rate (25 if the source does not say).
    size: (height, width) of the frames.
  """

  def __init__(self, source: str | os.PathLike[str]):
    self.source = os.fspath(source)
    self.path = Path(source)
    self.live = is_live(self.source)
    av = _av()
    try:
      if self.live:
        self._container = av.open(
            self.source,
            format='v4l2' if _DEVICE.match(self.source) else None,
            timeout=LIVE_TIMEOUT_S,
        )
      else:
        self._container = av.open(self.source)
    except (av.error.FFmpegError, OSError) as e:
      what = 'live source' if self.live else 'video'
      raise VideoError(f'Cannot read {what} {self.source}: {_one_line(e)}') from e
    if not self._container.streams.video:
      self._container.close()
      raise VideoError(f'{self.source} has no video stream.')
    self._stream = self._container.streams.video[0]
    self.fps = Fraction(self._stream.average_rate or _DEFAULT_FPS)
    self.size = (self._stream.codec_context.height, self._stream.codec_context.width)

  def timed_frames(self) -> Iterator[tuple[float, Any]]:
    """(seconds since the first frame, decoded `av.VideoFrame`) per frame, in stream order.

    Frames stay unconverted (`to_rgb`), so that a live source's frames that are dropped
    cost only their decoding. Times come from the frames' timestamps, or from the
    frame rate where a frame has none.

    Raises:
      VideoError: naming the source, if decoding fails or a live source stops answering.
    """
    av = _av()
    start = None
    try:
      for index, frame in enumerate(self._container.decode(self._stream)):
        time = float(frame.time) if frame.time is not None else float(index / self.fps)
        start = time if start is None else start
        yield time - start, frame
    except (av.error.FFmpegError, OSError) as e:
      raise VideoError(f'Cannot decode video {self.source}: {_one_line(e)}') from e

  def __iter__(self) -> Iterator[np.ndarray]:
    for _, frame in self.timed_frames():
      yield to_rgb(frame)

  def close(self) -> None:
    self._container.close()

  def __enter__(self) -> 'VideoReader':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def to_rgb(frame: Any) -> np.ndarray:
  """uint8 RGB [H, W, 3] of a decoded `av.VideoFrame`."""
  return frame.to_ndarray(format='rgb24')


class VideoWriter:
  """Writes uint8 RGB frames of one size to an H.264 MP4 at FPS.

  Each frame is shown at its `time` (seconds from the start) if given, else one frame
  interval after the previous one. yuv420p needs even sides: frames with an odd height
  or width are padded by one edge row/column.
  """

  def __init__(self, path: str | os.PathLike[str], fps: Fraction | float, size: tuple[int, int]):
    av = _av()
    self.path = Path(path)
    self.size = tuple(size)
    self._pad = (size[0] % 2, size[1] % 2)
    self._rate = Fraction(fps).limit_denominator(1001)
    self._container = av.open(str(self.path), mode='w')
    self._stream = self._container.add_stream('libx264', rate=self._rate, options=_X264_OPTIONS)
    self._stream.height, self._stream.width = size[0] + self._pad[0], size[1] + self._pad[1]
    self._stream.pix_fmt = 'yuv420p'
    self._time_base = 1 / self._rate  # One tick per frame interval.
    self._next_pts = 0
    self._closed = False
    self._av = av

  def write(self, frame: np.ndarray, time: float | None = None) -> None:
    """Encodes FRAME, shown at TIME seconds (None: right after the previous frame)."""
    if frame.shape != (*self.size, 3) or frame.dtype != np.uint8:
      raise VideoError(
          f'{self.path}: expected uint8 frames of shape {(*self.size, 3)}, '
          f'got {frame.dtype} {frame.shape}.'
      )
    if any(self._pad):
      frame = np.pad(frame, ((0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode='edge')
    video_frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format='rgb24')
    pts = self._next_pts if time is None else max(self._next_pts, round(time / self._time_base))
    video_frame.pts, video_frame.time_base = pts, self._time_base
    self._next_pts = pts + 1
    self._container.mux(self._stream.encode(video_frame))

  def close(self) -> None:
    """Flushes the encoder and completes the file; closing again does nothing."""
    if self._closed:
      return
    self._closed = True
    self._container.mux(self._stream.encode(None))
    self._container.close()

  def __enter__(self) -> 'VideoWriter':
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
