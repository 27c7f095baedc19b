"""What each tool is asked to do: one frozen options object per tool, checked once.

`PredictOptions`, `BenchmarkOptions` and `EvalOptions` (and `esnet_jax.deploy.export_options.ExportOptions`) are built
either from the tool's command line (`from_args`) or from a config
(`from_config`, for `esnet_jax.main --config.mode=...`), so the two paths hold
the same settings and cannot drift apart. Every check lives in the object's
`_checks`, run when it is made: a bad value raises `OptionError`, which each
path re-raises in its own words: `--alpha=1.5: ...` on the command line (an
`OptionError`, exit status 2), `config.predict.alpha=1.5: ...` from a config (a
`ConfigError`, status 1).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path
from typing import Any

import ml_collections

from esnet_jax.config import validation
from esnet_jax.data import datasets
from esnet_jax.model import implementations
from esnet_jax.data.datasets import cityscapes
from esnet_jax.errors import ConfigError, OptionError
from esnet_jax.system.checked_options import (
    SCALES_EXPECTED,
    SIZE_EXPECTED,
    WHICH,
    Checked,
    build_checked,
    choice,
    flag_names,
    multiple_of_8,
    positive_int,
    scales_ok,
)

DTYPES = implementations.DTYPES
# Fewer timed runs give unstable tail percentiles; the benchmark warns below this.
MIN_RUNS = 50
# Untimed calls after compiling, unless --warmup (or config.benchmark.warmup) says.
DEFAULT_WARMUP = 5
PALETTES = ('checkpoint', 'synthetic', 'camvid', 'cityscapes')


# ---------------------------------------------------------------------------------------
# predict


@dataclasses.dataclass(frozen=True)
class PredictOptions(Checked):
  """`esnet_jax.inference.predict`: which weights segment which files into where, and how.

  `class_table` is the dataset whose colours the outputs use (None: the
  checkpoint's own); a Cityscapes submission always uses Cityscapes'.
  """

  checkpoint: str
  inputs: tuple[str, ...]
  output: str
  which: str = 'latest'
  alpha: float = 0.5
  batch_size: int = 4
  scales: tuple[float, ...] = (1.0,)
  flip: bool = False
  dtype: str = 'float32'
  kernels: str = 'auto'
  class_table: datasets.ClassTable | None = None
  submission: bool = False
  engine: str = 'auto'
  precision: str | None = None  # None: `dtype`'s (float32 or bfloat16).
  threads: int | None = None
  calibration: str = ''
  max_frames: int | None = None  # Videos: stop after this many frames.
  duration: float | None = None  # Videos: stop after this many seconds of each.

  @property
  def effective_precision(self) -> str:
    return self.precision or self.dtype

  def _checks(self) -> list[tuple[str, bool, str]]:
    return [
        (
            'checkpoint',
            bool(self.checkpoint),
            'a checkpoint, workdir, weights file or pretrained:NAME',
        ),
        ('inputs', bool(self.inputs), 'an image, folder, glob or video'),
        ('output', bool(self.output), 'an output folder'),
        choice('which', self.which, WHICH),
        (
            'alpha',
            isinstance(self.alpha, (int, float)) and 0 <= self.alpha <= 1,
            'a number in [0, 1]',
        ),
        ('batch_size', positive_int(self.batch_size), 'a positive integer'),
        ('scales', scales_ok(self.scales), SCALES_EXPECTED),
        choice('dtype', self.dtype, DTYPES),
        choice('kernels', self.kernels, implementations.CHOICES),
        *engine_checks(self.engine, self.precision, self.threads),
        (
            'precision',
            self.precision in (None, self.dtype) or self.dtype == 'float32',
            f'the --dtype given ({self.dtype}) or no --dtype: --precision supersedes it',
        ),
        (
            'max_frames',
            self.max_frames is None or positive_int(self.max_frames),
            'a positive integer',
        ),
        (
            'duration',
            self.duration is None
            or (
                isinstance(self.duration, (int, float))
                and math.isfinite(self.duration)
                and self.duration > 0
            ),
            'a positive number of seconds',
        ),
    ]

  @classmethod
  def from_args(cls, args: argparse.Namespace) -> PredictOptions:
    """From `python -m esnet_jax.predict`'s parsed flags; a bad value is an `OptionError` naming its flag."""
    palette = 'cityscapes' if args.cityscapes_submission else args.palette
    fields = dict(
        checkpoint=args.checkpoint or '',
        inputs=tuple(args.input or ()),
        output=args.output or '',
        which=args.which,
        alpha=args.alpha,
        batch_size=args.batch_size,
        scales=tuple(args.scales),
        flip=args.flip,
        dtype=args.dtype,
        kernels=args.kernels,
        class_table=None if palette == 'checkpoint' else palette_class_table(palette),
        submission=args.cityscapes_submission,
        engine=args.engine,
        precision=args.precision,
        threads=args.threads,
        calibration=args.calibration or '',
        max_frames=args.max_frames,
        duration=args.duration,
    )
    names = flag_names(cls, {'inputs': '--input', 'submission': '--cityscapes-submission'})
    return build_checked(cls, fields, names, config=False)

  @classmethod
  def from_config(
      cls, config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]
  ) -> PredictOptions:
    """From `--config.mode=predict`: `config.predict`, TTA from `config.eval`, the batch
    from `config.eval_batch_size`, dtype and kernels from `config.model`."""
    cfg = config.predict
    if not cfg.input:
      raise ConfigError(
          'config.predict.input is empty: set it to an image, folder, glob or '
          'video, e.g. --config.predict.input=photos/'
      )
    if cfg.palette not in ('checkpoint', 'dataset'):
      raise ConfigError(f'config.predict.palette={cfg.palette!r}: expected checkpoint or dataset.')
    if cfg.submission:
      class_table = cityscapes.cityscapes_class_table()
    elif cfg.palette == 'dataset':
      validation.check_dataset_name(config)
      class_table = datasets.get_class_table(config.dataset)
    else:
      class_table = None
    precision = cfg.get('precision', None) or None
    fields = dict(
        checkpoint=cfg.checkpoint or os.fspath(workdir),
        inputs=(cfg.input,) if cfg.input else (),
        output=cfg.output or os.fspath(Path(workdir) / 'predictions'),
        alpha=cfg.alpha,
        batch_size=config.eval_batch_size,
        scales=_floats(config.eval.scales),
        flip=config.eval.flip,
        # config.model.dtype is the training's; config.predict.precision, where set,
        # supersedes it (as --precision does --dtype).
        dtype='float32' if precision else config.model.dtype,
        kernels=config.model.kernels,
        class_table=class_table,
        submission=cfg.submission,
        engine=cfg.get('engine', 'auto'),
        precision=precision,
        threads=cfg.get('threads', 0) or None,
        calibration=cfg.get('calibration', ''),
    )
    names = {
        'engine': 'config.predict.engine',
        'precision': 'config.predict.precision',
        'threads': 'config.predict.threads',
        'calibration': 'config.predict.calibration',
        'checkpoint': 'config.predict.checkpoint',
        'inputs': 'config.predict.input',
        'output': 'config.predict.output',
        'alpha': 'config.predict.alpha',
        'batch_size': 'config.eval_batch_size',
        'scales': 'config.eval.scales',
        'dtype': 'config.model.dtype',
        'kernels': 'config.model.kernels',
    }
    return build_checked(cls, fields, names, config=True)


