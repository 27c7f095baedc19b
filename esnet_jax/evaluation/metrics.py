"""Segmentation metrics: a confusion matrix summed on devices, ratios taken on the host.

Confusion matrices add across devices, hosts and batches, so evaluation psums
them and only the final division happens once, in numpy.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np


def confusion_matrix(
    pred: jax.Array, label: jax.Array, num_classes: int, ignore_label: int
) -> jax.Array:
  """[num_classes, num_classes] int32 counts; rows are true classes, columns predictions.

  Pixels labelled `ignore_label` (or any value outside 0..num_classes-1) are left out.
  """
  label = label.reshape(-1).astype(jnp.int32)
  pred = pred.reshape(-1).astype(jnp.int32)
  valid = (label != ignore_label) & (label >= 0) & (label < num_classes)
  index = jnp.where(valid, label * num_classes + pred, 0)
  counts = jnp.bincount(index, weights=valid.astype(jnp.int32), length=num_classes**2)
  return counts.astype(jnp.int32).reshape(num_classes, num_classes)


def iou(confusion: np.ndarray) -> np.ndarray:
  """Per-class intersection over union; NaN for a class absent from labels and predictions."""
  confusion = np.asarray(confusion, np.float64)
  tp = np.diag(confusion)
  union = confusion.sum(0) + confusion.sum(1) - tp
  with np.errstate(invalid='ignore', divide='ignore'):
    return np.where(union > 0, tp / union, np.nan)


def summarize(confusion: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
  """mIoU (over classes present), per-class IoU and pixel accuracy as plain floats."""
  confusion = np.asarray(confusion, np.int64)
  per_class = iou(confusion)
  total = confusion.sum()
  return {
      'miou': float(np.nanmean(per_class)) if np.isfinite(per_class).any() else 0.0,
      'pixel_accuracy': float(np.trace(confusion) / total) if total else 0.0,
      'per_class_iou': {
          name: (None if np.isnan(v) else float(v)) for name, v in zip(class_names, per_class)
      },
      'labelled_pixels': int(total),
  }
