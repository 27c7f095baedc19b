"""esnet_jax.onnx_eval: an exported file's mIoU, as `python -m esnet_jax.onnx_eval` reports it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, random_variables, subprocess_env, write_onnx_export
from esnet_jax import dataset_configs, datasets, inference, metrics, onnx_eval
from esnet_jax.errors import OptionError

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

QUICKSTART = REPO / 'configs/quickstart.py'


def _write(tmp_path, num_classes, **size):
  variables = random_variables(num_classes, seed=3)
  return variables, write_onnx_export(tmp_path / 'm.onnx', variables, **size)


def test_miou_of_the_file_is_that_of_the_same_weights_in_jax(tmp_path):
  """On the quick start's generated val scenes: the same confusion as Segmenter.predict's."""
  dataset_cfg = dataset_configs.load_dataset_config(QUICKSTART, 'config')
  dataset_cfg.num_eval = 6
  table = datasets.get_class_table(dataset_cfg)
  variables, path = _write(tmp_path, table.num_classes)
  source = datasets.build_source(dataset_cfg, dataset_cfg.eval_split)
  segmenter = inference.Segmenter(variables, kernels='xla')
  confusion = np.zeros((table.num_classes,) * 2, np.int64)
  for i in range(len(source)):
    example = source[i]
    pred = segmenter.predict(example['image'])
    confusion += np.asarray(
        metrics.confusion_matrix(pred, example['label'], table.num_classes, table.ignore_label)
    )
  expected = float(np.nanmean(metrics.iou(confusion)))

  config = tmp_path / 'six.py'
  config.write_text(
      'from configs import quickstart\n\n\ndef get_config():\n'
      '  config = quickstart.get_config()\n  config.dataset.num_eval = 6\n  return config\n'
  )
  out = tmp_path / 'result.json'
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'esnet_jax.onnx_eval',
          '--model',
          str(path),
          '--config',
          str(config),
          '--json',
          str(out),
      ],
      cwd=REPO,
      env=subprocess_env(),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['images'] == 6 and result['split'] == dataset_cfg.eval_split
  assert result['miou'] == pytest.approx(expected, abs=2e-3)
  assert f"mIoU {100 * result['miou']:.2f}%" in done.stdout
  assert list(result['iou']) == list(table.names)


def test_files_that_cannot_be_evaluated_are_named_with_what_was_expected(tmp_path):
  with pytest.raises(OptionError, match=r"model='.*missing.onnx': expected an existing"):
    onnx_eval.evaluate(tmp_path / 'missing.onnx', QUICKSTART)
  bare = tmp_path / 'bare.onnx'
  bare.write_bytes(b'not onnx')
  with pytest.raises(OptionError, match=r'with its bare.onnx.json beside it'):
    onnx_eval.evaluate(bare, QUICKSTART)
  _, path = _write(tmp_path, 5)
  with pytest.raises(OptionError, match=r'expected 8 classes as synthetic has, not 5'):
    onnx_eval.evaluate(path, QUICKSTART)
  with pytest.raises(OptionError, match=r"config='.*nope.py': expected a config file"):
    onnx_eval.evaluate(path, tmp_path / 'nope.py')


def test_a_file_fixed_to_another_size_is_refused_by_name(tmp_path):
  _, path = _write(tmp_path, 8, height=64, width=64)
  with pytest.raises(OptionError, match=r'takes 128x256 images .* not 64x64'):
    onnx_eval.evaluate(path, QUICKSTART)
