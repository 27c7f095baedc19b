"""esnet_jax.evaluation.metrics: the confusion matrix, IoU, and classes absent from the mean."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from esnet_jax.evaluation import metrics


def test_confusion_matrix_and_iou():
  label = jnp.array([[0, 0, 1, 1], [2, 2, 9, 9]])
  pred = jnp.array([[0, 1, 1, 1], [2, 0, 0, 2]])
  cm = np.asarray(metrics.confusion_matrix(pred, label, num_classes=3, ignore_label=9))
  np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
  iou = metrics.iou(cm)
  np.testing.assert_allclose(iou, [1 / 3, 2 / 3, 1 / 2])
  summary = metrics.summarize(cm, ['a', 'b', 'c'])
  assert summary['miou'] == pytest.approx(np.mean([1 / 3, 2 / 3, 1 / 2]))
  assert summary['pixel_accuracy'] == pytest.approx(4 / 6)
  assert summary['labelled_pixels'] == 6


def test_absent_classes_are_left_out_of_the_mean():
  cm = np.array([[5, 0, 0], [0, 0, 0], [1, 0, 4]])
  iou = metrics.iou(cm)
  assert np.isnan(iou[1])
  assert metrics.summarize(cm, 'abc')['per_class_iou']['b'] is None
  assert metrics.summarize(cm, 'abc')['miou'] == pytest.approx((5 / 6 + 4 / 5) / 2)
