"""Predict: outputs per image and video, TTA, bad inputs, config mode, Cityscapes submission."""

from __future__ import annotations

import glob
import importlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import png_claiming, REPO, random_variables
from configs import smoke
from esnet_jax.weights import checkpoints
from esnet_jax.inference import predict, visualize
from esnet_jax import predict as predict_command
from esnet_jax.training import trainer
from esnet_jax.data.datasets import SYNTHETIC_CLASSES, cityscapes
from esnet_jax.data.datasets.synthetic import render_scene
from esnet_jax.inference.segmenter import Segmenter


def _scene(seed: int, size=(32, 48)) -> np.ndarray:
  return render_scene(np.random.default_rng(seed), size)[0]


def _save(image: np.ndarray, path: Path) -> Path:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(image).save(path)
  return path


def _read(path: Path) -> np.ndarray:
  with Image.open(path) as image:
    return np.asarray(image)


@pytest.fixture(scope='module')
def checkpoint8(tmp_path_factory) -> Path:
  """An 8-class checkpoint with the synthetic dataset's meta (colours, normalisation)."""
  path = tmp_path_factory.mktemp('ckpt8')
  checkpoints.save_variables(
      path,
      random_variables(8),
      num_classes=8,
      meta={
          'class_names': list(SYNTHETIC_CLASSES.names),
          'colours': [list(c) for c in SYNTHETIC_CLASSES.colours],
          'mean': [120.0, 115.0, 100.0],
          'std': [60.0, 58.0, 57.0],
      },
  )
  return path


@pytest.fixture(scope='module')
def segmenter8(checkpoint8) -> Segmenter:
  return Segmenter.from_checkpoint(checkpoint8)


def test_images_give_class_colour_and_overlay_pngs_at_their_size(
    tmp_path, checkpoint8, segmenter8, capsys
):
  src = tmp_path / 'in'
  images = {'a/one': _scene(0), 'a/two': _scene(1), 'b/odd': _scene(2, (37, 45))}
  for name, image in images.items():
    _save(image, src / f'{name}.png')
  Image.fromarray(_scene(3)).convert('RGBA').save(src / 'rgba.png')  # converted to RGB
  (src / 'broken.png').write_bytes(b'\x89PNG\r\n\x1a\n not really')
  (src / 'notes.txt').write_text('not an image')
  out = tmp_path / 'out'
  rc = predict_command.main(
      [
          '--checkpoint',
          str(checkpoint8),
          '--input',
          str(src),
          '--output',
          str(out),
          '--batch-size',
          '2',
          '--alpha',
          '0.4',
      ]
  )
  err = capsys.readouterr().err
  assert rc == 1  # one input failed ...
  assert f'Cannot read image {src / "broken.png"}' in err  # ... named ...
  assert '4 input(s) done, 1 failed' in err and 'skipped 1 file(s)' in err  # ... rest done.
  colours = np.asarray(SYNTHETIC_CLASSES.colours, np.uint8)
  for name, image in images.items():
    classes = _read(out / f'{name}_classes.png')
    assert classes.dtype == np.uint8 and classes.shape == image.shape[:2]
    assert (classes == segmenter8.predict(image)).mean() > 0.999  # same net, no TTA
    assert len(np.unique(classes)) > 1 and classes.max() < 8
    np.testing.assert_array_equal(_read(out / f'{name}_colour.png'), colours[classes])
    np.testing.assert_array_equal(
        _read(out / f'{name}_overlay.png'), visualize.overlay(image, classes, colours, 0.4)
    )
  assert _read(out / 'rgba_overlay.png').shape == (32, 48, 3)
  assert not list(out.glob('broken*')) and not list(out.glob('notes*'))


def test_video_gives_an_overlay_video_and_a_corrupt_one_is_reported(tmp_path, checkpoint8, capsys):
  av = pytest.importorskip('av')
  from esnet_jax.data import video

  src = tmp_path / 'in'
  src.mkdir()
  with video.VideoWriter(src / 'clip.mp4', 10, (32, 48)) as writer:
    for seed in range(5):
      writer.write(_scene(seed))
  (src / 'corrupt.mp4').write_bytes(os.urandom(2048))
  _save(_scene(6), src / 'still.png')
  out = tmp_path / 'out'
  rc = predict_command.main(
      [
          '--checkpoint',
          str(checkpoint8),
          '--input',
          str(src / 'clip.mp4'),
          str(src / 'corrupt.mp4'),
          str(src / 'still.png'),
          '--output',
          str(out),
          '--batch-size',
          '2',
      ]
  )
  err = capsys.readouterr().err
  assert rc == 1 and str(src / 'corrupt.mp4') in err and '2 input(s) done, 1 failed' in err
  assert (out / 'still_overlay.png').is_file() and not (out / 'corrupt_overlay.mp4').exists()
  with av.open(str(out / 'clip_overlay.mp4')) as container:
    frames = [f.to_ndarray(format='rgb24') for f in container.decode(video=0)]
  assert len(frames) == 5 and frames[0].shape == (32, 48, 3)


