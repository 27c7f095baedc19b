"""Segment image and video files with a trained ESNet and write the results.

  python -m esnet_jax.predict --checkpoint PATH --input PATH_OR_GLOB [...] --output DIR \
      [--alpha 0.5] [--batch-size N] [--flip] [--scales 0.75,1.0,1.25] \
      [--dtype float32|bfloat16] [--palette checkpoint|synthetic|camvid|cityscapes] \
      [--which latest|best] [--cityscapes-submission] [--max-frames N] [--duration S]
  python -m esnet_jax.predict --demo-image scene.png [--demo-size H W] [--demo-seed N]

or, with a config, `python -m esnet_jax.main --config C --workdir W --config.mode=predict`
(keys `config.predict.*`; TTA from `config.eval.flip`/`scales`, batch from
`config.eval_batch_size`, compute dtype from `config.model.dtype`).

Inputs are image files, folders (searched recursively; their sub-folders are
mirrored in the output), globs, video files, and live sources: a camera device
(`/dev/video0`) or a stream URL PyAV opens (rtsp://, rtmp://, http(s)://, udp://,
tcp://). Per image `<stem>` it writes `<stem>_classes.png` (8-bit class ids),
`<stem>_colour.png` (the checkpoint's palette) and `<stem>_overlay.png` (the
palette blended over the input); per video `<stem>_overlay.mp4`, per live source
`<name>_overlay.mp4` (`video0`, or the URL's last path part: rtsp://cam/live/front.sdp
gives `front_overlay.mp4`). Outputs keep the input's size: the network runs on the
image padded to a multiple of 8 (and resized for each TTA scale), its softmax
probabilities are resized bilinearly back and averaged, and only then is the
argmax taken, so class ids are never interpolated.

Videos run as a pipeline (`esnet_jax.inference.video_pipeline`): one thread decodes, the main
thread runs the network, another blends the overlay and encodes (H.264, x264 preset
superfast), so a video goes at the pace of its slowest stage, the network, rather than
of all of them in turn. On a CPU the network gets one frame per call: batches of 2 or 4
measured no faster for any engine (JAX on an accelerator gets `--batch-size`). At the
end one line per video gives the frame rate achieved beside the source's, e.g.
`predict: clip.mp4: 240 frames in 11.3 s, 21.2 frames/s (source 24.0 FPS; 0.88x real
time)`, also in `Report.videos`.

A live source cannot wait for the network: it is segmented one frame at a time, always
the newest; frames that arrived meanwhile are dropped (the line says how many) and the
frames kept are written at their source times, so the file plays at the source's pace.
It runs until `--max-frames N` frames are written, `--duration S` seconds of the source
(by its timestamps) have passed, the stream ends, or Ctrl-C, which ends the recording
and keeps a playable file. Both options also cut a video file short.

With `--cityscapes-submission` it writes only what the Cityscapes benchmark
server takes: `<city>_<seq>_<frame>_labelIds.png` with official label ids, for
inputs named `<city>_<seq>_<frame>_leftImg8bit.png`. cityscapesScripts'
`evalPixelLevelSemanticLabeling` finds the prediction for a ground truth file by
the pattern `<city>_<seq>_<frame>*.png` anywhere under its results folder, which
must therefore hold one file per frame: point `CITYSCAPES_RESULTS` at `--output`.

A file that cannot be read or written is reported with its name and the rest
are still processed; the summary lists every failure and the exit status is 1
if there was any. So is an image the network would need more memory for than the
machine has free (`--scales 25` meant as 0.25); a batch of images that would not fit
together is segmented a few at a time instead.

What a user already has is never lost: a run whose results would replace one of its
inputs (`--input photos/*.png --output photos` after an earlier run there) is refused
before anything is written, and each file is written under a temporary name and
renamed in place when complete (`esnet_jax.system.output_files`), so a failure leaves an
earlier result as it was. Earlier results of predict itself in `--output` are replaced.
"""

from __future__ import annotations

import dataclasses
import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence, TextIO

import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from esnet_jax.system import memory_budget, output_files
from esnet_jax.data import datasets
from esnet_jax.deploy import engines
from esnet_jax.data import image_files, video
from esnet_jax.inference import video_pipeline, visualize
from esnet_jax.config.validation import ConfigError
from esnet_jax.data.datasets import cityscapes
from esnet_jax.data.datasets import synthetic
from esnet_jax.errors import InputError, OptionError, OutputError
from esnet_jax.inference.segmenter import Segmenter
from esnet_jax.data.image_files import IMAGE_SUFFIXES, InputFile, find_inputs, load_image
from esnet_jax.config.options import PredictOptions

