"""Segmenting a video as a pipeline: decoding, the network and encoding overlap.

Three threads share the work of a video, so that its frame rate is the slowest
stage's, not the sum of all of them:

- the reader decodes frames (PyAV releases the GIL while FFmpeg works);
- the caller's thread runs the network (ONNX Runtime, OpenVINO and XLA release the
  GIL while they compute) and nothing else;
- the writer blends the class colours over each frame and encodes it (numpy and PyAV
  release the GIL), off the network's path.

The queues between them are short, so memory stays bounded by a few frames.

A file is segmented whole, in order, `video_batch` frames per call. A live source
(camera, stream) cannot wait for the network: when the network is slower than the
source, the reader keeps only the newest frame, the older ones it decoded meanwhile are
dropped (and counted), and each frame is written at its source time, so the output
plays at the pace of the source, with fewer frames.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Any, Callable, Iterator

import jax
import numpy as np

from esnet_jax.data import video

# Decoded frames waiting for the network, and segmented ones waiting for the encoder.
_QUEUED = 8
_POLL_S = 0.1


def video_batch(engine: str, batch_size: int) -> int:
  """How many frames of a video ENGINE segments per call.

  One on a CPU: measured end to end on 640x368 frames on 2 Zen 4 cores, batches of 2
  and 4 are no faster for any engine (OpenVINO INT8 23.1, 20.0, 21.6 frames/s; OpenVINO
  float32 8.3, 8.3, 8.1; ONNX Runtime INT8 14.7, 13.7, 14.8; JAX float32 9.3, 9.2, 9.2)
  and only hold frames back. JAX on an accelerator gets BATCH_SIZE (`--batch-size`), so
  that the device is not left waiting for one frame at a time.
  """
  if engine == 'jax' and jax.default_backend() != 'cpu':
    return batch_size
  return 1


@dataclasses.dataclass(frozen=True)
class VideoStats:
  """How one video went: frames written, seconds taken, and the source's own pace.

  `seconds` runs from the start of reading to the output file complete (the engine
  compiled for the frame size before, `warmup_seconds`); `dropped`
  counts a live source's frames left out to keep up; `interrupted` is a live
  recording stopped by Ctrl-C (its file is kept).
  """

  source: str
  frames: int
  seconds: float
  source_fps: float
  live: bool = False
  dropped: int = 0
  interrupted: bool = False
  warmup_seconds: float = 0.0  # Compiling for the frame size, before `seconds` started.

  @property
  def fps(self) -> float:
    """Frames written per second of the run."""
    return self.frames / self.seconds if self.seconds > 0 else 0.0

  @property
  def real_time(self) -> bool:
    """Whether the run kept pace with the source: a file at least at its frame rate, a live
    source by dropping frames."""
    return self.live or self.fps >= self.source_fps

  def line(self) -> str:
    """One line for the end of a run, e.g. `clip.mp4: 615 frames in 22.1 s, 27.8 frames/s
    (source 24.0 FPS; real time)`."""
    if self.live:
      pace = f'{self.dropped} frame(s) dropped to keep up'
    elif self.real_time:
      pace = 'real time'
    else:
      pace = f'{self.fps / self.source_fps:.2f}x real time' if self.source_fps else 'no source rate'
    stopped = '; stopped by Ctrl-C' if self.interrupted else ''
    warmup = f', after {self.warmup_seconds:.1f} s compiling' if self.warmup_seconds else ''
    return (
        f'{self.source}: {self.frames} frames in {self.seconds:.1f} s{warmup}, '
        f'{self.fps:.1f} frames/s (source {self.source_fps:.1f} FPS; {pace}{stopped})'
    )


_END = object()  # What follows a stage's last item.
_STOPPED = object()  # What a stage gets once the run is stopping (a stage failed).


class _Stages:
  """What the threads share: the stop signal and the first error of a worker thread."""

  def __init__(self):
    self.stop = threading.Event()
    self.error: BaseException | None = None
    self.threads: list[threading.Thread] = []

  def start(self, target: Callable[[], None], name: str) -> None:
    def body() -> None:
      try:
        target()
      except BaseException as e:  # pylint: disable=broad-except
        self.error = self.error or e  # Raised in the caller's thread (`raise_error`).
        self.stop.set()

    thread = threading.Thread(target=body, name=f'video-{name}', daemon=True)
    self.threads.append(thread)
    thread.start()

  def put(self, q: queue.Queue, item: Any) -> bool:
    """Puts ITEM on Q, waiting for room; False if the run stops first."""
    while not self.stop.is_set():
      try:
        q.put(item, timeout=_POLL_S)
        return True
      except queue.Full:
        continue
    return False

  def get(self, q: queue.Queue) -> Any:
    """The next item of Q, waiting for one; `_STOPPED` if the run stops first."""
    while True:
      try:
        return q.get(timeout=_POLL_S)
      except queue.Empty:
        if self.stop.is_set():
          return _STOPPED

  def join(self) -> None:
    for thread in self.threads:
      thread.join()

  def raise_error(self) -> None:
    """Raises a worker's error here, in the caller's thread."""
    if self.error is not None:
      raise self.error


class _Newest:
  """A slot holding a live source's newest frame: a frame not taken in time is replaced
  (dropped) by the next one."""

  def __init__(self, stages: _Stages):
    self._stages = stages
    self._cond = threading.Condition()
    self._item: Any = None
    self._ended = False
    self.dropped = 0

  def offer(self, item: Any) -> None:
    with self._cond:
      self.dropped += self._item is not None
      self._item = item
      self._cond.notify()

  def end(self) -> None:
    with self._cond:
      self._ended = True
      self._cond.notify()

  def take(self) -> Any:
    """The newest frame, waiting for one; `_END` once the source has ended, `_STOPPED`
    if the run stops first."""
    with self._cond:
      while self._item is None:
        if self._ended:
          return _END
        if self._stages.stop.is_set():
          return _STOPPED
        self._cond.wait(_POLL_S)
      item, self._item = self._item, None
      return item


class Overlay:
  """`visualize.overlay` with one palette and alpha, bit for bit, in half the time.

  Every output value is one of 256 per class and channel, so a table of them, computed
  with `visualize.overlay`'s own float32 arithmetic, replaces the per-pixel float work:
  that time is the network's on a small CPU. Ids that are not a class keep the image.
  """

  def __init__(self, colours: np.ndarray, alpha: float):
    if not 0.0 <= alpha <= 1.0:
      raise ValueError(f'alpha must be in [0, 1], got {alpha}.')
    colours = np.asarray(colours, np.uint8).reshape(-1, 3)
    values = np.arange(256, dtype=np.float32)
    blended = (1.0 - alpha) * values + alpha * colours.astype(np.float32)[:, :, None]
    table = np.clip(np.rint(blended), 0, 255).astype(np.uint8)  # [class, channel, value]
    unchanged = np.broadcast_to(np.arange(256, dtype=np.uint8), (1, 3, 256))
    self._table = np.concatenate([table, unchanged]).reshape(-1)
    self._classes = len(colours)
    self._index_dtype = np.uint16 if self._table.size <= 1 << 16 else np.uint32
    self._channels = np.arange(3, dtype=self._index_dtype) * 256

  def __call__(self, image: np.ndarray, class_map: np.ndarray) -> np.ndarray:
    """The overlay (H, W, 3) uint8 of an RGB uint8 IMAGE and its (H, W) CLASS_MAP."""
    ids = np.asarray(class_map)
    if ids.min() < 0 or ids.max() >= self._classes:
      ids = np.where((ids >= 0) & (ids < self._classes), ids, self._classes)
    index = (ids.astype(self._index_dtype) * (3 * 256))[..., None] + self._channels
    index += image
    return self._table.take(index)


def _limited(
    frames: Iterator[tuple[float, Any]], max_frames: int | None, duration: float | None
) -> Iterator[tuple[float, Any]]:
  """FRAMES up to the first at or after DURATION seconds, MAX_FRAMES of them at most."""
  for count, (t, frame) in enumerate(frames):
    if (max_frames is not None and count >= max_frames) or (duration is not None and t >= duration):
      return
    yield t, frame


class _Pipeline:
  """One `segment_video` run: the threads' shared queues, the live slot and the frame count."""

  def __init__(
      self,
      reader: video.VideoReader,
      writer: video.VideoWriter,
      *,
      colours: np.ndarray,
      alpha: float,
      batch: int,
      max_frames: int | None,
      duration: float | None,
  ):
    self.stages = _Stages()
    self.decoded: queue.Queue = queue.Queue(_QUEUED)
    self.segmented: queue.Queue = queue.Queue(max(1, _QUEUED // batch))  # Batches of frames.
    self.newest = _Newest(self.stages)
    self.overlay = Overlay(colours, alpha)
    self.reader, self.writer = reader, writer
    self.batch, self.max_frames, self.duration = batch, max_frames, duration
    self.live = reader.live
    self.written = 0

  def _read_file(self) -> None:
    """The reader thread of a file: every frame in order, waiting for room in the queue."""
    fps = float(self.reader.fps)
    frames = ((i / fps, image) for i, image in enumerate(self.reader))
    for t, image in _limited(frames, self.max_frames, self.duration):
      if not self.stages.put(self.decoded, (t, image)):
        return
    self.stages.put(self.decoded, _END)

  def _read_live(self) -> None:
    """The reader thread of a live source: offers each frame, replacing one not yet taken."""
    try:
      for t, frame in _limited(self.reader.timed_frames(), None, self.duration):
        self.newest.offer((t, frame))
        if self.stages.stop.is_set():
          return
    finally:
      self.newest.end()

  def _write(self) -> None:
    """The writer thread: blends and encodes each segmented frame, off the network's path."""
    while (item := self.stages.get(self.segmented)) is not _END:
      if item is _STOPPED:
        return
      for t, image, class_map in item:
        self.writer.write(self.overlay(image, class_map), time=t if self.live else None)
        self.written += 1
    self.writer.close()  # Flushing the encoder is part of the run's time.

  def _live_batches(self) -> Iterator[list[tuple[float, np.ndarray]]]:
    """A live source's newest frames, one per batch, MAX_FRAMES of them at most."""
    taken = 0
    while self.max_frames is None or taken < self.max_frames:
      if (item := self.newest.take()) is _END or item is _STOPPED:
        return
      yield [(item[0], video.to_rgb(item[1]))]
      taken += 1

  def _file_batches(self) -> Iterator[list[tuple[float, np.ndarray]]]:
    """A file's decoded frames in order, BATCH per batch (the last may be shorter)."""
    frames = []
    while (item := self.stages.get(self.decoded)) is not _END:
      if item is _STOPPED:
        return
      frames.append(item)
      if len(frames) == self.batch:
        yield frames
        frames = []
    if frames:
      yield frames

  def _segment_batches(
      self, segmenter: Callable[[np.ndarray], np.ndarray], on_frames: Callable[[int], None]
  ) -> bool:
    """Runs the network on each batch for the writer; True if Ctrl-C stopped a live source."""
    try:
      for frames in self._live_batches() if self.live else self._file_batches():
        class_maps = segmenter(np.stack([image for _, image in frames]))
        if not self.stages.put(
            self.segmented, [(t, im, m) for (t, im), m in zip(frames, class_maps)]
        ):
          break
        on_frames(len(frames))
    except KeyboardInterrupt:
      if not self.live:
        raise
      return True  # Ctrl-C stops a recording: what was segmented is written.
    return False

  def run(
      self, segmenter: Callable[[np.ndarray], np.ndarray], on_frames: Callable[[int], None]
  ) -> VideoStats:
    """Runs the three stages to the end, stopping every thread before raising their error."""
    interrupted = finished = False
    start = time.perf_counter()
    self.stages.start(self._read_live if self.live else self._read_file, 'read')
    self.stages.start(self._write, 'write')
    try:
      interrupted = self._segment_batches(segmenter, on_frames)
      self.stages.put(self.segmented, _END)
      finished = True
    finally:
      if self.live or not finished:
        # The live reader stops at its next frame; on an error, every stage.
        self.stages.stop.set()
      self.stages.join()
    self.stages.raise_error()
    return VideoStats(
        source=self.reader.source,
        frames=self.written,
        seconds=time.perf_counter() - start,
        source_fps=float(self.reader.fps),
        live=self.live,
        dropped=self.newest.dropped,
        interrupted=interrupted,
    )


def segment_video(
    segmenter: Callable[[np.ndarray], np.ndarray],
    reader: video.VideoReader,
    writer: video.VideoWriter,
    *,
    colours: np.ndarray,
    alpha: float,
    batch: int,
    max_frames: int | None = None,
    duration: float | None = None,
    on_frames: Callable[[int], None] = lambda n: None,
) -> VideoStats:
  """Segments READER's frames into WRITER as overlays; returns how it went.

  A file's frames are all segmented, BATCH at a time; a live source's (`reader.live`)
  one at a time, the newest, dropping those the network had no time for. MAX_FRAMES
  and DURATION (seconds of the source) end it early; Ctrl-C ends a live source's run
  normally (the caller keeps its file) and a file's with KeyboardInterrupt. WRITER is
  closed when all went well; the caller closes it (again, harmlessly) in any case.

  Raises:
    Whatever a stage raised (e.g. `VideoError` naming the file), in this thread, after
    every thread has stopped.
  """
  pipeline = _Pipeline(
      reader,
      writer,
      colours=colours,
      alpha=alpha,
      batch=batch,
      max_frames=max_frames,
      duration=duration,
  )
  return pipeline.run(segmenter, on_frames)
