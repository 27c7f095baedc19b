"""Faults in weights files and checkpoints: clear errors, fallback to intact steps, exact resume.

The slow tests run the smoke config (8 steps, a checkpoint every 2) in
subprocesses that share the session's persistent XLA compilation cache
(conftest.py), so that only the first run compiles. Faults inside a save come from
`tests/training/checkpoint_faults.py` (the process SIGKILLs itself at a named point of
saving a named step, or a save's commit is held open), so each lands at the same
place every time.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grain
import jax
import numpy as np
import pytest

from conftest import REPO, RUN, STEPS, main_command, run_main, subprocess_env
from configs import smoke
from esnet_jax.weights import checkpoints, convert, resolver
from esnet_jax import convert as convert_command
from esnet_jax.data import input_pipeline
from esnet_jax.inference import predict
from esnet_jax import predict as predict_command
from esnet_jax.training import trainer
from esnet_jax.training.checkpointer import TrainCheckpointer
from esnet_jax.data.datasets import build_source
from esnet_jax.data.datasets.synthetic import SYNTHETIC_CLASSES
from esnet_jax.errors import DamagedCheckpointError, WeightsError
from esnet_jax.training.metric_writers import MetricWriter
from esnet_jax.training.plots import read_metrics

# ---------------------------------------------------------------------------------------
# Every weights source fails with one error type naming the path.


def _npz_bytes() -> bytes:
  import io

  buffer = io.BytesIO()
  np.savez(buffer, **{'decoder.output_conv.bias': np.zeros(3, np.float32)})
  return buffer.getvalue()


def _bad_files() -> dict[str, bytes]:
  npz = _npz_bytes()
  return {
      'empty.npz': b'',
      'garbage.npz': b'\x13\x37 not a zip' * 40,
      'truncated.npz': npz[: len(npz) // 2],
      'npy-renamed.npz': b'\x93NUMPY\x01\x00' + b'v' * 80,
      'empty.safetensors': b'',
      'garbage.safetensors': b'\xff' * 64,
      'empty.pth': b'',
      'garbage.pth': b'PK\x03\x04' + b'\x00' * 60,
      'text.pt': b'hello\n',
  }


@pytest.mark.parametrize(
    'name',
    [
        pytest.param(name, marks=pytest.mark.torch) if name == 'garbage.pth' else name
        for name in sorted(_bad_files())
    ],
)
def test_a_damaged_weights_file_is_a_weights_error_naming_it(tmp_path, name):
  if name == 'garbage.pth':  # Read by torch.load.
    pytest.importorskip('torch')
  path = tmp_path / name
  path.write_bytes(_bad_files()[name])
  with pytest.raises(WeightsError) as err:
    resolver.load(path)
  message = str(err.value)
  assert name in message and '\n' not in message
  assert 'expected' in message or 'holds' in message or 'not a' in message


def test_a_weights_archive_that_unpacks_too_large_is_refused_before_it_is_read(
    tmp_path, monkeypatch
):
  """A zip bomb: a few KB on disk, far more in memory (the limit lowered to keep it small)."""
  monkeypatch.setattr(resolver, 'MAX_UNPACKED_BYTES', 1 << 20)
  path = tmp_path / 'bomb.npz'
  np.savez_compressed(path, **{'decoder.output_conv.bias': np.zeros(1 << 19, np.float32)})
  assert path.stat().st_size < 1 << 14
  with pytest.raises(
      WeightsError,
      match=r'bomb.npz unpacks to 2 MiB, more than the 1 MiB ' r'accepted.*it was not read',
  ):
    resolver.load(path)


def test_a_directory_or_file_that_is_not_a_checkpoint_is_a_weights_error(tmp_path):
  (tmp_path / 'empty').mkdir()
  (tmp_path / 'notes.txt').write_text('hello')
  step = tmp_path / 'run' / 'checkpoints' / '4'
  (step / 'state').mkdir(parents=True)  # A step whose state item is empty.
  for source, words in (
      (tmp_path / 'empty', 'No checkpoint found'),
      (tmp_path / 'notes.txt', 'unknown kind'),
      (tmp_path / 'nowhere', 'does not exist'),
      (tmp_path / 'run', 'step 4'),
      ('pretrained:nope', "'nope'"),
  ):
    with pytest.raises(WeightsError, match=words) as err:
      resolver.load(source)
    assert str(source).replace('pretrained:', '') in str(err.value)


def test_a_state_dict_names_every_missing_unexpected_and_misshaped_key(tmp_path, capsys):
  """The issue's case: the key the class count is read from missing, another mis-shaped."""
  sd = convert.flax_to_torch(
      jax.tree.map(lambda x: np.zeros(x.shape, np.float32), convert.template(5))
  )
  del sd['decoder.output_conv.bias']
  sd['decoder.layers.1.conv3x1_1.weight'] = np.zeros((64, 64, 3, 1), np.float32)
  sd['extra.weight'] = np.zeros(2, np.float32)
  path = tmp_path / 'sd.npz'
  np.savez(path, **sd)
  assert convert_command.main(['--torch', str(path), '--out', str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert err.count('\n') == 1 and str(path) in err
  assert 'missing keys: decoder.output_conv.bias' in err
  assert 'unexpected keys: extra.weight' in err
  assert 'decoder.layers.1.conv3x1_1.weight: got (64, 64, 3, 1), expected (64, 64, 5, 1)' in err
  assert not (tmp_path / 'out').exists()


@pytest.mark.end_to_end
def test_command_line_tools_print_one_line_and_exit_2(tmp_path, capsys):
  garbage = tmp_path / 'garbage.npz'
  garbage.write_bytes(b'not a zip file at all')
  image = tmp_path / 'good.png'
  predict.write_demo_image(image, (32, 48), 0)
  from esnet_jax import benchmark
  from esnet_jax import export as export_command

  calls = {
      'predict': lambda: predict_command.main(
          ['--checkpoint', str(garbage), '--input', str(image), '--output', str(tmp_path / 'out')]
      ),
      'export': lambda: export_command.main(
          [
              '--checkpoint',
              str(garbage),
              '--format',
              'stablehlo',
              '--height',
              '32',
              '--width',
              '32',
              '--out',
              str(tmp_path / 'x.mlir'),
          ]
      ),
      'convert': lambda: convert_command.main(
          ['--checkpoint', str(garbage), '--out-torch', str(tmp_path / 'x.npz')]
      ),
      'benchmark': lambda: benchmark.main(['--checkpoint', str(garbage), '--runs', '50']),
  }
  for tool, call in calls.items():
    try:
      code = call()
    except SystemExit as e:
      code = e.code
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if not l.startswith('warning:')]
    assert code == 2, (tool, err)
    assert lines == [lines[0]] and lines[0].startswith('error: ') and str(garbage) in lines[0], (
        tool,
        err,
    )
  # eval goes through esnet_jax.main (a subprocess: absl flags are process-global).
  out = subprocess.run(
      [
          sys.executable,
          '-m',
          'esnet_jax.main',
          '--config=configs/smoke.py',
          f'--workdir={tmp_path / "w"}',
          '--config.mode=eval',
          f'--config.eval.checkpoint={garbage}',
      ],
      cwd=REPO,
      env=subprocess_env(),
      capture_output=True,
      text=True,
      timeout=300,
  )
  assert out.returncode == 2, out.stderr[-2000:]
  assert 'Traceback' not in out.stderr
  assert out.stderr.strip().splitlines()[-1].startswith(f'error: {garbage} is not a zip archive')


# ---------------------------------------------------------------------------------------
# Damaged checkpoint steps: skipped when reading, moved aside when training.


def _zero_files(step_dir: Path) -> None:
  for f in step_dir.rglob('*'):
    if f.is_file():
      f.write_bytes(b'\0' * f.stat().st_size)


def _toy_state(step: int) -> dict:
  return {
      'params': {'w': np.arange(6, dtype=np.float32) * step},
      'batch_stats': {},
      'step': np.array(step, np.int32),
  }


def _toy_iterator():
  return iter(grain.MapDataset.range(1000).to_iter_dataset())


def _toy_run(workdir: Path, steps=(2, 4, 6)) -> None:
  """A TrainCheckpointer at work: two batches between saves."""
  iterator = _toy_iterator()
  checkpointer = TrainCheckpointer(workdir, keep=5)
  for step in steps:
    next(iterator), next(iterator)
    checkpointer.save(step, _toy_state(step), iterator, {'num_classes': 3})
  checkpointer.close()


def test_reading_skips_damaged_steps_without_moving_them_and_names_all_if_none_is_intact(tmp_path):
  _toy_run(tmp_path)
  ckpts = tmp_path / 'checkpoints'
  _zero_files(ckpts / '6')  # As a disk fault or an interrupted copy leaves it.
  (ckpts / '4' / 'state' / '_METADATA').write_text('{"tree_metadata": {')  # Cut short.
  warnings = []
  loaded = resolver.load(tmp_path, warn=warnings.append)
  assert loaded.step == 2
  np.testing.assert_array_equal(loaded.variables['params']['w'], _toy_state(2)['params']['w'])
  assert len(warnings) == 2
  assert 'step 6' in warnings[0] and 'is zeroed' in warnings[0]
  assert 'step 4' in warnings[1] and 'state/_METADATA is not valid JSON' in warnings[1]
  assert all('using step 2' in w for w in warnings)
  assert sorted(p.name for p in ckpts.iterdir()) == ['2', '4', '6']  # Nothing moved.
  # A step directory named directly is not replaced by another one.
  with pytest.raises(DamagedCheckpointError, match=r'checkpoints/6 cannot be restored'):
    resolver.load(ckpts / '6')
  (ckpts / '2' / 'meta' / 'metadata').unlink()
  with pytest.raises(DamagedCheckpointError) as err:
    resolver.load(tmp_path)
  message = str(err.value)
  assert message.startswith(f'No intact checkpoint in {ckpts}: step 6: ')
  assert 'step 4: state/_METADATA is not valid JSON' in message
  assert 'step 2: ' in message and '2/meta/metadata' in message


def test_training_moves_damaged_and_half_written_steps_aside_and_resumes_from_intact(tmp_path):
  _toy_run(tmp_path, steps=(2, 4, 6, 8))
  ckpts = tmp_path / 'checkpoints'
  files6 = sorted(str(p.relative_to(ckpts / '6')) for p in (ckpts / '6').rglob('*'))
  _zero_files(ckpts / '8')  # Caught by the quick scan, before orbax opens it.
  # Caught only by orbax's restore: the array data files cut short.
  for data in (ckpts / '6' / 'state').rglob('*'):
    if data.is_file() and data.parent.name == 'd':
      data.write_bytes(data.read_bytes()[: data.stat().st_size // 2])
  half = ckpts / '10.orbax-checkpoint-tmp-1234'  # What a kill inside a save leaves.
  (half / 'state').mkdir(parents=True)
  warnings = []
  checkpointer = TrainCheckpointer(tmp_path, keep=5, warn=warnings.append)
  iterator = _toy_iterator()
  step, state = checkpointer.restore_latest(_toy_state(0), iterator)
  assert step == 4 and int(state['step']) == 4
  assert next(iterator) == 4  # Step 4's data position: two saves of two batches each.
  assert [w.split(' in ')[0] for w in warnings] == [
      'checkpoint step 10',
      'checkpoint step 8',
      'checkpoint step 6',
  ]
  assert 'half-written' in warnings[0]
  assert 'is zeroed' in warnings[1] and 'resuming from step 6' in warnings[1]
  assert 'resuming from step 4' in warnings[2] and 'moved it to' in warnings[2]
  assert all('\n' not in w for w in warnings)
  # Renamed, never deleted: every file of the damaged step is still there.
  moved = {p.name.split('-')[0].split('.')[0]: p for p in (ckpts / 'damaged').iterdir()}
  assert sorted(moved) == ['10', '6', '8']
  assert sorted(str(p.relative_to(moved['6'])) for p in moved['6'].rglob('*')) == files6
  assert sorted(p.name for p in ckpts.iterdir()) == ['2', '4', 'damaged']
  # Training goes on: the next save of step 6 is a fresh, intact step.
  checkpointer.save(6, _toy_state(6), iterator, {'num_classes': 3})
  checkpointer.close()
  assert checkpoints.find_damage(ckpts / '6') is None
  assert resolver.load(tmp_path).step == 6


def test_training_with_no_intact_step_names_each_and_moves_nothing(tmp_path):
  _toy_run(tmp_path, steps=(2, 4))
  _zero_files(tmp_path / 'checkpoints' / '4')
  (tmp_path / 'checkpoints' / '2' / 'data' / 'process_0-of-1.json').write_text('{"next')
  checkpointer = TrainCheckpointer(tmp_path, keep=5, warn=print)
  with pytest.raises(DamagedCheckpointError) as err:
    checkpointer.restore_latest(_toy_state(0), _toy_iterator())
  checkpointer.close()
  message = str(err.value)
  assert 'step 4: ' in message and 'is zeroed' in message
  assert 'step 2: data/process_0-of-1.json is not valid JSON' in message
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['2', '4']


def test_an_intact_checkpoint_of_another_config_is_an_error_not_damage(tmp_path):
  _toy_run(tmp_path, steps=(2,))
  checkpointer = TrainCheckpointer(tmp_path, keep=5)
  other = {
      **_toy_state(0),
      'params': {'w': np.zeros(4, np.float32), 'v': np.zeros(2, np.float32)},  # Another model.
  }
  with pytest.raises(WeightsError) as err:
    checkpointer.restore_latest(other, _toy_iterator(), {'num_classes': 3})
  assert str(err.value) == (
      f'Checkpoint step {tmp_path / "checkpoints" / "2"} is intact but does not fit the current '
      "config: its state differs from the one the config builds: the model's parameters: 1 "
      'array(s) of another shape (e.g. params/w: (6,) in the checkpoint, (4,) in the config), '
      '1 array(s) only in the config (e.g. params/v). Resume it with the config it was trained '
      f'with (its {tmp_path / "config.json"}), or train this config in another --workdir.'
  )
  with pytest.raises(
      WeightsError,
      match=r'it was trained with 3 classes; the config asks for ' r'4 classes \(a, b, c, d\)\.',
  ):
    checkpointer.restore_latest(
        _toy_state(0), _toy_iterator(), {'num_classes': 4, 'class_names': list('abcd')}
    )
  checkpointer.close()
  assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['2']


def test_a_reader_skips_a_step_rotated_out_while_it_reads_it(tmp_path, monkeypatch):
  """As `best/` (one step kept) while a training saves a better one: the step being read
  disappears and a newer one is renamed into place; that is not damage."""
  _toy_run(tmp_path, steps=(4,))
  ckpts = tmp_path / 'checkpoints'
  read = checkpoints._read_step

  def rotated_while_read(step_dir):
    if step_dir.name == '4':
      shutil.copytree(step_dir, ckpts / '8.orbax-checkpoint-tmp-1')  # What the training does:
      (ckpts / '8.orbax-checkpoint-tmp-1').rename(ckpts / '8')  # commit a new step, then
      shutil.rmtree(step_dir)  # rotate out the old one.
    return read(step_dir)

  monkeypatch.setattr(checkpoints, '_read_step', rotated_while_read)
  loaded = resolver.load(tmp_path, warn=pytest.fail)
  assert loaded.step == 8


# ---------------------------------------------------------------------------------------
# Caches and logs a killed run may leave damaged.


def test_a_damaged_class_weights_cache_is_recomputed_with_a_warning(tmp_path, capsys):
  config = smoke.get_config()
  config.loss.class_weights = 'enet'
  table = input_pipeline.dataset_class_table(config)
  source = build_source(config.dataset, config.dataset.train_split)
  fresh = trainer.class_weights(config, tmp_path, table, source)
  cache = tmp_path / trainer.CLASS_WEIGHTS_FILE
  text = cache.read_text()
  for damaged in (
      text[: len(text) // 2],
      '\0' * len(text),
      '{"classes": %s, "weights": [1]}' % json.dumps(list(table.names)),
  ):
    cache.write_text(damaged)
    capsys.readouterr()
    np.testing.assert_array_equal(trainer.class_weights(config, tmp_path, table, source), fresh)
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'{cache} is damaged' in err and 'recomputing' in err
    assert json.loads(cache.read_text())['weights'] == fresh.tolist()  # Rewritten whole.


def test_a_torn_last_metrics_line_is_kept_and_the_next_record_starts_on_its_own(tmp_path):
  path = tmp_path / 'metrics.jsonl'
  path.write_text('{"step": 4, "train/loss": 2.5}\n{"step": 8, "train/lo')
  writer = MetricWriter(tmp_path, enabled=True)
  writer.write_scalars(6, {'train/loss': 2.0})
  writer.close()
  lines = path.read_text().splitlines()
  assert lines[:2] == ['{"step": 4, "train/loss": 2.5}', '{"step": 8, "train/lo']
  assert json.loads(lines[2])['step'] == 6
  steps, _ = read_metrics(path)['train/loss']
  assert steps.tolist() == [4, 6]


# ---------------------------------------------------------------------------------------
# End to end: SIGKILL inside saves, a zeroed latest step, a full disk.


def _steps(directory: Path) -> list[str]:
  return sorted(p.name for p in directory.iterdir())


@pytest.fixture(scope='module')
def reference(reference_run) -> tuple[Path, str]:
  """The uninterrupted run: (workdir, its params fingerprint line)."""
  workdir, out = reference_run
  fingerprint = [l for l in out.splitlines() if 'params sha256' in l]
  assert fingerprint and fingerprint[0].endswith(f'at step {STEPS}')
  return workdir, fingerprint[0]


def _assert_same_params(workdir: Path, reference_dir: Path) -> None:
  ours, theirs = checkpoints.restore_variables(workdir), checkpoints.restore_variables(
      reference_dir
  )
  for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
    np.testing.assert_array_equal(a, b)


@pytest.mark.end_to_end
def test_sigkill_inside_saves_and_a_zeroed_latest_step_then_resume_is_bitwise_equal(
    reference, tmp_path
):
  ref_dir, fingerprint = reference
  ckpts = tmp_path / 'checkpoints'
  killed = -signal.SIGKILL
  # 1. Killed right after the temporary directory of step 4 was made.
  out = run_main(tmp_path, *RUN, fault='kill:tmp-created@4')
  assert out.returncode == killed, out.stderr[-3000:]
  assert '2' in _steps(ckpts) and '4' not in _steps(ckpts)
  assert any(n.startswith('4.orbax-checkpoint-tmp') for n in _steps(ckpts))
  # 2. The same command: resumes from 2; killed with step 6 written but not renamed.
  out = run_main(tmp_path, *RUN, fault='kill:before-rename@6')
  assert out.returncode == killed, out.stderr[-3000:]
  assert f'Resumed from {ckpts / "2"}' in out.stdout
  assert 'checkpoint step 4' in out.stderr and 'half-written' in out.stderr
  # The killed run's lock did not stop the same command: taken over, in one line.
  takeover = [l for l in out.stderr.splitlines() if 'taking over the lock' in l]
  assert len(takeover) == 1 and re.search(
      r'left by process \d+ on .*: process \d+ is gone', takeover[0]
  ), out.stderr[-3000:]
  assert '6' not in _steps(ckpts) and any(n.startswith('6.orbax') for n in _steps(ckpts))
  # 3. Killed just after step 6 became final (before older steps were rotated out).
  out = run_main(tmp_path, *RUN, fault='kill:after-rename@6')
  assert out.returncode == killed, out.stderr[-3000:]
  assert f'Resumed from {ckpts / "4"}' in out.stdout
  assert '6' in _steps(ckpts)
  # 4. Damage on top: the newest step zeroed, the class-weight cache and the last metrics
  # line cut short. The same command resumes from step 4 and ends where the reference did.
  _zero_files(ckpts / '6')
  weights_cache = tmp_path / trainer.CLASS_WEIGHTS_FILE
  weights_cache.write_text(weights_cache.read_text()[:40])
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 7, "train/lo')
  out = run_main(tmp_path, *RUN)
  assert out.returncode == 0, out.stderr[-3000:]
  assert f'Resumed from {ckpts / "4"}' in out.stdout
  warnings = [l for l in out.stderr.splitlines() if l.startswith('warning:')]
  assert any(
      'checkpoint step 6' in w and 'is zeroed' in w and 'moved it to' in w for w in warnings
  ), out.stderr[-3000:]
  assert any(f'{weights_cache} is damaged' in w for w in warnings), out.stderr[-3000:]
  assert 'Traceback' not in out.stderr
  assert fingerprint in out.stdout
  _assert_same_params(tmp_path, ref_dir)
  # Nothing deleted: the half-written and the damaged steps are in damaged/.
  moved = _steps(ckpts / 'damaged')
  assert [n.split('-')[0] for n in moved] == ['4.orbax', '6', '6.orbax'], moved
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert '{"step": 7, "train/lo' in lines
  assert json.loads(lines[-1])['step'] == STEPS


@pytest.mark.end_to_end
def test_a_full_disk_during_a_save_stops_with_one_line_and_keeps_the_previous_step(
    reference, tmp_path
):
  ref_dir, _ = reference
  workdir = tmp_path / 'w'
  shutil.copytree(ref_dir, workdir)
  # Ten steps: resumes at 8; the save of step 10 (a 12 MB state file) exceeds 4 MB.
  out = run_main(workdir, *RUN, '--config.num_train_steps=10', file_size_limit=4 << 20)
  assert out.returncode == 2, out.stderr[-3000:]
  # One message of ours. Orbax's background threads also log what failed, in their format,
  # and may print while the process exits, so their text can land on either side of it.
  assert out.stderr.count('error:') == 1, out.stderr[-3000:]
  error = re.search(r'error: [^\n]*', out.stderr).group(0)
  assert error.startswith(
      f'error: Could not write checkpoint step 10 to '
      f'{workdir / "checkpoints"}: the disk is full'
  ), error
  assert 'the previous checkpoint, step 8, is intact.' in error, error
  assert '10' not in _steps(workdir / 'checkpoints')
  loaded = resolver.load(workdir, warn=pytest.fail)
  assert loaded.step == STEPS
  _assert_same_params(workdir, ref_dir)


# ---------------------------------------------------------------------------------------
# Saves in flight, one training per workdir, an error exit's last line.


def _assert_every_step_intact(workdir: Path) -> None:
  for manager in (checkpoints.CHECKPOINTS_DIR, checkpoints.BEST_DIR):
    names = _steps(workdir / manager)
    assert names and all(n.isdigit() for n in names), (manager, names)  # No tmp, no damaged/.
    for name in names:
      assert (
          checkpoints.find_damage(
              workdir / manager / name,
              (checkpoints.STATE_ITEM, checkpoints.DATA_ITEM, checkpoints.META_ITEM),
          )
          is None
      )


def _snapshot(workdir: Path) -> dict[str, int]:
  """What a second training would touch first: its files' modification times."""
  files = [
      workdir / 'config.json',
      workdir / trainer.CLASS_WEIGHTS_FILE,
      *(workdir / 'tensorboard').iterdir(),
      *(workdir / 'checkpoints').iterdir(),
  ]
  return {str(f.relative_to(workdir)): f.stat().st_mtime_ns for f in files}


HELD = ('best/4', 'checkpoints/4')  # Released only when the run waits for that manager.


@pytest.fixture(scope='module')
def busy_workdir(tmp_path_factory) -> dict:
  """A first run that pauses inside its save of step 2 (until a file exists) and holds
  the commits of `HELD` open; the same command run again while it is paused."""
  tmp_path = tmp_path_factory.mktemp('busy')
  workdir, release, log = tmp_path / 'w', tmp_path / 'release', tmp_path / 'first.err'
  faults = ','.join([f'hold:checkpoints/2@{release}', *(f'hold:{h}' for h in HELD)])
  with open(log, 'w') as err:
    first = subprocess.Popen(
        main_command(workdir, *RUN, '--config.eval_every_steps=4', fault=faults),
        cwd=REPO,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=err,
        text=True,
    )
  try:
    deadline = time.monotonic() + 600
    while 'hold: checkpoints/2 held' not in log.read_text():
      assert first.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
      time.sleep(0.1)
    before = _snapshot(workdir)
    second = run_main(workdir, *RUN)
    untouched = _snapshot(workdir) == before
    release.touch()
    out, _ = first.communicate(timeout=600)
  finally:
    release.touch()
    if first.poll() is None:
      first.kill()
  return {
      'workdir': workdir,
      'first': first,
      'first_out': out,
      'first_err': log.read_text(),
      'second': second,
      'untouched': untouched,
  }


@pytest.mark.end_to_end
def test_saves_held_in_flight_are_never_judged_and_the_run_ends_with_every_step_intact(
    reference, busy_workdir
):
  """The issue's race, made certain: the commits of best/4 and checkpoints/4 stay open
  until the run waits for them; meanwhile it evaluates, saves, and looks for the best."""
  _, fingerprint = reference
  first, err = busy_workdir['first'], busy_workdir['first_err']
  assert first.returncode == 0, err[-3000:]
  for h in HELD:
    assert f'hold: {h} held' in err and f'hold: {h} released by a wait' in err, err[-3000:]
  assert 'cannot be restored' not in err and 'Traceback' not in err
  assert fingerprint in busy_workdir['first_out']  # Evaluating at step 4 too changes nothing.
  _assert_every_step_intact(busy_workdir['workdir'])
  assert _steps(busy_workdir['workdir'] / 'checkpoints') == ['4', '6', '8']


@pytest.mark.end_to_end
def test_a_second_training_on_a_busy_workdir_refuses_in_one_line_and_the_first_ends_unharmed(
    reference, busy_workdir
):
  _, fingerprint = reference
  workdir, first, second = busy_workdir['workdir'], busy_workdir['first'], busy_workdir['second']
  assert second.returncode == 2, second.stderr[-3000:]
  assert (
      second.stderr.strip()
      .splitlines()[-1]
      .startswith(
          f'error: {workdir} is in use by another training: process {first.pid} on '
          f'{socket.gethostname()}, started '
      )
  ), second.stderr[-3000:]
  assert 'Traceback' not in second.stderr
  assert busy_workdir['untouched']  # The second one wrote nothing.
  assert first.returncode == 0, busy_workdir['first_err'][-3000:]
  assert 'hold: checkpoints/2 released by its file' in busy_workdir['first_err']
  assert fingerprint in busy_workdir['first_out']
  _assert_every_step_intact(workdir)
  assert not (workdir / 'train.lock').exists()  # Released at the end.


def _folder_dataset(root: Path, num_classes: int) -> Path:
  from PIL import Image

  rng = np.random.default_rng(0)
  for split in ('train', 'val'):
    for sub in ('img', 'lbl'):
      (root / split / sub).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(rng.integers(0, 255, (32, 48, 3), np.uint8)).save(
          root / split / 'img' / f'{i}.png'
      )
      Image.fromarray((np.arange(32 * 48).reshape(32, 48) % num_classes).astype(np.uint8)).save(
          root / split / 'lbl' / f'{i}.png'
      )
  return root


@pytest.mark.end_to_end
def test_resuming_with_another_class_count_ends_with_one_line_saying_what_differs(
    reference, tmp_path
):
  ref_dir, _ = reference
  workdir = tmp_path / 'w'
  shutil.copytree(ref_dir, workdir)
  data = _folder_dataset(tmp_path / 'data', 3)
  out = run_main(
      workdir,
      *RUN,
      '--config.num_train_steps=10',
      '--config.dataset.name=folder',
      f'--config.dataset.root={data}',
      '--config.dataset.image_dir={split}/img',
      '--config.dataset.label_dir={split}/lbl',
      "--config.dataset.class_names=('a','b','c')",
  )
  assert out.returncode == 2, out.stderr[-3000:]
  last = out.stderr.strip().splitlines()[-1]
  assert last.startswith(
      f'error: Checkpoint step {workdir / "checkpoints" / str(STEPS)} is intact but does not fit '
      f'the current config: it was trained with 8 classes ({", ".join(SYNTHETIC_CLASSES.names)}); '
      'the config asks for 3 classes (a, b, c). Resume it with the config it was trained with'
  ), last
  assert last.endswith('or train this config in another --workdir.'), last
  assert 'Traceback' not in out.stderr and len(out.stderr.splitlines()) < 5, out.stderr[-3000:]
  assert _steps(workdir / 'checkpoints') == _steps(ref_dir / 'checkpoints')  # Nothing moved.