_CITYSCAPES_FRAME = re.compile(
    r'^(?P<frame>[^_]+_\d+_\d+)' + re.escape(cityscapes.IMAGE_SUFFIX) + '$'
)
# The files per image: `<stem>_<kind>.png`.
IMAGE_RESULTS = ('classes', 'colour', 'overlay')
# How messages name the settings: the command line's flags, or `--config.mode=predict`'s keys.
FLAGS = {
    'input': '--input',
    'output': '--output',
    'scales': '--scales',
    'batch_size': '--batch-size',
    'engine': '--engine',
    'precision': '--precision',
    'calibration': '--calibration',
}
CONFIG_KEYS = {
    'input': 'config.predict.input',
    'output': 'config.predict.output',
    'scales': 'config.eval.scales',
    'batch_size': 'config.eval_batch_size',
    'engine': 'config.predict.engine',
    'precision': 'config.predict.precision',
    'calibration': 'config.predict.calibration',
}


# An input of `run`: a file (image or video) or a live source (camera device, stream URL).
Input = InputFile | video.LiveSource


@dataclasses.dataclass
class Report:
  """What a run did: inputs done (paths; a live source's URL), files written, inputs that
  failed (with why), inputs skipped, and per video its frame rate beside its source's."""

  done: list[Path | str] = dataclasses.field(default_factory=list)
  written: list[Path] = dataclasses.field(default_factory=list)
  failed: list[tuple[Path | str, str]] = dataclasses.field(default_factory=list)
  skipped: list[Path] = dataclasses.field(default_factory=list)
  videos: list[video_pipeline.VideoStats] = dataclasses.field(default_factory=list)


def _label(item: Input) -> Path | str:
  """How messages and the report name an input: its path, or a live source's URL."""
  return item.url if isinstance(item, video.LiveSource) else item.path


def submission_name(path: Path) -> str:
  """`<city>_<seq>_<frame>_labelIds.png` for a `<city>_<seq>_<frame>_leftImg8bit.png` input."""
  match = _CITYSCAPES_FRAME.match(path.name)
  if not match:
    raise InputError(
        f'{path}: a Cityscapes submission needs inputs named '
        f'<city>_<seq>_<frame>{cityscapes.IMAGE_SUFFIX}.'
    )
  return f'{match["frame"]}_labelIds.png'


def result_paths(item: Input, output: Path, submission: bool = False) -> list[Path]:
  """The files `run` writes for ITEM under OUTPUT; none for an input it will refuse."""
  if isinstance(item, video.LiveSource):
    return [] if submission else [output / f'{item.name}_overlay.mp4']
  out_dir = output / item.subdir
  if item.is_video:
    return [] if submission else [out_dir / f'{item.path.stem}_overlay.mp4']
  if item.path.suffix.lower() not in IMAGE_SUFFIXES:
    return []
  if submission:
    named = _CITYSCAPES_FRAME.match(item.path.name)
    return [out_dir / submission_name(item.path)] if named else []
  return [out_dir / f'{item.path.stem}_{kind}.png' for kind in IMAGE_RESULTS]


def check_results_spare_inputs(
    inputs: Sequence[Input],
    output: Path,
    *,
    submission: bool = False,
    names: Mapping[str, str] = FLAGS,
) -> None:
  """Refuses a run one of whose results would replace one of its inputs.

  A shell glob passes earlier results back in (`--input photos/*.png --output photos`
  after a first run: `photos/a_overlay.png` is both an input and `photos/a.png`'s
  overlay); segmenting would overwrite the user's file with another image's result.

  Raises:
    OutputError: naming the result, the input it would replace and the input it is of.
  """
  sources = {
      output_files.resolved(item.path): item.path
      for item in inputs
      if not isinstance(item, video.LiveSource)
  }
  for item in inputs:
    for path in result_paths(item, output, submission):
      replaced = sources.get(output_files.resolved(path))
      if replaced is not None:
        raise OutputError(
            f'{names["output"]} {output}: the result {path} of {_label(item)} would replace '
            f'{replaced}, which is one of the inputs; refusing to run (leave earlier results '
            f'out of {names["input"]}, or choose another {names["output"]}).'
        )


