"""The mIoU of an exported ONNX file (float32 or INT8) on a dataset split, run by ONNX Runtime.

  python -m esnet_jax.onnx_eval --model camvid.int8.onnx --config configs/camvid.py \
      [--split val] [--threads 2] [--json PATH]

Why: a deployed file is what a user runs, so its accuracy is measured on it, not on
the checkpoint it came from (INT8 changes the numbers). Each image is normalised with
the mean and std of `FILE.json` (written by `esnet_jax.export`), padded at the bottom
and right to multiples of 8 with the mean pixel as inference does, run at full size,
and the logits cropped back; the confusion matrix and IoU are `esnet_jax.metrics`'.

The file is checked against its JSON and the dataset (`onnx_contract`), and `--json`
against the inputs, before the first image runs; `--json` is written whole.
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

from esnet_jax import cli, dataset_configs, datasets, metrics, onnx_contract, output_files
from esnet_jax import transforms
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
    raise OptionError(
        'model', str(model), f'an ONNX file ONNX Runtime loads ({cli.one_line(e, 500)})'
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


def evaluate(
    model: str | os.PathLike[str],
    config: str | os.PathLike[str],
    split: str | None = None,
    threads: int | None = None,
) -> dict[str, Any]:
  """Per-class IoU, mIoU and mean latency of ONNX file MODEL on SPLIT of CONFIG's dataset.

  Everything that can be checked is checked before the first image is run: MODEL and its
  JSON agree (`onnx_contract.read_export`: the class count and input layout come from the
  graph), the class count is the dataset's, and a fixed-size graph takes the first image.

  Raises:
    OptionError: MODEL is missing, not an export (no JSON beside it, or one that is
      malformed or disagrees with the graph), or its classes or fixed size do not fit the
      dataset; CONFIG does not load (`--config`).
  """
  export = onnx_contract.read_export(model, 'model')
  model, meta = export.path, export.meta
  dataset_cfg = dataset_configs.load_dataset_config(config, 'config')
  split = split or dataset_cfg.eval_split
  table = datasets.get_class_table(dataset_cfg)
  if export.num_classes != table.num_classes:
    raise OptionError(
        'model',
        str(model),
        f'{table.num_classes} classes as {dataset_cfg.name} has, not {export.num_classes}',
    )
  source = datasets.build_source(dataset_cfg, split)

  def padded(i: int) -> tuple[np.ndarray, np.ndarray]:
    example = source[i]
    return transforms.pad_to_multiple(
        example['image'],
        example['label'],
        8,
        ignore_label=table.ignore_label,
        image_pad_value=np.round(meta['mean']),
    )

  described = f'{dataset_cfg.name} {split}'
  first = padded(0)
  _check_size(export, first[0].shape[:2], described)
  largest = [transforms.round_up(side, 8) for side in source.max_size]
  _check_size(export, largest, f'the largest of {described}')
  session = _session(model, threads)
  input_name = session.get_inputs()[0].name
  confusion = np.zeros((table.num_classes,) * 2, np.int64)
  seconds = 0.0
  for i in range(len(source)):
    image, label = first if i == 0 else padded(i)
    _check_size(export, image.shape[:2], f'{described} (image {i})')
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
    if args.json:  # Before the evaluation, which may take minutes.
      output_files.check_output_file(
          args.json,
          '--json',
          [
              ('--model', args.model),
              ("--model's JSON", f'{args.model}.json'),
              ('--config', args.config),
          ],
      )
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
    output_files.write_text(args.json, json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  cli.run(main)