def engine_checks(engine: Any, precision: Any, threads: Any) -> list[tuple[str, bool, str]]:
  """The checks of an inference engine's settings (`esnet_jax.deploy.engines`): known names only;
  whether the engine runs here is asked when it is built, with the reason."""
  from esnet_jax.deploy import engines  # pylint: disable=g-import-not-at-top

  return [
      choice('engine', engine, engines.ENGINE_CHOICES),
      (
          'precision',
          precision is None or precision in engines.PRECISIONS,
          'one of ' + ', '.join(engines.PRECISIONS),
      ),
      ('threads', threads is None or positive_int(threads), 'a positive integer'),
  ]


def palette_class_table(name: str) -> datasets.ClassTable:
  """The class table of a built-in dataset, for `--palette NAME`."""
  if name not in PALETTES[1:]:
    raise OptionError('palette', name, 'one of ' + ', '.join(PALETTES))
  dataset_cfg = datasets.default_dataset_config()
  dataset_cfg.name = name
  return datasets.get_class_table(dataset_cfg)


def _floats(values: Any) -> tuple[float, ...] | Any:
  """A config's list of numbers as a tuple of floats; anything else as it is (to be refused)."""
  try:
    return tuple(float(v) for v in values)
  except (TypeError, ValueError):
    return values