def check_output_spares_input_folders(
    specs: Sequence[str | os.PathLike[str]], output: Path, names: Mapping[str, str] = FLAGS
) -> None:
  """Refuses an output folder that is, or holds, a folder (or a glob's folder) to segment.

  `find_inputs` leaves out everything under the output folder as earlier results, so
  such an input would silently lose its files.

  Raises:
    OutputError: naming the output and the input.
  """
  target = output_files.resolved(output)
  for spec in map(str, specs):
    if Path(spec).is_dir():
      folder = Path(spec)
    elif glob.has_magic(spec) and not Path(spec).is_file():
      folder = Path(*image_files.leading_plain_parts(spec))
    else:
      continue
    if output_files.resolved(folder).is_relative_to(target):
      raise OutputError(
          f'{names["output"]} {output}: is or holds {names["input"]} {spec}, whose files would '
          f'all be left out as earlier results; choose an output folder outside it (e.g. '
          f'{Path(folder, "predictions")}).'
      )


def colours_for(
    num_classes: int, meta: dict[str, Any], class_table: datasets.ClassTable | None = None
) -> np.ndarray:
  """Colours of a checkpoint's classes: its own (see `visualize.class_colours`), or a
  requested dataset's, which must have as many classes.

  Raises:
    InputError: If the requested dataset has a different number of classes.
  """
  if class_table is None:
    return visualize.class_colours(num_classes, meta)
  if class_table.num_classes != num_classes:
    raise InputError(
        f'The checkpoint is for {num_classes} classes, but the requested '
        f'dataset/palette has {class_table.num_classes} '
        f'({", ".join(class_table.names[:4])}, ...).'
    )
  return np.asarray(class_table.colours, np.uint8)


class _Progress:
  """One updating line on a terminal; elsewhere (logs, CI) a line every 10 s and at the end."""

  def __init__(self, total: int, stream: TextIO):
    self.total, self.stream = total, stream
    self.tty = stream.isatty()
    self.start = self.last = time.time()
    self.frames = 0

  def update(self, files_done: int, frames: int, name: str, final: bool = False) -> None:
    self.frames += frames
    now = time.time()
    if not (self.tty or final or now - self.last >= 10):
      return
    self.last = now
    rate = self.frames / max(now - self.start, 1e-9)
    line = f'predict: {files_done}/{self.total} files | {rate:.1f} img/s | {name}'
    self.stream.write(('\r' + line[:100].ljust(100)) if self.tty and not final else line + '\n')
    if self.tty and final:
      self.stream.write('\n')
    self.stream.flush()


def _save_png(array: np.ndarray, path: Path) -> Path:
  """Writes ARRAY to PATH whole: an earlier PATH stays as it was if saving fails."""
  with output_files.replacing(path) as tmp:
    Image.fromarray(array).save(tmp)
  return path


def write_image_results(
    out_dir: Path,
    stem: str,
    image: np.ndarray,
    class_map: np.ndarray,
    colours: np.ndarray,
    alpha: float,
) -> list[Path]:
  """`<stem>_classes.png`, `<stem>_colour.png` and `<stem>_overlay.png` in `out_dir`."""
  arrays = (
      class_map.astype(np.uint8),
      visualize.colourise(class_map, colours),
      visualize.overlay(image, class_map, colours, alpha),
  )
  return [_save_png(a, out_dir / f'{stem}_{kind}.png') for kind, a in zip(IMAGE_RESULTS, arrays)]


def images_per_batch(
    segmenter: Segmenter,
    path: Path | str,
    size: tuple[int, int],
    batch_size: int,
    names: Mapping[str, str] = FLAGS,
) -> int:
  """How many images of SIZE (at most BATCH_SIZE) to segment together in the free memory.

  Raises:
    MemoryBudgetError: not even one fits; the message names the scales option, PATH and
      its size.
  """
  available = memory_budget.available_bytes()
  views = ','.join(f'{s:g}' for s in segmenter.scales) + (' with --flip' if segmenter.flip else '')
  what = f'{names["scales"]} {views} on {path} ({size[0]}x{size[1]})'
  for n in range(batch_size, 1, -1):
    if segmenter.memory_needed(*size, batch=n) <= memory_budget.USABLE_FRACTION * available:
      return n
  memory_budget.check(segmenter.memory_needed(*size), what, available=available)
  return 1


