"""Every installed engine on the shipped CamVid weights, against JAX float32 on CamVid val.

The promise of `esnet_jax.deploy.engines` to a user who picks an engine or a precision: float32
on any engine gives JAX's class maps up to float rounding at near-ties; bfloat16 nearly
so; INT8 (the shipped file) stays within half a point of JAX float32's mIoU. CI installs
every engine (the `test` extra), so each line below runs there.
"""

from __future__ import annotations

import numpy as np
import pytest

from esnet_jax.data import datasets
from esnet_jax.deploy import engines
from esnet_jax.evaluation import metrics
from esnet_jax.inference.segmenter import Segmenter

# Bounds on the share of val pixels whose class equals JAX float32's, and on |mIoU
# difference| in points. Measured on 2 cores of an AMD EPYC (Zen 4, AVX-512 VNNI and BF16),
# 2026-12-07, jax 0.12.1, onnxruntime 1.32, openvino 2026.4: see docs/benchmarks.md
# ("Engines"): float32 100.000% and +0.00 points on both runtimes; bfloat16 99.92% (JAX) and
# 99.94% (OpenVINO), +0.03 and +0.02; INT8 99.63% (ONNX Runtime), 99.68% (OpenVINO), +0.05
# and +0.09.
AGREEMENT = {'float32': 0.9999, 'bfloat16': 0.995, 'int8': 0.99}
MIOU_POINTS = {'float32': 0.02, 'bfloat16': 0.2, 'int8': 0.5}


@pytest.fixture(scope='module')
def camvid_val(camvid_root):
  cfg = datasets.default_dataset_config()
  cfg.name, cfg.root = 'camvid', str(camvid_root)
  return datasets.build_source(cfg, 'val')


def _run(segmenter: Segmenter, source) -> tuple[list[np.ndarray], float]:
  table = source.class_table
  confusion = np.zeros((table.num_classes,) * 2, np.int64)
  maps = []
  for i in range(len(source)):
    example = source[i]
    classes = segmenter.predict(example['image'])
    maps.append(classes)
    confusion += np.asarray(
        metrics.confusion_matrix(classes, example['label'], table.num_classes, table.ignore_label)
    )
  return maps, float(np.nanmean(metrics.iou(confusion)))


@pytest.fixture(scope='module')
def jax_float32(camvid_val):
  return _run(Segmenter.from_pretrained('camvid', engine='jax'), camvid_val)


def _cases():
  """Every (engine, precision) an engine runs at all; whether it runs here is the test's."""
  return [
      (name, precision)
      for name, cls in engines.ENGINES.items()
      for precision in cls.precisions
      if (name, precision) != ('jax', 'float32')
  ]


@pytest.mark.end_to_end
@pytest.mark.parametrize('engine,precision', _cases())
def test_engine_class_maps_against_jax_float32(engine, precision, camvid_val, jax_float32):
  why = engines.unavailable(engine, precision)
  if why is not None:
    pytest.skip(f'{engine} {precision}: {why}')
  segmenter = Segmenter.from_pretrained('camvid', engine=engine, precision=precision)
  maps, miou = _run(segmenter, camvid_val)
  reference, reference_miou = jax_float32
  agree = np.mean([np.mean(a == b) for a, b in zip(maps, reference)])
  print(
      f'{engine} {precision}: {100 * agree:.3f}% of pixels as JAX float32; mIoU '
      f'{100 * miou:.2f}% vs {100 * reference_miou:.2f}%'
  )
  assert agree >= AGREEMENT[precision]
  assert abs(miou - reference_miou) * 100 <= MIOU_POINTS[precision]