@pytest.mark.parametrize(
    'args, message',
    [
        (['--input', '{empty}'], 'No images or videos found in'),
        (['--input', '{empty}/*.png'], 'No images or videos found in'),
        (['--input', '{empty}/missing.png'], 'missing.png does not exist'),
        (
            ['--input', '{empty}', '--palette', 'cityscapes'],
            'is for 8 classes, but the requested ' 'dataset/palette has 19',
        ),
        (['--input', '{empty}', '--cityscapes-submission'], 'is for 8 classes'),
    ],
)
def test_bad_requests_fail_with_a_message(tmp_path, checkpoint8, capsys, args, message):
  (tmp_path / 'empty').mkdir()
  args = [a.format(empty=tmp_path / 'empty') for a in args]
  rc = predict_command.main(
      ['--checkpoint', str(checkpoint8), '--output', str(tmp_path / 'o'), *args]
  )
  assert rc == 2
  assert message in capsys.readouterr().err


def test_inputs_whose_results_would_collide_are_not_overwritten(tmp_path, checkpoint8, capsys):
  first = _save(_scene(7), tmp_path / 'd1' / 'x.png')
  second = _save(_scene(8), tmp_path / 'd2' / 'x.png')
  out = tmp_path / 'out'
  rc = predict_command.main(
      ['--checkpoint', str(checkpoint8), '--input', str(first), str(second), '--output', str(out)]
  )
  assert rc == 1
  assert f'{second}: its results would overwrite those of {first}' in capsys.readouterr().err
  overlay = _read(out / 'x_overlay.png')
  assert (
      np.abs(overlay.astype(int) - _scene(7)).mean()
      < np.abs(overlay.astype(int) - _scene(8)).mean()
  )


def test_a_workdir_whose_newest_step_is_damaged_predicts_with_the_newest_intact_one(
    tmp_path, checkpoint8, segmenter8, capsys
):
  """Read-only use skips a damaged `latest` (leaving it in place); a damaged `best` with
  nothing older is one error naming the step and why."""
  workdir = tmp_path / 'work'
  meta = checkpoints.restore_meta(checkpoint8)
  meta.pop('num_classes')
  for step, seed in ((1, 0), (2, 1)):
    for sub in ('checkpoints', 'best'):
      if sub == 'checkpoints' or step == 2:
        checkpoints.save_variables(
            workdir / sub, random_variables(8, seed), num_classes=8, meta=meta, step=step
        )
  for damaged in (workdir / 'checkpoints' / '2', workdir / 'best' / '2'):
    for f in damaged.rglob('*'):
      if f.is_file():
        f.write_bytes(b'\0' * f.stat().st_size)
  image = _save(_scene(3), tmp_path / 'in' / 'x.png')
  capsys.readouterr()
  assert (
      predict_command.main(
          ['--checkpoint', str(workdir), '--input', str(image), '--output', str(tmp_path / 'out')]
      )
      == 0
  )
  err = capsys.readouterr().err
  assert f'warning: checkpoint step 2 in {workdir / "checkpoints"} cannot be restored' in err
  assert 'using step 1 instead' in err
  # Step 1 holds checkpoint8's variables (seed 0), so segmenter8's classes.
  classes = _read(tmp_path / 'out' / 'x_classes.png')
  assert (classes == segmenter8.predict(_scene(3))).mean() > 0.999
  assert (workdir / 'checkpoints' / '2').is_dir()  # Left in place by a reader.
  assert (
      predict_command.main(
          [
              '--checkpoint',
              str(workdir),
              '--which',
              'best',
              '--input',
              str(image),
              '--output',
              str(tmp_path / 'out2'),
          ]
      )
      == 2
  )
  err = capsys.readouterr().err
  assert err.startswith(f'error: No intact checkpoint in {workdir / "best"}: step 2: ')
  assert err.count('\n') == 1


