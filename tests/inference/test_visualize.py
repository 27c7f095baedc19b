"""Palettes, colourised masks, overlays, and the workdir plots (esnet_jax.inference.visualize, .plots)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esnet_jax.training import plots

from esnet_jax import plots as plots_command
from esnet_jax.inference import visualize
from esnet_jax.data.datasets import SYNTHETIC_CLASSES, cityscapes


def test_generated_colours_are_distinct_deterministic_and_never_black():
  colours = visualize.generated_colours(40)
  assert colours.shape == (40, 3) and colours.dtype == np.uint8
  assert len({tuple(c) for c in colours}) == 40
  assert not (colours == 0).all(axis=1).any()  # black means "not a class"
  np.testing.assert_array_equal(colours, visualize.generated_colours(40))
  np.testing.assert_array_equal(colours[:3], [[128, 0, 0], [0, 128, 0], [128, 128, 0]])


def test_class_colours_prefer_meta_then_cityscapes_then_generated():
  meta = {'colours': [list(c) for c in SYNTHETIC_CLASSES.colours]}
  np.testing.assert_array_equal(visualize.class_colours(8, meta), SYNTHETIC_CLASSES.colours)
  np.testing.assert_array_equal(
      visualize.class_colours(19, {}), cityscapes.cityscapes_class_table().colours
  )
  np.testing.assert_array_equal(visualize.class_colours(5), visualize.generated_colours(5))
  with pytest.raises(visualize.PaletteError, match=r'shape \(8, 3\); expected \(5, 3\)'):
    visualize.class_colours(5, meta)


def test_colourise_maps_ids_to_their_colours_and_non_classes_to_black():
  colours = np.array([[10, 20, 30], [200, 100, 0]], np.uint8)
  class_map = np.array([[0, 1], [255, -1]])
  picture = visualize.colourise(class_map, colours)
  assert picture.dtype == np.uint8 and picture.shape == (2, 2, 3)
  np.testing.assert_array_equal(picture, [[[10, 20, 30], [200, 100, 0]], [[0, 0, 0], [0, 0, 0]]])
  table = visualize.palette(colours)
  assert table.shape == (256, 3) and (table[2:] == 0).all()


def test_overlay_blends_by_alpha_and_leaves_non_class_pixels_alone():
  image = np.full((2, 3, 3), 100, np.uint8)
  class_map = np.array([[0, 1, 255], [1, 0, 7]])
  colours = np.array([[255, 0, 0], [0, 255, 0]], np.uint8)
  np.testing.assert_array_equal(visualize.overlay(image, class_map, colours, 0.0), image)
  full = visualize.overlay(image, class_map, colours, 1.0)
  np.testing.assert_array_equal(full[0, 0], [255, 0, 0])
  np.testing.assert_array_equal(full[1, 0], [0, 255, 0])
  half = visualize.overlay(image, class_map, colours, 0.5)
  np.testing.assert_array_equal(half[0, 0], [178, 50, 50])  # round(0.5*100 + 0.5*255) = 178
  for ignored in (half[0, 2], half[1, 2], full[0, 2]):
    np.testing.assert_array_equal(ignored, [100, 100, 100])
  with pytest.raises(ValueError, match='alpha'):
    visualize.overlay(image, class_map, colours, 1.5)
  with pytest.raises(ValueError, match=r'\(2, 3, 3\) and \(3, 2\)'):
    visualize.overlay(image, class_map.T, colours)


def _fake_workdir(path):
  names = ['road', 'car', 'sky']
  lines = [
      json.dumps(
          {
              'step': s,
              'time': 0.0,
              'train/loss': 2.0 / s,
              'train/learning_rate': 1e-3 * (1 - s / 40),
          }
      )
      for s in (10, 20, 30)
  ]
  lines.append(json.dumps({'step': 30, 'time': 0.0, 'eval/miou': 0.5}))
  lines.append('{"step": 40, "train/lo')  # A line cut short by a killed run.
  (path / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')
  (path / 'eval').mkdir()
  confusion = [[8, 2, 0], [1, 3, 0], [0, 0, 0]]  # sky absent from the labels
  (path / 'eval' / 'step_30.json').write_text(
      json.dumps(
          {
              'step': 30,
              'class_names': names,
              'miou': 0.5,
              'confusion_matrix': confusion,
              'per_class_iou': {'road': 0.727, 'car': 0.5, 'sky': None},
          }
      )
  )
  return path


def test_row_normalised_confusion_is_nan_for_absent_classes():
  confusion = np.array([[8, 2, 0], [1, 3, 0], [0, 0, 0]])
  normalised = plots.row_normalised(confusion)
  np.testing.assert_allclose(normalised[:2], [[0.8, 0.2, 0], [0.25, 0.75, 0]])
  assert np.isnan(normalised[2]).all()


def test_write_plots_writes_three_pngs_from_metrics_and_eval(tmp_path):
  workdir = _fake_workdir(tmp_path)
  metrics = plots.read_metrics(workdir / 'metrics.jsonl')
  np.testing.assert_array_equal(metrics['train/loss'][0], [10, 20, 30])
  np.testing.assert_array_equal(metrics['eval/miou'][1], [0.5])
  written = plots.write_plots(workdir)
  assert [p.name for p in written] == [
      'training_curves.png',
      'confusion_matrix.png',
      'per_class_iou.png',
  ]
  for path in written:
    assert path.parent == workdir / 'plots'
    with Image.open(path) as image:
      assert image.format == 'PNG' and image.width > 300 and image.height > 200
      assert len(np.unique(np.asarray(image.convert('L')))) > 10  # something was drawn


def test_plots_cli_and_failures_that_only_warn(tmp_path, caplog, capsys):
  (tmp_path / 'run').mkdir()
  assert plots_command.main(['--workdir', str(_fake_workdir(tmp_path / 'run'))]) == 0
  assert 'per_class_iou.png' in capsys.readouterr().out
  (tmp_path / 'empty').mkdir()
  assert plots_command.main(['--workdir', str(tmp_path / 'empty')]) == 2
  assert 'Nothing to plot' in capsys.readouterr().err
  with caplog.at_level(logging.WARNING):
    assert plots.write_plots_or_warn(tmp_path / 'empty') == []
  assert 'Could not write plots' in caplog.text


def test_plots_never_replace_their_eval_json_and_are_written_whole(tmp_path, capsys, monkeypatch):
  """An --eval-json kept where a plot goes is refused, untouched; a plot whose writing fails
  half-way leaves the earlier plot as it was, with no temporary file beside it."""
  workdir = _fake_workdir(tmp_path)
  (workdir / 'plots').mkdir()
  kept = workdir / 'plots' / 'per_class_iou.png'
  kept.write_bytes((workdir / 'eval' / 'step_30.json').read_bytes())
  data = kept.read_bytes()
  assert plots_command.main(['--workdir', str(workdir), '--eval-json', str(kept)]) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and err.startswith(
      f'error: plot {kept}: is --eval-json {kept}, which this command reads; refusing'
  )
  assert kept.read_bytes() == data and [p.name for p in (workdir / 'plots').iterdir()] == [
      'per_class_iou.png'
  ]

  kept.unlink()
  written = plots.write_plots(workdir)
  before = {p: p.read_bytes() for p in written}
  from matplotlib.figure import Figure

  def disk_full(self, fname, **kwargs):
    Path(fname).write_bytes(b'\x89PNG half')
    raise OSError(28, 'No space left on device')

  monkeypatch.setattr(Figure, 'savefig', disk_full)
  with pytest.raises(OSError, match='No space left'):
    plots.write_plots(workdir)
  assert {p: p.read_bytes() for p in (workdir / 'plots').iterdir()} == before
