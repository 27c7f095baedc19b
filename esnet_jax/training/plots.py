"""PNG plots of a training workdir: training curves, confusion matrix, per-class IoU.

  python -m esnet_jax.plots --workdir DIR [--eval-json FILE]

writes into `DIR/plots/`:

- `training_curves.png`: train loss, learning rate and eval mIoU against the step,
  from `DIR/metrics.jsonl`;
- `confusion_matrix.png`: the row-normalised confusion matrix (each true class's
  pixels split over the predicted classes) and `per_class_iou.png`: per-class IoU
  bars with the mIoU, both from an evaluation JSON (`DIR/eval/*.json`, the newest
  unless `--eval-json` names one).

Training and `--config.mode=eval` call `write_plots_or_warn` after their final
evaluation. Each PNG is written whole (`esnet_jax.system.output_files`), and a plot that would
replace a file it is drawn from (`--eval-json DIR/plots/per_class_iou.png`) is refused.
matplotlib is used through `Figure` objects (the Agg canvas), never pyplot, so nothing
depends on a display or on global backend state.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from absl import logging

from esnet_jax.system import output_files

PLOTS_DIR = 'plots'
METRICS_FILE = 'metrics.jsonl'
PLOT_FILES = ('training_curves.png', 'confusion_matrix.png', 'per_class_iou.png')
CURVES = (
    ('train/loss', 'train loss'),
    ('train/learning_rate', 'learning rate'),
    ('eval/miou', 'eval mIoU'),
)


def _figure(width: float, height: float) -> Any:
  from matplotlib.figure import Figure  # pylint: disable=g-import-not-at-top

  return Figure(figsize=(width, height), dpi=100, layout='constrained')


def read_metrics(path: str | os.PathLike[str]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
  """`{key: (steps, values)}` of every scalar in a `metrics.jsonl`, in file order.

  A line cut short by a killed run is skipped.
  """
  series: dict[str, tuple[list[int], list[float]]] = {}
  for line in Path(path).read_text().splitlines():
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    for key, value in record.items():
      if key not in ('step', 'time') and isinstance(value, (int, float)):
        steps, values = series.setdefault(key, ([], []))
        steps.append(int(record['step']))
        values.append(float(value))
  return {k: (np.asarray(s), np.asarray(v)) for k, (s, v) in series.items()}


def plot_training_curves(
    metrics: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | os.PathLike[str]
) -> Path:
  """Loss, learning rate and mIoU against the step, one panel each (missing ones say so)."""
  fig = _figure(12, 3.4)
  for ax, (key, title) in zip(fig.subplots(1, len(CURVES)), CURVES):
    ax.set_title(title)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if key not in metrics:
      ax.text(0.5, 0.5, f'no {key} yet', ha='center', va='center', transform=ax.transAxes)
      continue
    steps, values = metrics[key]
    ax.plot(steps, values, marker='o' if len(steps) < 20 else None)
    if key == 'train/loss' and (values > 0).all():
      ax.set_yscale('log')
    if key == 'eval/miou':
      ax.set_ylim(0, 1)
  return _save(fig, path)


def row_normalised(confusion: np.ndarray) -> np.ndarray:
  """Each row divided by its sum: the fraction of a true class predicted as each class.

  Rows of classes absent from the labels are NaN (nothing to normalise).
  """
  confusion = np.asarray(confusion, np.float64)
  totals = confusion.sum(axis=1, keepdims=True)
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(totals > 0, confusion / totals, np.nan)


def plot_confusion_matrix(
    confusion: np.ndarray, class_names: Sequence[str], path: str | os.PathLike[str], title: str = ''
) -> Path:
  """Row-normalised confusion matrix as a heat map, annotated when there are few classes."""
  matrix = row_normalised(confusion)
  n = len(class_names)
  side = max(4.0, 0.45 * n + 2.5)
  fig = _figure(side + 1, side)
  ax = fig.subplots()
  image = ax.imshow(np.ma.masked_invalid(matrix), cmap='Blues', vmin=0, vmax=1)
  fig.colorbar(image, ax=ax, fraction=0.046, label='fraction of the true class')
  ax.set_xticks(range(n), class_names, rotation=90)
  ax.set_yticks(range(n), class_names)
  ax.set_xlabel('predicted')
  ax.set_ylabel('true')
  ax.set_title(title or 'confusion matrix (row-normalised)')
  if n <= 20:
    for i in range(n):
      for j in range(n):
        if np.isfinite(matrix[i, j]) and matrix[i, j] >= 0.005:
          ax.text(
              j,
              i,
              f'{matrix[i, j]:.2f}',
              ha='center',
              va='center',
              fontsize=7,
              color='white' if matrix[i, j] > 0.5 else 'black',
          )
  return _save(fig, path)


def plot_per_class_iou(
    per_class_iou: Mapping[str, float | None],
    miou: float,
    path: str | os.PathLike[str],
    title: str = '',
) -> Path:
  """Horizontal IoU bars per class, the mIoU as a line; classes without IoU say 'n/a'."""
  names = list(per_class_iou)
  values = [per_class_iou[k] for k in names]
  fig = _figure(7, max(2.5, 0.3 * len(names) + 1.2))
  ax = fig.subplots()
  heights = [v if v is not None and math.isfinite(v) else 0.0 for v in values]
  ax.barh(range(len(names)), heights, color='tab:blue')
  for i, value in enumerate(values):
    label = f'{value:.3f}' if value is not None and math.isfinite(value) else 'n/a'
    ax.text(
        heights[i] + 0.01,
        i,
        label,
        va='center',
        fontsize=8,
        bbox={'facecolor': 'white', 'edgecolor': 'none', 'pad': 1},
    )
  ax.axvline(miou, color='tab:red', linestyle='--', label=f'mIoU {miou:.3f}')
  ax.set_yticks(range(len(names)), names)
  ax.invert_yaxis()
  ax.set_xlim(0, 1.1)
  ax.set_xlabel('IoU')
  ax.legend(loc='lower right')
  ax.set_title(title or 'per-class IoU')
  return _save(fig, path)


def _save(fig: Any, path: str | os.PathLike[str]) -> Path:
  """Saves FIG to PATH whole; matplotlib picks the format from the suffix `replacing` keeps."""
  path = Path(path)
  with output_files.replacing(path) as tmp:
    fig.savefig(tmp)
  return path


def newest_eval_json(workdir: str | os.PathLike[str]) -> Path | None:
  """The most recently written `workdir/eval/*.json`, or None."""
  files = list((Path(workdir) / 'eval').glob('*.json'))
  return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None


def write_plots(
    workdir: str | os.PathLike[str], eval_json: str | os.PathLike[str] | None = None
) -> list[Path]:
  """Every plot the workdir has data for, into `workdir/plots/`; returns the files.

  Raises:
    FileNotFoundError: If the workdir has neither metrics nor an evaluation.
    OutputError: If a plot would replace the metrics or the evaluation JSON, or cannot be
      written as a file.
  """
  workdir = Path(workdir)
  out = workdir / PLOTS_DIR
  written = []
  metrics_file = workdir / METRICS_FILE
  eval_json = Path(eval_json) if eval_json else newest_eval_json(workdir)
  inputs = [(METRICS_FILE, metrics_file)] + ([('--eval-json', eval_json)] if eval_json else [])
  curves, confusion, ious = (
      output_files.check_output_file(out / name, 'plot', inputs) for name in PLOT_FILES
  )
  if metrics_file.is_file():
    written.append(plot_training_curves(read_metrics(metrics_file), curves))
  if eval_json is not None:
    summary = json.loads(eval_json.read_text())
    source = f'{eval_json.name}, step {summary.get("step", "?")}'
    written.append(
        plot_confusion_matrix(
            np.asarray(summary['confusion_matrix']),
            summary['class_names'],
            confusion,
            f'confusion matrix, row-normalised ({source})',
        )
    )
    written.append(
        plot_per_class_iou(
            summary['per_class_iou'],
            summary['miou'],
            ious,
            f'per-class IoU ({source})',
        )
    )
  if not written:
    raise FileNotFoundError(
        f'Nothing to plot in {workdir}: no {METRICS_FILE} and no ' 'eval/*.json.'
    )
  return written


def write_plots_or_warn(workdir: str | os.PathLike[str]) -> list[Path]:
  """`write_plots` for the end of training/eval: a failure is a warning, never an error."""
  try:
    return write_plots(workdir)
  except Exception as e:  # pylint: disable=broad-except
    logging.warning('Could not write plots to %s: %s', Path(workdir) / PLOTS_DIR, e)
    return []