@pytest.mark.end_to_end
def test_demo_image_and_config_mode_through_main(tmp_path, checkpoint8):
  demo = tmp_path / 'scene.png'
  assert predict_command.main(['--demo-image', str(demo), '--demo-size', '40', '56']) == 0
  assert _read(demo).shape == (40, 56, 3)
  workdir = tmp_path / 'work'
  cmd = [
      sys.executable,
      '-m',
      'esnet_jax.main',
      '--config',
      'configs/smoke.py',
      '--workdir',
      str(workdir),
      '--config.mode=predict',
      f'--config.predict.input={demo}',
      f'--config.predict.checkpoint={checkpoint8}',
      '--config.predict.palette=dataset',
      '--config.eval.flip=True',
  ]
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr
  assert '1 input(s) done, 0 failed' in done.stderr
  overlay = _read(workdir / 'predictions' / 'scene_overlay.png')
  assert overlay.shape == (40, 56, 3)


def test_config_mode_errors_are_config_errors(tmp_path, checkpoint8):
  from esnet_jax.config.validation import ConfigError

  config = smoke.get_config()
  config.predict.checkpoint = str(checkpoint8)
  with pytest.raises(ConfigError, match='config.predict.input is empty'):
    predict.predict_from_config(config, tmp_path)
  config.predict.input = str(tmp_path)
  config.predict.alpha = 2.0
  with pytest.raises(ConfigError, match=r'config.predict.alpha=2.0'):
    predict.predict_from_config(config, tmp_path)
  config.predict.alpha = 0.5
  with pytest.raises(ConfigError, match='No images or videos found'):
    predict.predict_from_config(config, tmp_path)


_CITIES = ('aachen', 'bonn', 'zurich')


def _cityscapes_layout(
    root: Path,
    images: dict[str, np.ndarray],
    predicted_train_ids: dict[str, np.ndarray],
    seed: int = 0,
) -> None:
  """Ground truth label ids: mostly the prediction, partly other classes and ignored ids.

  Built from the network's own prediction so that IoUs are neither 0 nor 1, with
  unlabelled/void ids (ignored by both evaluations) and classes absent from both
  the labels and the predictions (NaN in both).
  """
  from cityscapesscripts.helpers.labels import labels

  rng = np.random.default_rng(seed)
  evaluated = [l.id for l in labels if 0 <= l.trainId < 255][:12]
  void = [l.id for l in labels if l.trainId in (255, -1) and l.id >= 0]
  for frame, image in images.items():
    city = frame.split('_')[0]
    _save(image, root / 'leftImg8bit' / 'val' / city / f'{frame}_leftImg8bit.png')
    label = cityscapes.train_ids_to_label_ids(predicted_train_ids[frame])
    draw = rng.random(label.shape)
    label = np.where(draw < 0.25, rng.choice(evaluated, label.shape), label)
    label = np.where(draw > 0.85, rng.choice(void, label.shape), label).astype(np.uint8)
    _save(label, root / 'gtFine' / 'val' / city / f'{frame}_gtFine_labelIds.png')


