"""The mIoU of an exported ONNX file (float32 or INT8) on a dataset split, run by ONNX Runtime.

  python -m esnet_jax.onnx_eval --model camvid.int8.onnx --config configs/camvid.py \
      [--split val] [--threads 2] [--json PATH]

Why: a deployed file is what a user runs, so its accuracy is measured on it, not on
the checkpoint it came from (INT8 changes the numbers). Each image is normalised with
the mean and std of `FILE.json` (written by `esnet_jax.deploy.export`), padded at the bottom
and right to multiples of 8 with the mean pixel as inference does, run at full size,
and the logits cropped back; the confusion matrix and IoU are `esnet_jax.evaluation.metrics`'.

The file is checked against its JSON and the dataset (`onnx_contract`), and `--json`
against the inputs, before the first image runs; `--json` is written whole.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from esnet_jax.system import runner
from esnet_jax.data import dataset_configs, datasets
from esnet_jax.evaluation.evaluator import Evaluator
from esnet_jax.deploy import onnx_contract
from esnet_jax.deploy.engines import views
from esnet_jax.data import transforms
from esnet_jax.errors import OptionError


def _session(model: Path, threads: int | None) -> Any:
  try:
    import onnxruntime as ort  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('onnx_eval needs onnxruntime: pip install -e ".[export]"') from e
  options = ort.SessionOptions()
  if threads:
    options.intra_op_num_threads = threads
  try:
    return ort.InferenceSession(str(model), options, providers=['CPUExecutionProvider'])
  except Exception as e:  # ORT raises its own bare exception types.
    raise OptionError(
        'model', str(model), f'an ONNX file ONNX Runtime loads ({runner.one_line(e, 500)})'
    ) from e


def _check_size(export: onnx_contract.Export, size: Sequence[int], name: str) -> None:
  """Refuses a graph with a fixed side other than SIZE's, (height, width) padded to 8."""
  fixed = (export.height, export.width)
  if any(side is not None and side != wanted for side, wanted in zip(fixed, size)):
    takes = 'x'.join(str(side) if side is not None else 'any' for side in fixed)
    raise OptionError(
        'model',
        str(export.path),
        f'an export that takes {size[0]}x{size[1]} images (those of {name}; '
        f'export it without --height/--width), not {takes}',
    )


class _FilePredict:
  """An exported file as `Evaluator.run`'s predict, through the same steps every engine
  runs between uint8 images and logits (`engines.views.predict`: normalised with its JSON's
  mean and std, padded at the bottom and right to multiples of 8, cropped back, argmax)."""

  def __init__(self, export: onnx_contract.Export, session: Any, described: str):
    self.export, self.session, self.described = export, session, described
    self.input_name = session.get_inputs()[0].name
    self.mean = np.asarray(export.meta['mean'], np.float32)
    self.std = np.asarray(export.meta['std'], np.float32)
    self.count = 0

  def _logits(self, x: np.ndarray) -> np.ndarray:
    _check_size(self.export, x.shape[1:3], f'{self.described} (image {self.count})')
    return self.session.run(None, {self.input_name: x})[0]

  def __call__(self, image: np.ndarray) -> np.ndarray:
    classes, _ = views.predict(self._logits, image[None], mean=self.mean, std=self.std)
    self.count += 1
    return classes[0]


def evaluate(
    model: str | os.PathLike[str],
    config: str | os.PathLike[str],
    split: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
  """Per-class IoU, mIoU and mean latency of ONNX file MODEL on SPLIT of CONFIG's dataset,
  measured by the one `Evaluator` of the split.

  Everything that can be checked is checked before the first image is run: MODEL and its
  JSON agree (`onnx_contract.read_export`: the class count and input layout come from the
  graph), the class count is the dataset's, and a fixed-size graph takes the first image
  and the split's largest.

  Raises:
    OptionError: MODEL is missing, not an export (no JSON beside it, or one that is
      malformed or disagrees with the graph), or its classes or fixed size do not fit the
      dataset; CONFIG does not load (`--config`).
  """
  export = onnx_contract.read_export(model, 'model')
  dataset_cfg = dataset_configs.load_dataset_config(config, 'config')
  table = datasets.get_class_table(dataset_cfg)
  if export.num_classes != table.num_classes:
    raise OptionError(
        'model',
        str(export.path),
        f'{table.num_classes} classes as {dataset_cfg.name} has, not {export.num_classes}',
    )
  evaluator = Evaluator(dataset_cfg, split)
  described = f'{dataset_cfg.name} {evaluator.split}'
  first = evaluator.source[0]['image'].shape[:2]
  _check_size(export, [transforms.round_up(side, 8) for side in first], described)
  largest = [transforms.round_up(side, 8) for side in evaluator.source.max_size]
  _check_size(export, largest, f'the largest of {described}')
  summary = evaluator.run(_FilePredict(export, _session(export.path, threads), described))
  return {
      'model': str(export.path),
      'config': str(config),
      'dataset': dataset_cfg.name,
      'split': evaluator.split,
      'images': summary['images'],
      'miou': summary['miou'],
      'iou': {
          k: (v if v is not None else float('nan')) for k, v in summary['per_class_iou'].items()
      },
      'pixel_accuracy': summary['pixel_accuracy'],
      'ms_per_image': summary['ms_per_image'],
      'quantization': export.meta.get('quantization'),
  }
