"""Shipped pretrained weights: registry, integrity check, loading by name everywhere."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, random_variables
from esnet_jax.weights import convert, pretrained, resolver
from esnet_jax.data.datasets.camvid import CAMVID_CLASSES, camvid_source
from esnet_jax.inference.segmenter import Segmenter


@pytest.fixture
def toy_registry(tmp_path, monkeypatch):
  """A registry entry 'toy' whose weights file lives in tmp_path."""
  variables = random_variables(CAMVID_CLASSES.num_classes, seed=3)
  np.savez(tmp_path / 'toy.npz', **convert.flax_to_torch(variables))
  entry = pretrained.PretrainedWeights(
      name='toy',
      filename='toy.npz',
      sha256=pretrained.file_sha256(tmp_path / 'toy.npz'),
      dataset='camvid',
      class_table=CAMVID_CLASSES,
      config='configs/camvid.py',
      train_split='train',
      val_miou=0.5,
      train_only_val_miou=0.5,
  )
  monkeypatch.setattr(pretrained, 'WEIGHTS_DIR', tmp_path)
  monkeypatch.setitem(pretrained.PRETRAINED, 'toy', entry)
  return variables, entry


def test_from_pretrained_loads_registered_weights_with_their_class_table(toy_registry):
  variables, _ = toy_registry
  seg = Segmenter.from_pretrained('toy')
  image = np.random.default_rng(0).integers(0, 256, (24, 32, 3), np.uint8)
  np.testing.assert_array_equal(seg.predict(image), Segmenter(variables).predict(image))
  assert seg.meta['class_names'] == list(CAMVID_CLASSES.names)
  assert seg.meta['colours'][4] == list(CAMVID_CLASSES.colours[4])
  assert seg.meta['ignore_label'] == 11


def test_altered_weights_file_is_refused_naming_file_and_hashes(toy_registry, tmp_path):
  _, entry = toy_registry
  data = bytearray((tmp_path / 'toy.npz').read_bytes())
  data[-100] ^= 0xFF
  (tmp_path / 'toy.npz').write_bytes(bytes(data))
  with pytest.raises(
      pretrained.PretrainedError,
      match=rf'toy.npz has sha256 [0-9a-f]{{64}}, expected {entry.sha256}',
  ):
    Segmenter.from_pretrained('toy')
  (tmp_path / 'toy.npz').unlink()
  with pytest.raises(pretrained.PretrainedError, match='toy.npz is missing'):
    resolver.load('pretrained:toy')


def test_unknown_name_lists_what_is_available(toy_registry):
  with pytest.raises(pretrained.PretrainedError, match=r"'nope'; available: .*toy"):
    Segmenter.from_pretrained('nope')


@pytest.mark.end_to_end
def test_predict_cli_accepts_pretrained_name_and_errors_in_one_line(tmp_path):
  images = tmp_path / 'in'
  images.mkdir()
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'esnet_jax.predict',
          '--checkpoint',
          'pretrained:nope',
          '--input',
          str(images),
          '--output',
          str(tmp_path / 'out'),
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert result.returncode == 2
  assert (
      result.stderr.strip()
      .splitlines()[-1]
      .startswith("error: Unknown pretrained weights 'nope'; available:")
  )


def test_shipped_camvid_weights_are_small_intact_and_camvid_shaped():
  path = pretrained.weights_file('camvid')
  assert path.stat().st_size <= 8_000_000
  seg = Segmenter.from_pretrained('camvid')
  assert seg.num_classes == 11
  assert seg.meta['class_names'] == list(CAMVID_CLASSES.names)


def test_shipped_camvid_entry_states_its_training_split_and_its_recipes_held_out_figure():
  entry = pretrained.get('camvid')
  config = importlib.import_module(entry.config.removesuffix('.py').replace('/', '.'))
  assert config.get_config().dataset.train_split == entry.train_split
  assert Segmenter.from_pretrained('camvid').meta['train_split'] == entry.train_split
  # The held-out figure: the same config trained on train only (docs/camvid/trials.md).
  record = json.loads((REPO / 'docs/camvid/candidate-2026-12-07/eval_step_5850.json').read_text())
  assert round(record['miou'], 4) == entry.train_only_val_miou


@pytest.mark.end_to_end
def test_shipped_camvid_weights_reproduce_the_readme_val_miou(camvid_root, tmp_path):
  """The README's documented eval command, on ../shared/data/camvid val (101 images)."""
  workdir = tmp_path / 'eval'
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'esnet_jax.main',
          '--config',
          'configs/camvid.py',
          '--workdir',
          str(workdir),
          '--config.mode=eval',
          '--config.eval.checkpoint=pretrained:camvid',
          f'--config.dataset.root={camvid_root}',
      ],
      cwd=REPO,
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / 'eval' / 'eval_pretrained_camvid.json').read_text())
  # Every labelled pixel of the 101 val images, at full 360x480 resolution.
  val = camvid_source(camvid_root, 'val')
  assert len(val) == 101
  assert summary['labelled_pixels'] == sum(
      int((val[i]['label'] != 11).sum()) for i in range(len(val))
  )
  assert abs(summary['miou'] - pretrained.get('camvid').val_miou) < 0.002