def test_cityscapes_submission_scores_like_cityscapesscripts_and_our_eval(tmp_path, monkeypatch):
  checkpoint = tmp_path / 'ckpt19'
  checkpoints.save_variables(checkpoint, random_variables(19, seed=1), num_classes=19)
  frames = [
      f'{city}_{seq:06d}_{frame:06d}' for city in _CITIES for seq, frame in ((0, 19), (1, 42))
  ]
  images = {frame: _scene(10 + i) for i, frame in enumerate(frames)}
  segmenter = Segmenter.from_checkpoint(checkpoint)
  predicted = dict(zip(frames, segmenter(np.stack(list(images.values())))))
  root = tmp_path / 'cityscapes'
  _cityscapes_layout(root, images, predicted)

  results = tmp_path / 'results'
  assert (
      predict_command.main(
          [
              '--checkpoint',
              str(checkpoint),
              '--input',
              str(root / 'leftImg8bit' / 'val'),
              '--output',
              str(results),
              '--cityscapes-submission',
              '--batch-size',
              '6',
          ]
      )
      == 0
  )
  written = sorted(p.relative_to(results).as_posix() for p in results.rglob('*.png'))
  assert written == sorted(f'{f.split("_")[0]}/{f}_labelIds.png' for f in frames)
  for frame in frames:
    label_ids = _read(results / frame.split('_')[0] / f'{frame}_labelIds.png')
    np.testing.assert_array_equal(label_ids, cityscapes.train_ids_to_label_ids(predicted[frame]))
    np.testing.assert_array_equal(cityscapes.label_ids_to_train_ids(label_ids), predicted[frame])

  config = smoke.get_config()
  config.dataset.name = 'cityscapes'
  config.dataset.root = str(root)
  config.eval.checkpoint = str(checkpoint)
  workdir = tmp_path / 'eval_workdir'
  ours = trainer.evaluate_checkpoint(config, workdir)
  assert (workdir / 'plots' / 'confusion_matrix.png').is_file()  # the eval's plots hook

  monkeypatch.setenv('CITYSCAPES_DATASET', str(root))
  monkeypatch.setenv('CITYSCAPES_RESULTS', str(results))
  official = importlib.import_module('cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling')
  args = official.args
  monkeypatch.setattr(args, 'evalInstLevelScore', False)  # needs *_instanceIds.png
  monkeypatch.setattr(args, 'JSONOutput', False)
  monkeypatch.setattr(args, 'quiet', True)
  monkeypatch.setattr(args, 'predictionPath', None)
  monkeypatch.setattr(args, 'predictionWalk', None)
  ground_truth = sorted(glob.glob(str(root / 'gtFine' / 'val' / '*' / '*_gtFine_labelIds.png')))
  predictions = [official.getPrediction(args, gt) for gt in ground_truth]
  result = official.evaluateImgLists(predictions, ground_truth, args)

  # Same definitions: IoU = TP / (TP + FP + FN) over pixels whose label is evaluated
  # (void/ignoreInEval ids are ignore 255 for us), NaN when a class is in neither the
  # labels nor the predictions, mIoU = mean over the non-NaN classes of the 19.
  assert abs(result['averageScoreClasses'] - ours['miou']) < 1e-6
  for name, iou in ours['per_class_iou'].items():
    theirs = result['classScores'][name]
    assert (iou is None and np.isnan(theirs)) or abs(iou - theirs) < 1e-12, name
  values = [v for v in ours['per_class_iou'].values() if v is not None]
  assert None in ours['per_class_iou'].values() and 0.2 < ours['miou'] < 0.9
  assert len(set(values)) > 5


# ---------------------------------------------------------------------------------------
# Nothing a user already has is lost (issue 38).


def _snapshot(folder: Path) -> dict[Path, bytes]:
  """Every file under FOLDER (hidden ones too) with its bytes."""
  return {p: p.read_bytes() for p in sorted(folder.rglob('*')) if p.is_file()}


def _error_lines(err: str) -> list[str]:
  return [line for line in err.splitlines() if line.startswith('error:')]


@pytest.mark.end_to_end
def test_a_shell_glob_that_passes_earlier_results_back_is_refused(tmp_path, checkpoint8):
  """`--input photos/*.png --output photos` after a first run there: `photos/a_classes.png`
  is both an input and the result of `photos/a.png`; the run is refused, nothing changes."""
  photos = tmp_path / 'photos'
  first = [_save(_scene(0), photos / 'a.png'), _save(_scene(1), photos / 'b.png')]
  argv = ['--checkpoint', str(checkpoint8), '--input', *map(str, first), '--output', str(photos)]
  assert (
      predict_command.main(argv) == 0
  )  # Results beside the images: allowed while nothing clashes.
  before = _snapshot(photos)
  assert len(before) == 8
  expanded = sorted(glob.glob(str(photos / '*.png')))  # What the shell passes.
  cmd = [sys.executable, '-m', 'esnet_jax.predict', '--checkpoint', str(checkpoint8)]
  cmd += ['--input', *expanded, '--output', str(photos)]
  env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get('PYTHONPATH', ''))
  done = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert done.returncode == 2, done.stderr
  lines = [line for line in done.stderr.splitlines() if line.strip()]
  assert _error_lines(done.stderr) == [lines[-1]]
  assert (
      f'the result {photos / "a_classes.png"} of {photos / "a.png"} would replace '
      f'{photos / "a_classes.png"}, which is one of the inputs' in lines[-1]
  )
  assert _snapshot(photos) == before  # Byte for byte, and no new file.


