"""`python -m esnet_jax.export`'s settings as one checked object (`ExportOptions`), made from
its flags or from `config.export`, and the checks of an export's input size."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path
from typing import Any

import ml_collections

from esnet_jax.system.checked_options import (
    SIZE_EXPECTED,
    WHICH,
    Checked,
    build_checked,
    choice,
    flag_names,
    multiple_of_8,
    positive_int,
)

FORMATS = ('stablehlo', 'onnx')
QUANTIZE_CHOICES = (
    'none',
    'int8',
)  # int8: ONNX Runtime's static quantization (esnet_jax.deploy.quantize)


@dataclasses.dataclass(frozen=True)
class ExportOptions(Checked):
  """`esnet_jax.deploy.export`: which weights, to which format and file, for which input size.

  `batch` None exports a symbolic batch dimension; `height` and `width` None
  (ONNX only: StableHLO needs them) symbolic ones, any multiples of 8.
  """

  checkpoint: str
  format: str
  height: int | None
  width: int | None
  out: str
  batch: int | None = None
  fold_bn: bool = True
  which: str = 'latest'
  quantize: str = 'none'
  calibration: str = ''
  calibration_images: int = 32

  def _checks(self) -> list[tuple[str, bool, str]]:
    int8 = self.quantize == 'int8'
    return [
        (
            'checkpoint',
            bool(self.checkpoint),
            'a checkpoint, workdir, weights file or pretrained:NAME',
        ),
        choice('format', self.format, FORMATS),
        ('out', bool(self.out), 'an output file'),
        choice('which', self.which, WHICH),
        choice('quantize', self.quantize, QUANTIZE_CHOICES),
        (
            'quantize',
            not int8 or self.format == 'onnx',
            "'none' with format stablehlo (INT8 is ONNX)",
        ),
        (
            'calibration',
            not int8 or bool(self.calibration),
            'a dataset config (e.g. configs/camvid.py) or a folder of images, with quantize int8',
        ),
        ('calibration_images', positive_int(self.calibration_images), 'a positive integer'),
    ] + export_size_checks(self.height, self.width, self.batch, symbolic_size=self.format == 'onnx')

  @classmethod
  def from_args(cls, args: argparse.Namespace) -> ExportOptions:
    """From `python -m esnet_jax.export`'s parsed flags; a bad value is an `OptionError` naming its flag."""
    fields = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if f.name != 'fold_bn'}
    fields['fold_bn'] = not args.no_fold_bn
    return build_checked(cls, fields, flag_names(cls, {'fold_bn': '--no-fold-bn'}), config=False)

  @classmethod
  def from_config(
      cls, config: ml_collections.ConfigDict, workdir: str | os.PathLike[str]
  ) -> ExportOptions:
    """From `--config.mode=export`: `config.export`; the checkpoint defaults to the
    workdir's, the file to workdir/esnet.<format>; for ONNX, a height or width of 0
    is a symbolic one."""
    e = config.export
    symbolic = e.format == 'onnx'
    fields = dict(
        checkpoint=e.checkpoint or os.fspath(workdir),
        format=e.format,
        height=(e.height or None) if symbolic else e.height,
        width=(e.width or None) if symbolic else e.width,
        out=e.out or os.fspath(Path(workdir) / f'esnet.{e.format}'),
        batch=e.batch or None,
        fold_bn=e.fold_bn,
        which=e.which,
        quantize=e.quantize,
        calibration=e.calibration,
        calibration_images=e.calibration_images,
    )
    return build_checked(
        cls, fields, {name: f'config.export.{name}' for name in fields}, config=True
    )


def export_size_checks(
    height: Any, width: Any, batch: Any, *, symbolic_size: bool = False
) -> list[tuple[str, bool, str]]:
  """The checks of an export's input size (also for `export`'s lower-level functions).

  `symbolic_size`: whether a None height or width is a symbolic one (ONNX); where
  it is not (StableHLO), both are required.
  """
  if symbolic_size:
    ok = lambda size: size is None or multiple_of_8(size)
    expected = SIZE_EXPECTED + '; pad inputs to it, or none for a symbolic size'
  else:
    ok = multiple_of_8
    expected = SIZE_EXPECTED + '; pad inputs to it (only ONNX exports a symbolic size)'
  return [
      ('height', ok(height), expected),
      ('width', ok(width), expected),
      (
          'batch',
          batch is None or positive_int(batch),
          'a positive integer, or none for a symbolic batch',
      ),
  ]