def predict_video(
    segmenter: Segmenter,
    source: Path | str,
    out_path: Path,
    *,
    colours: np.ndarray,
    alpha: float,
    batch_size: int,
    max_frames: int | None = None,
    duration: float | None = None,
    on_batch: Callable[[int], None] = lambda n: None,
    names: Mapping[str, str] = FLAGS,
) -> video_pipeline.VideoStats:
  """Writes the overlay video of SOURCE (a file, camera device or stream URL) to OUT_PATH.

  The file is written whole: a failure leaves an earlier OUT_PATH as it was; a live
  source's recording stopped by Ctrl-C is kept. Decoding, the network and encoding
  overlap (`video_pipeline`); the network gets the engine's best batch
  (`video_pipeline.video_batch`, at most BATCH_SIZE), fewer frames if that many would
  not fit in memory (`images_per_batch`). MAX_FRAMES and DURATION (seconds) end it early.

  Returns:
    The frames written, the time taken and the source's frame rate (and a live
    source's dropped frames).

  Raises:
    VideoError: naming SOURCE, if it cannot be opened or decoded, or has no frames.
  """
  with video.VideoReader(source) as reader:
    batch = 1 if reader.live else video_pipeline.video_batch(segmenter.engine_name, batch_size)
    per_batch = images_per_batch(segmenter, source, reader.size, batch, names)
    # Compile for the frame size first, so the reported rate is the pipeline's steady one;
    # the line says how long this took.
    warmup = segmenter.warm_up(per_batch, *reader.size) if hasattr(segmenter, 'warm_up') else 0.0
    with output_files.replacing(out_path) as tmp:
      with video.VideoWriter(tmp, reader.fps, reader.size) as writer:
        stats = video_pipeline.segment_video(
            segmenter,
            reader,
            writer,
            colours=colours,
            alpha=alpha,
            batch=per_batch,
            max_frames=max_frames,
            duration=duration,
            on_frames=on_batch,
        )
      if not stats.frames:
        raise video.VideoError(f'{source} has no frames.')
  return dataclasses.replace(stats, warmup_seconds=warmup)


def _check_run_settings(segmenter: Segmenter, batch_size: int, submission: bool) -> None:
  """Refuses settings no input could be segmented with, before anything is checked or written."""
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  if submission and segmenter.num_classes != visualize.CITYSCAPES_NUM_CLASSES:
    raise InputError(
        f'A Cityscapes submission needs a 19-class checkpoint; this one is '
        f'for {segmenter.num_classes} classes.'
    )