@pytest.mark.parametrize(
    'inputs, output, message',
    [
        (['{photos}'], '{photos}', '--output {photos}: is or holds --input {photos}, '),
        (['{photos}/sub'], '{photos}', '--output {photos}: is or holds --input {photos}/sub, '),
        (['{photos}/*.png'], '{photos}', '--output {photos}: is or holds --input {photos}/*.png'),
        (['{photos}'], '{photos}/a.png', '--output {photos}/a.png: is a file; expected a folder.'),
        (['{photos}'], '{photos}/a.png/x', '{photos}/a.png is not a folder'),
    ],
)
def test_an_output_folder_that_would_hide_the_inputs_or_is_no_folder_is_refused(
    tmp_path, checkpoint8, capsys, inputs, output, message
):
  photos = tmp_path / 'photos'
  _save(_scene(0), photos / 'a.png')
  _save(_scene(1), photos / 'sub' / 'b.png')
  before = _snapshot(tmp_path)
  fill = lambda s: s.format(photos=photos)
  rc = predict_command.main(
      ['--checkpoint', str(checkpoint8), '--input', *map(fill, inputs), '--output', fill(output)]
  )
  err = capsys.readouterr().err
  assert rc == 2
  assert _error_lines(err) == [err.strip()] and fill(message) in err
  assert _snapshot(tmp_path) == before


@pytest.mark.parametrize('scales', ['inf', 'nan', '1,inf'])
def test_scales_must_be_finite(tmp_path, checkpoint8, capsys, scales):
  image = _save(_scene(0), tmp_path / 'a.png')
  argv = ['--checkpoint', str(checkpoint8), '--input', str(image), '--output', str(tmp_path / 'o')]
  assert predict_command.main([*argv, '--scales', scales]) == 2
  err = capsys.readouterr().err
  assert _error_lines(err) == [err.strip()]
  assert err.startswith('error: --scales=(') and 'positive, finite scales' in err
  assert not (tmp_path / 'o').exists()


def test_scales_that_would_not_fit_in_memory_fail_per_file_naming_it(
    tmp_path, checkpoint8, capsys, monkeypatch
):
  """`--scales 200` (meant as 2.00) on 32x48 images asks for ~8 GB: each image fails with
  one line naming --scales, the file and the sizes, before the network runs."""
  from esnet_jax.system import memory_budget
  from esnet_jax.errors import MemoryBudgetError

  monkeypatch.setattr(memory_budget, 'available_bytes', lambda: 2 * 10**9)
  images = [_save(_scene(i), tmp_path / 'in' / f'{i}.png') for i in range(2)]
  out = tmp_path / 'out'
  rc = predict_command.main(
      ['--checkpoint', str(checkpoint8), '--input', *map(str, images), '--output', str(out)]
      + ['--scales', '200']
  )
  err = capsys.readouterr().err
  assert rc == 1 and '0 input(s) done, 2 failed' in err
  for image in images:
    assert (
        f'error: --scales 200 on {image} (32x48) would need about 7.9 GB of memory; this '
        'machine has 2.0 GB free.' in err
    )
  assert not out.exists()
  # The library's own check, for callers of Segmenter.predict.
  segmenter = Segmenter(random_variables(8), scales=(0.5, 200), flip=True)
  with pytest.raises(
      MemoryBudgetError,
      match=r'^Segmenter.predict on images of shape \(1, 32, 48, 3\) at scales 0.5, 200 with '
      r'flip would need about 15.7 GB',
  ):
    segmenter.predict(_scene(0))


def test_a_batch_that_would_not_fit_is_segmented_a_few_images_at_a_time(
    tmp_path, segmenter8, monkeypatch
):
  import io

  from esnet_jax.system import memory_budget

  one, two = (segmenter8.memory_needed(32, 48, batch=n) for n in (1, 2))
  free = (one + two) / 2 / memory_budget.USABLE_FRACTION  # One image fits, two do not.
  monkeypatch.setattr(memory_budget, 'available_bytes', lambda: free)

  class Recording:
    """segmenter8, recording the batch shapes it is given."""

    def __init__(self):
      self.shapes = []

    def __getattr__(self, name):
      return getattr(segmenter8, name)

    def __call__(self, images):
      self.shapes.append(images.shape)
      return segmenter8(images)

  recording = Recording()
  images = [_save(_scene(i), tmp_path / 'in' / f'{i}.png') for i in range(3)]
  stream = io.StringIO()
  report = predict.run(
      recording,
      predict.find_inputs(images)[0],
      tmp_path / 'out',
      colours=np.asarray(SYNTHETIC_CLASSES.colours, np.uint8),
      batch_size=4,
      stream=stream,
  )
  assert not report.failed and len(report.done) == 3
  assert recording.shapes == [(1, 32, 48, 3)] * 3
  assert '--batch-size 4 would not fit in memory for 32x48 images; segmenting 1 at a time' in (
      stream.getvalue()
  )
  for i in range(3):
    assert (_read(tmp_path / 'out' / f'{i}_classes.png') == segmenter8.predict(_scene(i))).all()


