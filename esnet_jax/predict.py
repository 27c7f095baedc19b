"""Segment image and video files with a trained ESNet and write the results.

  python -m esnet_jax.predict --checkpoint PATH --input PATH_OR_GLOB [...] --output DIR \
      [--alpha 0.5] [--batch-size N] [--flip] [--scales 0.75,1.0,1.25] \
      [--dtype float32|bfloat16] [--palette checkpoint|synthetic|camvid|cityscapes] \
      [--which latest|best] [--cityscapes-submission]
  python -m esnet_jax.predict --demo-image scene.png [--demo-size H W] [--demo-seed N]

or, with a config, `python -m esnet_jax.main --config C --workdir W --config.mode=predict`
(keys `config.predict.*`; TTA from `config.eval.flip`/`scales`, batch from
`config.eval_batch_size`, compute dtype from `config.model.dtype`).

Inputs are image files, folders (searched recursively; their sub-folders are
mirrored in the output), globs, and video files. Per image `<stem>` it writes
`<stem>_classes.png` (8-bit class ids), `<stem>_colour.png` (the checkpoint's
palette) and `<stem>_overlay.png` (the palette blended over the input); per video
`<stem>_overlay.mp4`. Outputs keep the input's size: the network runs on the
image padded to a multiple of 8 (and resized for each TTA scale), its softmax
probabilities are resized bilinearly back and averaged, and only then is the
argmax taken, so class ids are never interpolated.

With `--cityscapes-submission` it writes only what the Cityscapes benchmark
server takes: `<city>_<seq>_<frame>_labelIds.png` with official label ids, for
inputs named `<city>_<seq>_<frame>_leftImg8bit.png`. cityscapesScripts'
`evalPixelLevelSemanticLabeling` finds the prediction for a ground truth file by
the pattern `<city>_<seq>_<frame>*.png` anywhere under its results folder, which
must therefore hold one file per frame: point `CITYSCAPES_RESULTS` at `--output`.

A file that cannot be read or written is reported with its name and the rest
are still processed; the summary lists every failure and the exit status is 1
if there was any.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, TextIO

import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image

from esnet_jax import cli, datasets, implementations, options, video, visualize
from esnet_jax.config_validation import ConfigError
from esnet_jax.datasets import cityscapes
from esnet_jax.datasets import synthetic
from esnet_jax.errors import EsnetError, InputError
from esnet_jax.inference import Segmenter
from esnet_jax.options import PALETTES, PredictOptions

IMAGE_SUFFIXES = ('.png', '.jpg', '.jpeg', '.bmp', '.tif', '.tiff', '.webp', '.ppm')
_CITYSCAPES_FRAME = re.compile(
    r'^(?P<frame>[^_]+_\d+_\d+)' + re.escape(cityscapes.IMAGE_SUFFIX) + '$'
)


@dataclasses.dataclass(frozen=True)
class InputFile:
  """One file to segment and the sub-folder of the output its results go to."""

  path: Path
  subdir: Path = Path()

  @property
  def is_video(self) -> bool:
    return self.path.suffix.lower() in video.VIDEO_SUFFIXES


@dataclasses.dataclass
class Report:
  """What a run did: files written, inputs that failed (with why), inputs skipped."""

  done: list[Path] = dataclasses.field(default_factory=list)
  written: list[Path] = dataclasses.field(default_factory=list)
  failed: list[tuple[Path, str]] = dataclasses.field(default_factory=list)
  skipped: list[Path] = dataclasses.field(default_factory=list)


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
      base = Path(*_leading_plain_parts(spec))
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


def _leading_plain_parts(pattern: str) -> list[str]:
  """The folders of a glob before its first wildcard: where relative output paths start."""
  plain = []
  for part in Path(pattern).parts[:-1]:
    if glob.has_magic(part):
      break
    plain.append(part)
  return plain


def load_image(path: Path) -> np.ndarray:
  """uint8 RGB [H, W, 3] of an image file (grey, palette and RGBA converted)."""
  if path.suffix.lower() not in IMAGE_SUFFIXES:
    raise InputError(
        f'{path}: unsupported file type {path.suffix or "(none)"!r}; '
        f'expected an image ({" ".join(IMAGE_SUFFIXES)}) or a video '
        f'({" ".join(video.VIDEO_SUFFIXES)}).'
    )
  try:
    with Image.open(path) as image:
      return np.asarray(image.convert('RGB'), np.uint8)
  except (OSError, SyntaxError, ValueError) as e:
    raise InputError(f'Cannot read image {path}: {e}') from e


def submission_name(path: Path) -> str:
  """`<city>_<seq>_<frame>_labelIds.png` for a `<city>_<seq>_<frame>_leftImg8bit.png` input."""
  match = _CITYSCAPES_FRAME.match(path.name)
  if not match:
    raise InputError(
        f'{path}: a Cityscapes submission needs inputs named '
        f'<city>_<seq>_<frame>{cityscapes.IMAGE_SUFFIX}.'
    )
  return f'{match["frame"]}_labelIds.png'


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
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(path)
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
  return [
      _save_png(class_map.astype(np.uint8), out_dir / f'{stem}_classes.png'),
      _save_png(visualize.colourise(class_map, colours), out_dir / f'{stem}_colour.png'),
      _save_png(
          visualize.overlay(image, class_map, colours, alpha), out_dir / f'{stem}_overlay.png'
      ),
  ]


def _batches(items: Iterable[Any], size: int) -> Iterable[list[Any]]:
  batch = []
  for item in items:
    batch.append(item)
    if len(batch) == size:
      yield batch
      batch = []
  if batch:
    yield batch


def predict_video(
    segmenter: Segmenter,
    path: Path,
    out_path: Path,
    *,
    colours: np.ndarray,
    alpha: float,
    batch_size: int,
    on_batch: Callable[[int], None] = lambda n: None,
) -> Path:
  """Write the overlay video of `path` to `out_path`; removed again if anything fails."""
  out_path.parent.mkdir(parents=True, exist_ok=True)
  num_frames = 0
  try:
    with (
        video.VideoReader(path) as reader,
        video.VideoWriter(out_path, reader.fps, reader.size) as writer,
    ):
      for frames in _batches(reader, batch_size):
        for frame, class_map in zip(frames, segmenter(np.stack(frames))):
          writer.write(visualize.overlay(frame, class_map, colours, alpha))
        num_frames += len(frames)
        on_batch(len(frames))
    if not num_frames:
      raise video.VideoError(f'{path} has no frames.')
  except BaseException:
    out_path.unlink(missing_ok=True)
    raise
  return out_path


def run(
    segmenter: Segmenter,
    inputs: Sequence[InputFile],
    output: str | os.PathLike[str],
    *,
    colours: np.ndarray,
    alpha: float = 0.5,
    batch_size: int = 4,
    submission: bool = False,
    stream: TextIO | None = None,
) -> Report:
  """Segment `inputs` into `output`, batching images of the same size; never stops on a bad file.

  Returns the report of the run; failures are in `report.failed`, with the file
  named in each message.
  """
  if batch_size <= 0:
    raise ValueError(f'batch_size must be positive, got {batch_size}.')
  if submission and segmenter.num_classes != visualize.CITYSCAPES_NUM_CLASSES:
    raise InputError(
        f'A Cityscapes submission needs a 19-class checkpoint; this one is '
        f'for {segmenter.num_classes} classes.'
    )
  stream = stream or sys.stderr
  output = Path(output)
  report = Report()
  progress = _Progress(len(inputs), stream)
  pending: dict[tuple[int, int], list[tuple[InputFile, np.ndarray]]] = {}
  claimed: dict[tuple[Path, str, bool], Path] = {}  # output names already taken

  def fail(path: Path, error: Exception) -> None:
    message = str(error) if str(path) in str(error) else f'{path}: {error}'
    report.failed.append((path, message))
    stream.write(('\n' if progress.tty else '') + f'error: {message}\n')

  def flush(size: tuple[int, int]) -> None:
    group = pending.pop(size)
    try:
      class_maps = segmenter(np.stack([image for _, image in group]))
    except Exception as e:  # pylint: disable=broad-except
      for item, _ in group:  # A batch that cannot run fails its inputs, not the run.
        fail(item.path, e)
      return
    for (item, image), class_map in zip(group, class_maps):
      out_dir = output / item.subdir
      try:
        if submission:
          label_ids = cityscapes.train_ids_to_label_ids(class_map)
          report.written.append(_save_png(label_ids, out_dir / submission_name(item.path)))
        else:
          report.written += write_image_results(
              out_dir, item.path.stem, image, class_map, colours, alpha
          )
        report.done.append(item.path)
      except Exception as e:  # pylint: disable=broad-except
        fail(item.path, e)
    progress.update(len(report.done), len(group), group[-1][0].path.name)

  for item in inputs:
    try:
      name = (item.subdir, item.path.stem, item.is_video)
      if name in claimed:
        raise InputError(
            f'{item.path}: its results would overwrite those of '
            f'{claimed[name]}, which has the same name; segment it separately.'
        )
      claimed[name] = item.path
      if item.is_video:
        if submission:
          raise InputError(f'{item.path}: a video cannot be part of a Cityscapes submission.')
        out_path = output / item.subdir / f'{item.path.stem}_overlay.mp4'
        report.written.append(
            predict_video(
                segmenter,
                item.path,
                out_path,
                colours=colours,
                alpha=alpha,
                batch_size=batch_size,
                on_batch=lambda n, name=item.path.name: progress.update(len(report.done), n, name),
            )
        )
        report.done.append(item.path)
        continue
      if submission:
        submission_name(item.path)  # Reject a badly named input before running the network.
      image = load_image(item.path)
    except Exception as e:  # pylint: disable=broad-except
      fail(item.path, e)  # Whatever went wrong with one input, the others are still done.
      continue
    size = image.shape[:2]
    pending.setdefault(size, []).append((item, image))
    if len(pending[size]) == batch_size:
      flush(size)
  for size in list(pending):
    flush(size)
  progress.update(len(report.done), 0, 'done', final=True)
  return report


def print_summary(report: Report, output: Path, stream: TextIO | None = None) -> None:
  """Files done and written, skipped files, and every failure with its reason."""
  stream = stream or sys.stderr
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


def run_options(options: PredictOptions) -> Report:
  """Segment `options.inputs` into `options.output`, print the summary, return the report."""
  segmenter = Segmenter.from_checkpoint(
      options.checkpoint,
      options.which,
      dtype=jnp.dtype(options.dtype),
      kernels=options.kernels,
      scales=options.scales,
      flip=options.flip,
  )
  colours = colours_for(segmenter.num_classes, segmenter.meta, options.class_table)
  inputs, skipped = find_inputs(options.inputs, exclude=options.output)
  report = run(
      segmenter,
      inputs,
      options.output,
      colours=colours,
      alpha=options.alpha,
      batch_size=options.batch_size,
      submission=options.submission,
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
    report = run_options(PredictOptions.from_config(config, workdir))
  except (InputError, visualize.PaletteError) as e:
    raise ConfigError(f'config.predict: {e}') from e
  if report.failed:
    total = len(report.done) + len(report.failed)
    sys.exit(f'error: {len(report.failed)} of {total} input(s) failed (listed above).')
  return report


def _parse_scales(text: str) -> tuple[float, ...]:
  try:
    return tuple(float(s) for s in text.split(','))
  except ValueError:
    raise argparse.ArgumentTypeError(f'expected comma-separated numbers, got {text!r}')


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.predict',
      description='Segment images, folders, globs and videos with a trained ESNet.',
  )
  parser.add_argument(
      '--checkpoint',
      help='pretrained:camvid (shipped weights), a '
      'training workdir, orbax checkpoint, or .pth/.pt/.npz/.safetensors '
      'PyTorch weights',
  )
  parser.add_argument(
      '--which',
      default='latest',
      choices=('latest', 'best'),
      help="a workdir's latest or best checkpoint",
  )
  parser.add_argument('--input', nargs='+', help='image or video files, folders, globs')
  parser.add_argument('--output', help='output folder')
  parser.add_argument(
      '--alpha', type=float, default=0.5, help='opacity of the class colours in the overlay (0..1)'
  )
  parser.add_argument(
      '--batch-size', type=int, default=4, help='images of the same size segmented together'
  )
  parser.add_argument(
      '--flip', action='store_true', help='test-time augmentation: average with the mirrored image'
  )
  parser.add_argument(
      '--scales',
      type=_parse_scales,
      default=(1.0,),
      help='test-time augmentation: comma-separated scales, e.g. 0.75,1,1.25',
  )
  parser.add_argument('--dtype', choices=options.DTYPES, default='float32')
  parser.add_argument(
      '--kernels',
      choices=implementations.CHOICES,
      default='auto',
      help='who computes the network (esnet_jax.implementations): the '
      "compiled CPU kernels where they build ('auto'), XLA only, or the "
      "kernels or an error ('native')",
  )
  parser.add_argument(
      '--palette',
      choices=PALETTES,
      default='checkpoint',
      help="colours: the checkpoint's own, or a dataset's (class counts " 'must agree)',
  )
  parser.add_argument(
      '--cityscapes-submission',
      action='store_true',
      help='write only Cityscapes labelIds PNGs for the benchmark server',
  )
  parser.add_argument(
      '--demo-image',
      metavar='PNG',
      help='just write a generated street scene to PNG (for trying predict)',
  )
  parser.add_argument(
      '--demo-size',
      type=int,
      nargs=2,
      default=(256, 512),
      metavar=('H', 'W'),
      help='size of the --demo-image',
  )
  parser.add_argument('--demo-seed', type=int, default=0, help='scene of the --demo-image')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  parser = build_parser()
  args = parser.parse_args(argv)
  if args.demo_image:
    print(f'Wrote {write_demo_image(args.demo_image, tuple(args.demo_size), args.demo_seed)}')
    return 0
  missing = [f'--{name}' for name in ('checkpoint', 'input', 'output') if not getattr(args, name)]
  if missing:
    parser.error(f'the following arguments are required: {", ".join(missing)}')
  try:
    report = run_options(PredictOptions.from_args(args))
  except (EsnetError, ImportError) as e:  # ImportError: an optional package is missing.
    print(f'error: {e}', file=sys.stderr)
    return getattr(e, 'exit_status', 2)
  return 1 if report.failed else 0


if __name__ == '__main__':
  cli.run(main)