# ---------------------------------------------------------------------------------------
# benchmark


@dataclasses.dataclass(frozen=True)
class BenchmarkOptions(Checked):
  """`esnet_jax.benchmark`: what to time (inference, the train step, every engine or the GPU
  suite) and how.

  `batch` None is 1 for inference and 8 images per device for the train step. `engines`
  times every engine of `esnet_jax.deploy.engines` at every precision it runs here, at each of
  `sizes` ('HxW[,HxW...]', default `ENGINE_SIZES`) instead of `height` and `width`, on
  `checkpoint` (default `ENGINE_CHECKPOINT`, whose INT8 file ships: INT8 needs no
  calibration), with `threads` for ONNX Runtime and OpenVINO (None: their default).
  """

  # Not annotated: class constants, not fields.
  ENGINE_SIZES = '512x1024,360x480'
  ENGINE_CHECKPOINT = 'pretrained:camvid'

  height: int = 512
  width: int = 1024
  batch: int | None = None
  dtype: str = 'float32'
  runs: int = MIN_RUNS
  warmup: int = DEFAULT_WARMUP
  fold_bn: bool = True
  kernels: str = 'auto'
  num_classes: int | None = None
  checkpoint: str | None = None
  compare_torch: bool = False
  compare_onnxruntime: bool = False
  seed: int = 0
  trace_dir: str | None = None
  json: str | None = None
  train: bool = False
  devices: int = 1
  compare_jit: bool = False
  suite: str | None = None
  smoke: bool = False
  engines: bool = False
  sizes: str | None = None
  threads: int | None = None

  @property
  def batch_size(self) -> int:
    return self.batch or (8 if self.train else 1)

  @property
  def engine_sizes(self) -> tuple[tuple[int, int], ...]:
    """`sizes` (default `ENGINE_SIZES`) as (height, width) pairs; () if it does not parse."""
    pairs = []
    for item in (self.sizes or self.ENGINE_SIZES).lower().split(','):
      height, x, width = item.strip().partition('x')
      if not (x and height.isdigit() and width.isdigit()):
        return ()
      pairs.append((int(height), int(width)))
    return tuple(pairs)

  def _engine_checks(self) -> list[tuple[str, bool, str]]:
    """What `engines` times on its own terms: its sizes, precisions and weights."""
    alone = 'False with --engines, which times every engine alone'
    use_sizes = 'its default with --engines, which times --sizes HxW[,HxW...]'
    defaults = {f.name: f.default for f in dataclasses.fields(self)}
    return [
        (
            'sizes',
            bool(self.engine_sizes)
            and all(multiple_of_8(side) for size in self.engine_sizes for side in size),
            'HxW[,HxW...] with H and W positive multiples of 8 (e.g. 512x1024,360x480)',
        ),
        ('sizes', self.engines or self.sizes is None, 'not given without --engines'),
        ('threads', self.engines or self.threads is None, 'not given without --engines'),
        ('threads', self.threads is None or positive_int(self.threads), 'a positive integer'),
        *(
            (side, not self.engines or getattr(self, side) == defaults[side], use_sizes)
            for side in ('height', 'width')
        ),
        (
            'dtype',
            not self.engines or self.dtype == 'float32',
            'float32 with --engines, which times every precision',
        ),
        (
            'num_classes',
            not self.engines or self.num_classes is None,
            "not given with --engines: it times the --checkpoint's classes",
        ),
        ('train', not (self.engines and self.train), alone),
        ('suite', not (self.engines and self.suite), alone),
        ('compare_torch', not (self.engines and self.compare_torch), alone),
        ('compare_onnxruntime', not (self.engines and self.compare_onnxruntime), alone),
        ('trace_dir', not (self.engines and self.trace_dir), alone),
    ]

  def _checks(self) -> list[tuple[str, bool, str]]:
    return [
        ('height', multiple_of_8(self.height), SIZE_EXPECTED),
        ('width', multiple_of_8(self.width), SIZE_EXPECTED),
        ('batch', self.batch is None or positive_int(self.batch), 'a positive integer'),
        choice('dtype', self.dtype, DTYPES),
        ('runs', positive_int(self.runs), 'a positive integer'),
        ('warmup', isinstance(self.warmup, int) and self.warmup >= 0, 'a non-negative integer'),
        choice('kernels', self.kernels, implementations.CHOICES),
        (
            'num_classes',
            self.num_classes is None or positive_int(self.num_classes),
            'a positive integer',
        ),
        ('devices', positive_int(self.devices), 'a positive integer'),
        ('suite', self.suite in (None, 'gpu'), "'gpu'"),
        ('smoke', not self.smoke or self.suite, 'False without --suite gpu, to which it belongs'),
        (
            'train',
            not (self.train and self.suite),
            'False with --suite gpu, which times the train step itself',
        ),
        (
            'devices',
            self.train or self.devices == 1,
            '1 unless --train: more devices time the train step',
        ),
        (
            'compare_jit',
            self.train or not self.compare_jit,
            'False unless --train: it times the train step',
        ),
        (
            'compare_onnxruntime',
            not (self.train and self.compare_onnxruntime),
            'False with --train: it times inference only',
        ),
        (
            'compare_onnxruntime',
            not self.compare_onnxruntime or self.dtype == 'float32',
            'False unless --dtype float32: the ONNX export is float32',
        ),
        (
            'compare_torch',
            not (self.compare_torch and self.devices != 1),
            'False unless --devices 1: it times one device',
        ),
    ] + self._engine_checks()

  @classmethod
  def from_args(cls, args: argparse.Namespace) -> BenchmarkOptions:
    """From `python -m esnet_jax.benchmark`'s parsed flags; a bad value is an `OptionError` naming its flag."""
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls)}
    return build_checked(cls, fields, flag_names(cls, {'trace_dir': '--trace'}), config=False)

  @classmethod
  def from_config(
      cls, config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]
  ) -> BenchmarkOptions:
    """From `--config.mode=benchmark`: `config.benchmark` and `config.model.kernels`; the
    result goes to workdir/benchmark.json."""
    b = config.benchmark
    fields = dict(
        height=b.height,
        width=b.width,
        batch=b.batch,
        dtype=b.dtype,
        runs=b.runs,
        warmup=b.get('warmup', DEFAULT_WARMUP),
        fold_bn=b.fold_bn,
        kernels=config.model.kernels,
        num_classes=b.num_classes or None,
        checkpoint=b.checkpoint or None,
        compare_torch=b.compare_torch,
        compare_onnxruntime=b.get('compare_onnxruntime', False),
        engines=b.get('engines', False),
        sizes=b.get('sizes', '') or None,
        threads=b.get('threads', 0) or None,
        json=os.fspath(Path(workdir) / 'benchmark.json'),
    )
    names = {name: f'config.benchmark.{name}' for name in fields}
    names['kernels'] = 'config.model.kernels'
    return build_checked(cls, fields, names, config=True)