def test_a_decompression_bomb_is_one_line_naming_the_file(tmp_path, checkpoint8, capsys):
  from esnet_jax.errors import InputError

  bomb = tmp_path / 'in' / 'bomb.png'
  bomb.parent.mkdir()
  bomb.write_bytes(png_claiming(40_000, 40_000))
  with pytest.raises(InputError, match=rf'^Cannot read image {bomb}: Image size \(1600000000 '):
    predict.load_image(bomb)
  good = _save(_scene(0), tmp_path / 'in' / 'good.png')
  out = tmp_path / 'out'
  rc = predict_command.main(
      ['--checkpoint', str(checkpoint8), '--input', str(bomb), str(good), '--output', str(out)]
  )
  err = capsys.readouterr().err
  assert rc == 1 and '1 input(s) done, 1 failed' in err
  (line,) = _error_lines(err)
  assert line.startswith(f'error: Cannot read image {bomb}: Image size')
  assert (out / 'good_overlay.png').is_file() and not list(out.glob('bomb*'))


def test_a_failing_rewrite_leaves_the_earlier_results_as_they_were(
    tmp_path, checkpoint8, capsys, monkeypatch
):
  """The disk fills up half-way through writing each PNG: the earlier results stay whole
  and no temporary file is left behind."""
  image = _save(_scene(0), tmp_path / 'in' / 'a.png')
  out = tmp_path / 'out'
  argv = ['--checkpoint', str(checkpoint8), '--input', str(image), '--output', str(out)]
  assert predict_command.main(argv) == 0
  before = _snapshot(out)
  assert len(before) == 3

  def disk_full(self, fp, *args, **kwargs):
    Path(fp).write_bytes(b'\x89PNG half')
    raise OSError(28, 'No space left on device')

  _save(_scene(1), image)  # Another picture under the same name: new results would differ.
  monkeypatch.setattr(Image.Image, 'save', disk_full)
  capsys.readouterr()
  assert predict_command.main(argv) == 1
  err = capsys.readouterr().err
  assert f'error: {image}: [Errno 28] No space left on device' in err
  assert _snapshot(out) == before


def test_a_failing_video_rewrite_leaves_the_earlier_video_as_it_was(
    tmp_path, checkpoint8, capsys, monkeypatch
):
  """A video that turns out truncated half-way: the earlier overlay video stays whole
  (it used to be deleted), and no temporary file is left behind."""
  pytest.importorskip('av')
  from esnet_jax.data import video

  clip = tmp_path / 'in' / 'clip.mp4'
  clip.parent.mkdir()
  with video.VideoWriter(clip, 10, (32, 48)) as writer:
    for seed in range(4):
      writer.write(_scene(seed))
  out = tmp_path / 'out'
  argv = ['--checkpoint', str(checkpoint8), '--input', str(clip), '--output', str(out)]
  assert predict_command.main([*argv, '--batch-size', '2']) == 0
  before = _snapshot(out)
  assert list(before) == [out / 'clip_overlay.mp4']
  frames = video.VideoReader.__iter__

  def truncated(self):
    for i, frame in enumerate(frames(self)):
      if i == 3:
        raise video.VideoError(f'Cannot decode video {self.path}: truncated')
      yield frame

  monkeypatch.setattr(video.VideoReader, '__iter__', truncated)
  capsys.readouterr()
  assert predict_command.main([*argv, '--batch-size', '2']) == 1
  assert f'error: Cannot decode video {clip}: truncated' in capsys.readouterr().err
  assert _snapshot(out) == before


def test_config_mode_and_demo_image_name_their_own_outputs(tmp_path, checkpoint8, capsys):
  from esnet_jax.errors import OutputError

  photos = tmp_path / 'photos'
  _save(_scene(0), photos / 'a.png')
  config = smoke.get_config()
  config.predict.checkpoint = str(checkpoint8)
  config.predict.input = str(photos)
  config.predict.output = str(photos)
  with pytest.raises(
      OutputError, match=rf'^config.predict.output {photos}: is or holds config.predict.input '
  ):
    predict.predict_from_config(config, tmp_path)
  assert predict_command.main(['--demo-image', str(photos)]) == 2
  assert (
      capsys.readouterr().err
      == f'error: --demo-image {photos}: is a folder; expected a file name.\n'
  )
  assert [p.name for p in photos.iterdir()] == ['a.png']