@dataclasses.dataclass
class _Run:
  """One `run`'s settings and state, so its steps share the report, progress and pending images."""

  segmenter: Segmenter
  output: Path
  colours: np.ndarray
  alpha: float
  batch_size: int
  submission: bool
  max_frames: int | None
  duration: float | None
  stream: TextIO
  names: Mapping[str, str]
  progress: _Progress
  report: Report = dataclasses.field(default_factory=Report)
  # Images waiting for a batch of their size.
  pending: dict[tuple[int, int], list[tuple[InputFile, np.ndarray]]] = dataclasses.field(
      default_factory=dict
  )
  # How many images of a size fit in memory at once.
  per_batch: dict[tuple[int, int], int] = dataclasses.field(default_factory=dict)
  # Output names already taken.
  claimed: dict[tuple[Path, str, bool], Path | str] = dataclasses.field(default_factory=dict)

  def _say(self, text: str) -> None:
    """Writes TEXT to the stream on a line of its own, after a terminal's progress line."""
    self.stream.write(('\n' if self.progress.tty else '') + text)

  def _fail(self, path: Path | str, error: Exception) -> None:
    """Records and prints an input's failure, naming the input once, so the run goes on."""
    message = str(error) if str(path) in str(error) else f'{path}: {error}'
    self.report.failed.append((path, message))
    self._say(f'error: {message}\n')

  def add(self, item: Input) -> None:
    """Segments a video or live source now; queues an image, segmenting its batch once full."""
    label = _label(item)
    try:
      self._claim(item, label)
      if isinstance(item, video.LiveSource) or item.is_video:
        self._segment_video(item, label)
        return
      size, image = self._load_image(item)
    except Exception as e:  # pylint: disable=broad-except
      self._fail(label, e)  # Whatever went wrong with one input, the others are still done.
      return
    self.pending.setdefault(size, []).append((item, image))
    if len(self.pending[size]) == self.per_batch[size]:
      self._flush(size)

  def _claim(self, item: Input, label: Path | str) -> None:
    """Takes ITEM's output names, refusing an input whose results would overwrite another's."""
    if isinstance(item, video.LiveSource):
      name = (Path(), item.name, True)
    else:
      name = (item.subdir, item.path.stem, item.is_video)
    if name in self.claimed:
      raise InputError(
          f'{label}: its results would overwrite those of '
          f'{self.claimed[name]}, which has the same name; segment it separately.'
      )
    self.claimed[name] = label

  def _segment_video(self, item: Input, label: Path | str) -> None:
    """Writes the overlay video of a video file or live source and records it in the report."""
    if self.submission:
      raise InputError(f'{label}: a video cannot be part of a Cityscapes submission.')
    out_path = result_paths(item, self.output)[0]
    shown = item.name if isinstance(item, video.LiveSource) else item.path.name
    self.report.videos.append(
        predict_video(
            self.segmenter,
            label,
            out_path,
            colours=self.colours,
            alpha=self.alpha,
            batch_size=self.batch_size,
            max_frames=self.max_frames,
            duration=self.duration,
            on_batch=lambda n: self.progress.update(len(self.report.done), n, shown),
            names=self.names,
        )
    )
    self.report.written.append(out_path)
    self.report.done.append(label)

  def _load_image(self, item: InputFile) -> tuple[tuple[int, int], np.ndarray]:
    """Reads an image input, after rejecting a bad submission name before the network runs."""
    if self.submission:
      submission_name(item.path)  # Reject a badly named input before running the network.
    image = load_image(item.path)
    size = image.shape[:2]
    if size not in self.per_batch:
      self._fit_batch(item.path, size)
    return size, image

  def _fit_batch(self, path: Path, size: tuple[int, int]) -> None:
    """Finds how many images of SIZE fit in memory at once, saying so if fewer than asked."""
    self.per_batch[size] = images_per_batch(self.segmenter, path, size, self.batch_size, self.names)
    if self.per_batch[size] < self.batch_size:
      self._say(
          f'predict: {self.names["batch_size"]} {self.batch_size} would not fit in memory for '
          f'{size[0]}x{size[1]} images; segmenting {self.per_batch[size]} at a time.\n'
      )

  def _flush(self, size: tuple[int, int]) -> None:
    """Segments the pending images of SIZE together; a batch that cannot run fails its inputs."""
    group = self.pending.pop(size)
    try:
      class_maps = self.segmenter(np.stack([image for _, image in group]))
    except Exception as e:  # pylint: disable=broad-except
      for item, _ in group:  # A batch that cannot run fails its inputs, not the run.
        self._fail(item.path, e)
      return
    for (item, image), class_map in zip(group, class_maps):
      self._save_image_results(item, image, class_map)
    self.progress.update(len(self.report.done), len(group), group[-1][0].path.name)

  def _save_image_results(self, item: InputFile, image: np.ndarray, class_map: np.ndarray) -> None:
    """Writes one image's results (or its submission file); a failure fails only that input."""
    out_dir = self.output / item.subdir
    try:
      if self.submission:
        label_ids = cityscapes.train_ids_to_label_ids(class_map)
        self.report.written.append(_save_png(label_ids, out_dir / submission_name(item.path)))
      else:
        self.report.written += write_image_results(
            out_dir, item.path.stem, image, class_map, self.colours, self.alpha
        )
      self.report.done.append(item.path)
    except Exception as e:  # pylint: disable=broad-except
      self._fail(item.path, e)

  def finish(self) -> Report:
    """Segments the images still waiting for a full batch and ends the progress line."""
    for size in list(self.pending):
      self._flush(size)
    self.progress.update(len(self.report.done), 0, 'done', final=True)
    return self.report


def run(
    segmenter: Segmenter,
    inputs: Sequence[Input],
    output: str | os.PathLike[str],
    *,
    colours: np.ndarray,
    alpha: float = 0.5,
    batch_size: int = 4,
    submission: bool = False,
    max_frames: int | None = None,
    duration: float | None = None,
    stream: TextIO | None = None,
    names: Mapping[str, str] = FLAGS,
) -> Report:
  """Segment `inputs` into `output`, batching images of the same size; never stops on a bad file.

  Returns the report of the run; failures are in `report.failed`, with the file
  named in each message, and each video's frame rate in `report.videos`. MAX_FRAMES
  and DURATION end each video early (`predict_video`). `names` says how messages
  name the settings.

  Raises:
    OutputError: before anything is written, if a result would replace an input
      (`check_results_spare_inputs`).
  """
  _check_run_settings(segmenter, batch_size, submission)
  stream = stream or sys.stderr
  output = Path(output)
  check_results_spare_inputs(inputs, output, submission=submission, names=names)
  state = _Run(
      segmenter,
      output,
      colours=colours,
      alpha=alpha,
      batch_size=batch_size,
      submission=submission,
      max_frames=max_frames,
      duration=duration,
      stream=stream,
      names=names,
      progress=_Progress(len(inputs), stream),
  )
  for item in inputs:
    state.add(item)
  return state.finish()


