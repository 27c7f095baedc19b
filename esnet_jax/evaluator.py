"""The mIoU of a `Segmenter` on a dataset split: eval mode on any inference engine.

Training's periodic evaluation and eval mode on JAX run the pmapped eval step over the
input pipeline's batches (`train.evaluate`). Eval mode on another engine (OpenVINO, ONNX
Runtime) or precision (INT8) measures what a deployment computes instead: each image of
the split goes through `Segmenter.predict` as a user's image would (normalised with the
dataset's mean and std, padded to multiples of 8, the views of `config.eval.scales` and
`flip`, `dataset.eval_scale` folded into the scales), and the class map is compared at
full label resolution. The summary has the fields of the JAX path
(`metrics.summarize`), plus the engine, the precision and the mean time per image.
"""

from __future__ import annotations

import time
from typing import Any

import ml_collections
import numpy as np

from esnet_jax import datasets, metrics
from esnet_jax.inference import Segmenter


class SegmenterEvaluator:
  """One split of a dataset config; `run(segmenter)` returns its metrics."""

  def __init__(self, dataset_cfg: ml_collections.ConfigDict, split: str | None = None):
    self.split = split or dataset_cfg.eval_split
    self.source = datasets.build_source(dataset_cfg, self.split)
    self.table = self.source.class_table

  def run(self, segmenter: Segmenter) -> dict[str, Any]:
    """Metrics of SEGMENTER's class maps against the split's labels (ignore label excluded)."""
    table = self.table
    confusion = np.zeros((table.num_classes,) * 2, np.int64)
    seconds = 0.0
    for i in range(len(self.source)):
      example = self.source[i]
      start = time.perf_counter()
      classes = segmenter.predict(np.asarray(example['image'], np.uint8))
      seconds += time.perf_counter() - start
      confusion += np.asarray(
          metrics.confusion_matrix(
              classes, example['label'], table.num_classes, table.ignore_label
          ),
          np.int64,
      )
    summary = metrics.summarize(confusion, table.names)
    summary['confusion_matrix'] = confusion.tolist()
    summary['engine'] = segmenter.engine_name
    summary['precision'] = segmenter.precision
    summary['ms_per_image'] = 1e3 * seconds / max(len(self.source), 1)
    return summary
