"""esnet_jax.evaluation.onnx_eval: an exported file's mIoU, as `python -m esnet_jax.onnx_eval` reports it."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, random_variables, subprocess_env, write_onnx_export
from esnet_jax.data import dataset_configs, datasets
from esnet_jax.inference.segmenter import Segmenter
from esnet_jax.evaluation import metrics, onnx_eval
from esnet_jax import onnx_eval as onnx_eval_command
from esnet_jax.errors import OptionError

pytest.importorskip('onnx')
pytest.importorskip('onnxruntime')

QUICKSTART = REPO / 'configs/quickstart.py'


def _write(tmp_path, num_classes, **size):
  variables = random_variables(num_classes, seed=3)
  return variables, write_onnx_export(tmp_path / 'm.onnx', variables, **size)


@pytest.mark.end_to_end
def test_miou_of_the_file_is_that_of_the_same_weights_in_jax(tmp_path):
  """On the quick start's generated val scenes: the same confusion as Segmenter.predict's."""
  dataset_cfg = dataset_configs.load_dataset_config(QUICKSTART, 'config')
  dataset_cfg.num_eval = 6
  table = datasets.get_class_table(dataset_cfg)
  variables, path = _write(tmp_path, table.num_classes)
  source = datasets.build_source(dataset_cfg, dataset_cfg.eval_split)
  segmenter = Segmenter(variables, kernels='xla')
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


def test_a_file_fixed_to_another_size_is_refused_by_name_before_evaluating(tmp_path, monkeypatch):
  _no_evaluation(monkeypatch)
  _, path = _write(tmp_path, 8, height=64, width=64)
  with pytest.raises(OptionError, match=r'takes 128x256 images .* not 64x64'):
    onnx_eval.evaluate(path, QUICKSTART)
  _, path = _write(tmp_path, 8, width=64)  # One side fixed, the other symbolic.
  with pytest.raises(OptionError, match=r'takes 128x256 images .* not anyx64'):
    onnx_eval.evaluate(path, QUICKSTART)


# ---------------------------------------------------------------------------------------
# The graph, its JSON and --json checked before any evaluation (issue 38).


def _error_line(capsys) -> str:
  err = capsys.readouterr().err
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith('error: '), err
  return lines[0]


def _no_evaluation(monkeypatch):
  def session(*args):
    raise AssertionError('an ONNX Runtime session was made before the checks')

  monkeypatch.setattr(onnx_eval, '_session', session)


def test_a_json_that_disagrees_with_its_graph_is_one_line(tmp_path, capsys, monkeypatch):
  """A JSON that says 8 classes (the quick start's) beside an 11-class graph: refused, not a
  mIoU computed on the JSON's word."""
  _, path = _write(tmp_path, 11)
  json_path = path.with_name(path.name + '.json')
  meta = json.loads(json_path.read_text())
  json_path.write_text(json.dumps({**meta, 'num_classes': 8}))
  _no_evaluation(monkeypatch)
  assert onnx_eval_command.main(['--model', str(path), '--config', str(QUICKSTART)]) == 2
  assert 'the graph gives 11 classes, m.onnx.json says 8' in _error_line(capsys)
  json_path.write_text('{"num_classes": 11, ')  # Cut short.
  assert onnx_eval_command.main(['--model', str(path), '--config', str(QUICKSTART)]) == 2
  assert 'to hold the JSON esnet_jax.deploy.export wrote' in _error_line(capsys)


def test_json_onto_a_folder_or_an_input_fails_before_evaluating(tmp_path, capsys, monkeypatch):
  _, path = _write(tmp_path, 8)
  folder = tmp_path / 'results'
  folder.mkdir()

  def evaluate(*args):
    raise AssertionError('evaluated before --json was checked')

  monkeypatch.setattr(onnx_eval, 'evaluate', evaluate)
  args = ['--model', str(path), '--config', str(QUICKSTART), '--json']
  assert onnx_eval_command.main([*args, str(folder)]) == 2
  assert f'--json {folder}: is a folder' in _error_line(capsys)
  before = path.read_bytes()
  assert onnx_eval_command.main([*args, str(path)]) == 2
  assert f'--json {path}: is --model {path}' in _error_line(capsys)
  assert path.read_bytes() == before