def print_summary(report: Report, output: Path, stream: TextIO | None = None) -> None:
  """Each video's frame rate beside its source's, files done and written, skipped files,
  and every failure with its reason."""
  stream = stream or sys.stderr
  for stats in report.videos:
    stream.write(f'predict: {stats.line()}\n')
  stream.write(
      f'predict: {len(report.done)} input(s) done, {len(report.failed)} failed; '
      f'{len(report.written)} file(s) written to {output}\n'
  )
  if report.skipped:
    stream.write(
        f'  skipped {len(report.skipped)} file(s) that are not images or videos, '
        f'e.g. {report.skipped[0]}\n'
    )
  for _, message in report.failed:
    stream.write(f'  FAILED {message}\n')
  stream.flush()


def write_demo_image(
    path: str | os.PathLike[str], size: tuple[int, int] = (256, 512), seed: int = 0
) -> Path:
  """Render one generated street scene (`datasets.synthetic.render_scene`) to a PNG."""
  image, _ = synthetic.render_scene(np.random.default_rng(seed), size)
  return _save_png(image, Path(path))


def run_options(options: PredictOptions, names: Mapping[str, str] = FLAGS) -> Report:
  """Segment `options.inputs` into `options.output`, print the summary, return the report.

  An output folder that cannot be one, or would hide inputs, is refused before the
  checkpoint is read (OutputError); `names` says how messages name the settings.
  """
  output_files.check_output_folder(options.output, names['output'])
  files = [spec for spec in options.inputs if not video.is_live(spec)]
  check_output_spares_input_folders(files, Path(options.output), names)
  try:
    segmenter = Segmenter.from_checkpoint(
        options.checkpoint,
        options.which,
        dtype=jnp.dtype(options.dtype),
        kernels=options.kernels,
        engine=options.engine,
        precision=options.effective_precision,
        threads=options.threads,
        calibration=options.calibration,
        scales=options.scales,
        flip=options.flip,
    )
  except OptionError as e:  # The engine's own checks, in this command's names.
    raise OptionError(names.get(e.field, e.field), e.value, e.expected) from None
  print(f'predict: {segmenter.engine_name} {segmenter.precision}', file=sys.stderr)
  if hint := engines.faster_choice(segmenter.engine_name, segmenter.precision, names):
    print(f'predict: {hint}', file=sys.stderr)
  colours = colours_for(segmenter.num_classes, segmenter.meta, options.class_table)
  inputs, skipped = find_inputs(files, exclude=options.output) if files else ([], [])
  live = [video.LiveSource(spec) for spec in options.inputs if video.is_live(spec)]
  report = run(
      segmenter,
      [*inputs, *live],
      options.output,
      colours=colours,
      alpha=options.alpha,
      batch_size=options.batch_size,
      submission=options.submission,
      max_frames=options.max_frames,
      duration=options.duration,
      names=names,
  )
  report.skipped = skipped
  print_summary(report, Path(options.output))
  return report


def predict_from_config(config: ml_collections.ConfigDict, workdir: str | Path) -> Report:
  """`main.py --config.mode=predict`: segment `config.predict.input` into `config.predict.output`.

  The checkpoint is `config.predict.checkpoint` ('' = the workdir's latest); the
  output defaults to `workdir/predictions` (`options.PredictOptions.from_config`).
  Exits with status 1 after the summary if any input failed.
  """
  try:
    report = run_options(PredictOptions.from_config(config, workdir), CONFIG_KEYS)
  except (InputError, visualize.PaletteError) as e:
    raise ConfigError(f'config.predict: {e}') from e
  if report.failed:
    total = len(report.done) + len(report.failed)
    sys.exit(f'error: {len(report.failed)} of {total} input(s) failed (listed above).')
  return report
