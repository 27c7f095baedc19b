"""The one evaluator of a dataset split: training's periodic evaluation, eval mode on any
engine and an exported ONNX file's `onnx_eval` all report through it.

An `Evaluator` holds one split of a dataset config (its source and class table) and turns
predictions into the summary every evaluation writes (`metrics.summarize`: mIoU over the
classes present, per-class IoU, pixel accuracy, plus the confusion matrix):

- `run(predict)`: each image of the split goes through `predict` (a uint8 image in, its
  class map at full label resolution out) as a user's image would, timed; the mean time
  per image joins the summary. Eval mode on OpenVINO or ONNX Runtime passes
  `Segmenter.predict`; `onnx_eval` passes an exported file's session.
- `run_batched(confusions)`: the confusion matrices of batches computed elsewhere, summed;
  training's pmapped eval step computes them on the devices, over the input pipeline's
  batches, which is what keeps periodic evaluation fast.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterable

import ml_collections
import numpy as np

from esnet_jax.data import datasets
from esnet_jax.evaluation import metrics

Predict = Callable[[np.ndarray], np.ndarray]


class Evaluator:
  """One split of a dataset config; `run` and `run_batched` return its metrics."""

  def __init__(self, dataset_cfg: ml_collections.ConfigDict, split: str | None = None):
    self.split = split or dataset_cfg.eval_split
    self.source = datasets.build_source(dataset_cfg, self.split)
    self.table = self.source.class_table

  def empty_confusion(self) -> np.ndarray:
    """A zero confusion matrix of the split's classes (rows true, columns predicted)."""
    return np.zeros((self.table.num_classes,) * 2, np.int64)

  def confusion_of(self, classes: np.ndarray, label: np.ndarray) -> np.ndarray:
    """The confusion of one class map against its label, the ignore label left out."""
    table = self.table
    return np.asarray(
        metrics.confusion_matrix(classes, label, table.num_classes, table.ignore_label), np.int64
    )

  def summary(self, confusion: np.ndarray) -> dict[str, Any]:
    """What every evaluation reports: `metrics.summarize` and the confusion matrix."""
    summary = metrics.summarize(confusion, self.table.names)
    summary['confusion_matrix'] = np.asarray(confusion).tolist()
    return summary

  def run(self, predict: Predict) -> dict[str, Any]:
    """The split through `predict`, image by image: the summary and `ms_per_image`."""
    confusion = self.empty_confusion()
    seconds = 0.0
    for i in range(len(self.source)):
      example = self.source[i]
      start = time.perf_counter()
      classes = predict(np.asarray(example['image'], np.uint8))
      seconds += time.perf_counter() - start
      confusion += self.confusion_of(classes, example['label'])
    summary = self.summary(confusion)
    summary['images'] = len(self.source)
    summary['ms_per_image'] = 1e3 * seconds / max(len(self.source), 1)
    return summary

  def run_batched(self, confusions: Iterable[np.ndarray]) -> dict[str, Any]:
    """The summary of batches' confusion matrices computed elsewhere (on the devices)."""
    confusion = self.empty_confusion()
    for batch_confusion in confusions:
      confusion += np.asarray(batch_confusion, np.int64)
    return self.summary(confusion)