# ---------------------------------------------------------------------------------------
# export


# ---------------------------------------------------------------------------------------
# eval


@dataclasses.dataclass(frozen=True)
class EvalOptions(Checked):
  """Evaluation, periodic in training and `--config.mode=eval`: which checkpoint (eval mode)
  and the test-time augmentation. Only a config sets it."""

  checkpoint: str = ''
  which: str = 'latest'
  scales: tuple[float, ...] = (1.0,)
  flip: bool = False
  engine: str = 'auto'  # Eval mode only; periodic evaluation runs in the training's JAX.
  precision: str | None = None  # None: config.model.dtype's.
  threads: int | None = None
  calibration: str = ''

  def _checks(self) -> list[tuple[str, bool, str]]:
    return [
        choice('which', self.which, WHICH),
        ('scales', scales_ok(self.scales), SCALES_EXPECTED),
        ('flip', isinstance(self.flip, bool), 'True or False'),
        *engine_checks(self.engine, self.precision, self.threads),
    ]

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict) -> EvalOptions:
    e = config.eval
    fields = dict(
        checkpoint=e.checkpoint,
        which=e.which,
        scales=_floats(e.scales),
        flip=e.flip,
        engine=e.get('engine', 'auto'),
        precision=e.get('precision', '') or None,
        threads=e.get('threads', 0) or None,
        calibration=e.get('calibration', ''),
    )
    return build_checked(cls, fields, {name: f'config.eval.{name}' for name in fields}, config=True)
