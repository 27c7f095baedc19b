"""The mIoU of an exported ONNX file (float32 or INT8) on a dataset split, run by ONNX Runtime.

  python -m esnet_jax.onnx_eval --model camvid.int8.onnx --config configs/camvid.py \
      [--split val] [--threads 2] [--json PATH]

Why: a deployed file is what a user runs, so its accuracy is measured on it, not on
the checkpoint it came from (INT8 changes the numbers). Each image is normalised with
the mean and std of `FILE.json` (written by `esnet_jax.export`), padded at the bottom
and right to multiples of 8 with the mean pixel as inference does, run at full size,
and the logits cropped back; the confusion matrix and IoU are `esnet_jax.metrics`'.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from esnet_jax import cli, dataset_configs, datasets, metrics, transforms
from esnet_jax.errors import EsnetError, OptionError


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
    raise OptionError('model', str(model), f'an ONNX file ONNX Runtime loads ({e})') from e


def _metadata(model: Path) -> dict[str, Any]:
  path = model.with_name(model.name + '.json')
  if not path.is_file():
    raise OptionError(
        'model', str(model), f'an export of esnet_jax.export, with its {path.name} beside it'
    )
  return json.loads(path.read_text())


def evaluate(
    model: str | os.PathLike[str],
    config: str | os.PathLike[str],
    split: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
  """Per-class IoU, mIoU and mean latency of ONNX file MODEL on SPLIT of CONFIG's dataset.

  Raises:
    OptionError: MODEL is missing, not an export (no JSON beside it), or its classes or
      fixed size do not fit the dataset; CONFIG does not load (`--config`).
  """
  model = Path(model)
  if not model.is_file():
    raise OptionError('model', str(model), 'an existing .onnx file')
  meta = _metadata(model)
  dataset_cfg = dataset_configs.load_dataset_config(config, 'config')
  split = split or dataset_cfg.eval_split
  table = datasets.get_class_table(dataset_cfg)
  if meta['num_classes'] != table.num_classes:
    raise OptionError(
        'model',
        str(model),
        f'{table.num_classes} classes as {dataset_cfg.name} has, not {meta["num_classes"]}',
    )
  source = datasets.build_source(dataset_cfg, split)
  session = _session(model, threads)
  input_name = session.get_inputs()[0].name
  _, fixed_h, fixed_w, _ = session.get_inputs()[0].shape
  fixed = any(isinstance(side, int) for side in (fixed_h, fixed_w))
  confusion = np.zeros((table.num_classes,) * 2, np.int64)
  seconds = 0.0
  for i in range(len(source)):
    example = source[i]
    image, label = transforms.pad_to_multiple(
        example['image'],
        example['label'],
        8,
        ignore_label=table.ignore_label,
        image_pad_value=np.round(meta['mean']),
    )
    if fixed and (fixed_h, fixed_w) != image.shape[:2]:
      raise OptionError(
          'model',
          str(model),
          f'an export that takes {image.shape[0]}x{image.shape[1]} images (export it '
          f'without --height/--width), not {fixed_h}x{fixed_w}',
      )
    x = transforms.normalize(image, meta['mean'], meta['std'])[None]
    start = time.perf_counter()
    logits = session.run(None, {input_name: x})[0][0]
    seconds += time.perf_counter() - start
    pred = logits.argmax(-1)
    confusion += np.asarray(
        metrics.confusion_matrix(pred, label, table.num_classes, table.ignore_label)
    )
  iou = metrics.iou(confusion)
  return {
      'model': str(model),
      'config': str(config),
      'dataset': dataset_cfg.name,
      'split': split,
      'images': len(source),
      'miou': float(np.nanmean(iou)),
      'iou': {name: float(v) for name, v in zip(table.names, iou)},
      'ms_per_image': 1e3 * seconds / max(len(source), 1),
      'quantization': meta.get('quantization'),
  }


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.onnx_eval',
      description='mIoU of an exported ONNX file on a dataset split, with ONNX Runtime.',
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  parser.add_argument('--model', required=True, help='FILE.onnx written by esnet_jax.export')
  parser.add_argument('--config', required=True, help='a dataset config, e.g. configs/camvid.py')
  parser.add_argument('--split', default=None, help="the split (default: the config's eval split)")
  parser.add_argument(
      '--threads', type=int, default=None, help="ONNX Runtime's intra-op threads (its default)"
  )
  parser.add_argument('--json', default=None, help='also write the result to this file')
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    result = evaluate(args.model, args.config, args.split, args.threads)
  except (EsnetError, ImportError) as e:
    print(f'error: {e}', file=sys.stderr)
    return getattr(e, 'exit_status', 2)
  width = max(len(name) for name in result['iou'])
  for name, value in result['iou'].items():
    print(f'{name:<{width}}  {100 * value:5.1f}')
  print(
      f"{result['dataset']} {result['split']} ({result['images']} images), {args.model}: "
      f"mIoU {100 * result['miou']:.2f}%, {result['ms_per_image']:.0f} ms per image"
  )
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  cli.run(main)
