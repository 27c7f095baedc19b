"""Video: the overlapping pipeline, its frame-rate report, live sources and their dropped frames."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import random_variables
from esnet_jax.weights import checkpoints
from esnet_jax.inference import predict, video_pipeline, visualize
from esnet_jax import predict as predict_command
from esnet_jax.data import video

av = pytest.importorskip('av')

COLOURS = np.asarray([[200, 0, 0], [0, 200, 0], [0, 0, 200], [200, 200, 0]], np.uint8)
SIZE = (32, 48)


class FakeSegmenter:
  """Class maps from the red channel (4 classes), optionally slow; records its batch sizes."""

  scales, flip, num_classes = (1.0,), False, 4

  def __init__(self, engine_name: str = 'test', delay: float = 0.0, interrupt_at: int = -1):
    self.engine_name, self.delay, self.interrupt_at = engine_name, delay, interrupt_at
    self.batches: list[int] = []

  def memory_needed(self, height: int, width: int, batch: int = 1) -> int:
    return 0

  def __call__(self, images: np.ndarray) -> np.ndarray:
    if len(self.batches) == self.interrupt_at:
      raise KeyboardInterrupt
    self.batches.append(len(images))
    time.sleep(self.delay)
    return (images[..., 0] // 64).astype(np.int32)


def _frame(i: int) -> np.ndarray:
  """Frame I of a test clip: red varying over its top half, a grey that counts the frames below."""
  frame = np.full((*SIZE, 3), 8 * i, np.uint8)
  frame[: SIZE[0] // 2, :, 0] = np.linspace(0, 255, SIZE[1], dtype=np.uint8)
  return frame


def _frame_number(frame: np.ndarray) -> int:
  return round(frame[SIZE[0] * 5 // 8 :].mean() / 8)


def _clip(path: Path, frames: int, fps: float) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  with video.VideoWriter(path, fps, SIZE) as writer:
    for i in range(frames):
      writer.write(_frame(i))
  return path


def _decode(path: Path) -> tuple[list[float], list[np.ndarray]]:
  with av.open(str(path)) as container:
    frames = list(container.decode(video=0))
  return [float(f.time) for f in frames], [f.to_ndarray(format='rgb24') for f in frames]


def _recording_writes(monkeypatch) -> list[np.ndarray]:
  """The frames every VideoWriter is given, in order."""
  written = []
  write = video.VideoWriter.write

  def recorded(self, frame, time=None):
    written.append(frame.copy())
    write(self, frame, time)

  monkeypatch.setattr(video.VideoWriter, 'write', recorded)
  return written


@pytest.mark.parametrize('batch_size', [1, 3])
def test_the_pipeline_writes_the_frames_of_a_sequential_run_in_order(
    tmp_path, monkeypatch, batch_size
):
  clip = _clip(tmp_path / 'clip.mp4', 10, 10)
  written = _recording_writes(monkeypatch)
  monkeypatch.setattr(video_pipeline.jax, 'default_backend', lambda: 'gpu')  # JAX batches.
  segmenter = FakeSegmenter(engine_name='jax')
  stats = predict.predict_video(
      segmenter, clip, tmp_path / 'out.mp4', colours=COLOURS, alpha=0.6, batch_size=batch_size
  )
  with video.VideoReader(clip) as reader:
    sequential = [
        visualize.overlay(frame, FakeSegmenter()(frame[None])[0], COLOURS, 0.6) for frame in reader
    ]
  assert len(written) == len(sequential) == stats.frames == 10
  for got, expected in zip(written, sequential):
    np.testing.assert_array_equal(got, expected)
  assert segmenter.batches == ([3, 3, 3, 1] if batch_size == 3 else [1] * 10)
  times, frames = _decode(tmp_path / 'out.mp4')
  assert len(frames) == 10 and times == sorted(times) and times[-1] == pytest.approx(0.9)


def test_a_cpu_segments_video_frames_one_at_a_time(monkeypatch):
  assert video_pipeline.video_batch('openvino', 4) == 1
  assert video_pipeline.video_batch('jax', 4) == 1
  monkeypatch.setattr(video_pipeline.jax, 'default_backend', lambda: 'gpu')
  assert video_pipeline.video_batch('jax', 4) == 4
  assert video_pipeline.video_batch('onnxruntime', 4) == 1


@pytest.mark.parametrize('alpha', [0.0, 0.35, 0.5, 1.0])
def test_the_table_overlay_is_visualize_overlay_bit_for_bit(alpha):
  rng = np.random.default_rng(0)
  image = rng.integers(0, 256, (37, 45, 3), dtype=np.uint8)
  class_map = rng.integers(-2, 6, (37, 45)).astype(np.int32)  # Ids 4, 5 and < 0: no class.
  np.testing.assert_array_equal(
      video_pipeline.Overlay(COLOURS, alpha)(image, class_map),
      visualize.overlay(image, class_map, COLOURS, alpha),
  )


def test_the_report_gives_each_videos_frame_rate_beside_its_source(tmp_path, capsys):
  _clip(tmp_path / 'in' / 'clip.mp4', 12, 24)
  inputs, _ = predict.find_inputs([tmp_path / 'in'])
  report = predict.run(FakeSegmenter(), inputs, tmp_path / 'out', colours=COLOURS)
  predict.print_summary(report, tmp_path / 'out')
  (stats,) = report.videos
  assert stats.source == str(tmp_path / 'in' / 'clip.mp4') and not stats.live
  assert stats.frames == 12 and stats.source_fps == 24 and stats.dropped == 0
  assert 0 < stats.seconds < 10 and stats.fps == pytest.approx(12 / stats.seconds)
  assert stats.real_time == (stats.fps >= 24)
  err = capsys.readouterr().err
  assert (
      f'predict: {stats.source}: 12 frames in {stats.seconds:.1f} s, {stats.fps:.1f} frames/s'
      in err
  )
  assert '(source 24.0 FPS; ' in err


def test_a_run_slower_than_its_source_says_by_how_much():
  slow = video_pipeline.VideoStats('a.mp4', frames=120, seconds=10.0, source_fps=24.0)
  fast = video_pipeline.VideoStats('b.mp4', frames=300, seconds=10.0, source_fps=24.0)
  live = video_pipeline.VideoStats('rtsp://cam/x', 50, 10.0, 25.0, live=True, dropped=200)
  assert (
      slow.line() == 'a.mp4: 120 frames in 10.0 s, 12.0 frames/s (source 24.0 FPS; 0.50x real time)'
  )
  assert fast.line().endswith('30.0 frames/s (source 24.0 FPS; real time)')
  assert live.real_time and live.line().endswith(
      '(source 25.0 FPS; 200 frame(s) dropped to keep up)'
  )


def test_max_frames_and_duration_end_a_video_early(tmp_path):
  clip = _clip(tmp_path / 'clip.mp4', 20, 10)
  common = dict(colours=COLOURS, alpha=0.5, batch_size=4)
  out = tmp_path / 'out.mp4'
  assert predict.predict_video(FakeSegmenter(), clip, out, max_frames=7, **common).frames == 7
  assert predict.predict_video(FakeSegmenter(), clip, out, duration=1.25, **common).frames == 13
  assert len(_decode(out)[1]) == 13


class PacedReader(video.VideoReader):
  """A local file read as if it were a camera: each frame comes when its time is due."""

  def __init__(self, source):
    super().__init__(source)
    self.live, self.source = True, 'rtsp://camera.local/front'

  def timed_frames(self):
    start = time.perf_counter()
    for t, frame in super().timed_frames():
      time.sleep(max(0.0, start + t - time.perf_counter()))
      yield t, frame


def test_a_live_source_keeps_up_by_dropping_frames(tmp_path, monkeypatch):
  """A 2 s, 15 FPS source and a network that needs 0.15 s a frame: the run takes the
  source's time, not the 4.5 s all 30 frames would; the frames it writes are in order, at
  their source times."""
  clip = _clip(tmp_path / 'clip.mp4', 30, 15)
  monkeypatch.setattr(video, 'VideoReader', lambda source: PacedReader(clip))
  segmenter = FakeSegmenter(delay=0.15)
  start = time.perf_counter()
  report = predict.run(
      segmenter,
      [video.LiveSource('rtsp://camera.local/front')],
      tmp_path / 'out',
      colours=COLOURS,
      alpha=0.0,  # The overlay is the frame itself, so written frames can be told apart.
  )
  took = time.perf_counter() - start
  assert not report.failed and report.done == ['rtsp://camera.local/front']
  (stats,) = report.videos
  assert stats.live and stats.dropped > 0 and stats.frames + stats.dropped == 30
  assert 1.9 < took < 3.2 and 1.9 < stats.seconds < 3.2  # All 30 frames would take 4.5 s.
  assert set(segmenter.batches) == {1}
  times, frames = _decode(tmp_path / 'out' / 'front_overlay.mp4')
  assert len(frames) == stats.frames < 30
  assert times == sorted(times) and len(set(times)) == len(times) and times[-1] > 1.5
  # Each frame is the source's frame at its time (15 frames a second).
  index = [_frame_number(f) for f in frames]
  assert index == sorted(index) and index == [round(15 * t) for t in times]


def test_ctrl_c_ends_a_live_recording_and_keeps_a_playable_file(tmp_path, monkeypatch):
  clip = _clip(tmp_path / 'clip.mp4', 30, 15)
  monkeypatch.setattr(video, 'VideoReader', lambda source: PacedReader(clip))
  out = tmp_path / 'front_overlay.mp4'
  stats = predict.predict_video(
      FakeSegmenter(interrupt_at=3),
      'rtsp://camera.local/front',
      out,
      colours=COLOURS,
      alpha=0.5,
      batch_size=4,
  )
  assert stats.interrupted and stats.frames == 3 and 'stopped by Ctrl-C' in stats.line()
  assert len(_decode(out)[1]) == 3
  assert not any(t.name.startswith('video-') for t in threading.enumerate())


def test_a_failing_network_stops_every_stage_and_keeps_the_earlier_output(tmp_path):
  clip = _clip(tmp_path / 'clip.mp4', 30, 10)
  out = tmp_path / 'out.mp4'
  out.write_bytes(b'earlier result')

  class Failing(FakeSegmenter):

    def __call__(self, images):
      if len(self.batches) == 2:
        raise RuntimeError('out of cheese')
      return super().__call__(images)

  with pytest.raises(RuntimeError, match='out of cheese'):
    predict.predict_video(Failing(), clip, out, colours=COLOURS, alpha=0.5, batch_size=2)
  assert out.read_bytes() == b'earlier result' and sorted(tmp_path.iterdir()) == [clip, out]
  assert not any(t.name.startswith('video-') for t in threading.enumerate())


@pytest.mark.parametrize(
    'spec, live, name',
    [
        ('/dev/video0', True, 'video0'),
        ('rtsp://192.168.1.5:554/live/front.sdp', True, 'front'),
        ('http://cam.local:8080/', True, 'cam.local'),
        ('udp://@:1234', True, 'stream'),
        ('HTTPS://example.com/a b.m3u8?token=1', True, 'a_b'),
        ('clip.mp4', False, None),
        ('/dev/sda', False, None),
        ('file:///tmp/clip.mp4', False, None),
        ('rtsp:clip.mp4', False, None),
    ],
)
def test_live_sources_are_devices_and_stream_urls_named_after_them(spec, live, name):
  assert video.is_live(spec) == live
  if live:
    assert video.LiveSource(spec).name == name


@pytest.fixture(scope='module')
def checkpoint4(tmp_path_factory) -> Path:
  path = tmp_path_factory.mktemp('ckpt4')
  checkpoints.save_variables(path, random_variables(4), num_classes=4)
  return path


def test_a_live_source_that_cannot_be_opened_is_one_line_naming_it(tmp_path, checkpoint4, capsys):
  url, device = 'rtsp://127.0.0.1:9/front', '/dev/video99'
  rc = predict_command.main(
      ['--checkpoint', str(checkpoint4), '--input', url, device, '--output', str(tmp_path)]
  )
  err = capsys.readouterr().err
  assert rc == 1 and '0 input(s) done, 2 failed' in err
  lines = [line for line in err.splitlines() if line.startswith('error: ')]
  assert len(lines) == 2
  assert lines[0].startswith(f'error: Cannot read live source {url}: ')
  assert lines[1].startswith(f'error: Cannot read live source {device}: ')
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    'flag, value, message',
    [
        ('--max-frames', '0', '--max-frames=0: expected a positive integer.'),
        ('--duration', '-1', '--duration=-1.0: expected a positive number of seconds.'),
        ('--duration', 'inf', '--duration=inf: expected a positive number of seconds.'),
    ],
)
def test_bad_stopping_options_are_refused(tmp_path, capsys, flag, value, message):
  argv = ['--checkpoint', 'x', '--input', 'rtsp://h/x', '--output', str(tmp_path), flag, value]
  assert predict_command.main(argv) == 2
  assert f'error: {message}' in capsys.readouterr().err


def test_a_segmenter_compiles_for_the_frame_size_before_the_clock_starts(tmp_path):
  """The frame rate a video reports is the pipeline's; the compile for the frame size comes
  first, timed and stated apart (`Segmenter.warm_up`)."""
  from esnet_jax.inference.segmenter import Segmenter

  segmenter = Segmenter(random_variables(4), engine='jax')
  clip = _clip(tmp_path / 'clip.mp4', 6, 12)
  stats = predict.predict_video(
      segmenter, clip, tmp_path / 'out.mp4', colours=COLOURS, alpha=0.5, batch_size=2
  )
  assert stats.frames == 6 and stats.warmup_seconds > 0
  assert f'after {stats.warmup_seconds:.1f} s compiling' in stats.line()
  assert len(segmenter.compiled_shapes) == 1  # The warm-up's shape is the frames'.
