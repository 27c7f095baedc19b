"""launch/camvid_gpu_plan.py: schedules sized from a probe's log lines and the time left."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[2]


def _probe(work: Path, name: str, step_s_half: float, step_s_full: float) -> None:
  """A probe run's metrics.jsonl: 96 steps, a line every 12, the switch after 48."""
  run = work / f'probe_{name}'
  run.mkdir(parents=True)
  (run / 'config.json').write_text(json.dumps({'batch_size': 16}))
  lines = []
  for step in range(12, 97, 12):
    seconds = 60.0 if step in (12, 60) else (step_s_half if step <= 48 else step_s_full)
    lines.append(json.dumps({'step': step, 'train/images_per_sec': 16 * 12 / (12 * seconds)}))
  (run / 'metrics.jsonl').write_text('\n'.join(lines) + '\n')


def _plan(tmp_path: Path, seconds_left: float) -> subprocess.CompletedProcess:
  pack = tmp_path / 'pack'
  pack.mkdir(exist_ok=True)
  (pack / 'train.txt').write_text('a b\n' * 367)
  (pack / 'val.txt').write_text('a b\n' * 101)
  return subprocess.run(
      [sys.executable, 'launch/camvid_gpu_plan.py', '--work', str(tmp_path), '--pack', str(pack)]
      + ['--probe-steps', '96', '--probe-seconds', '150', '--seconds-left', str(seconds_left)],
      cwd=REPO,
      capture_output=True,
      text=True,
  )


@pytest.mark.end_to_end
def test_plan_fits_the_slower_run_into_the_time_left(tmp_path):
  _probe(tmp_path, 'trainval', 0.03, 0.05)
  _probe(tmp_path, 'train', 0.02, 0.06)  # the plan takes the slower of the two each phase
  done = _plan(tmp_path, 400)
  assert done.returncode == 0, done.stderr
  plan = json.loads(done.stdout)
  assert (plan['step_s_half_scale'], plan['step_s_full_scale'], plan['batch']) == (0.03, 0.06, 16)
  assert plan['fixed_s'] == pytest.approx(150 - 48 * 0.03 - 48 * 0.06, abs=0.1)
  per_step = 2500 / 3900 * 0.03 + 1400 / 3900 * 0.06
  planned = plan['trainval_steps'] * per_step
  left = 0.9 * (400 - plan['fixed_s'] - 40)
  assert left - 468 / 16 * per_step < planned <= left  # within one epoch of the time left
  assert plan['trainval_steps'] == plan['epochs'] * 468 // 16
  assert plan['train_steps'] == plan['epochs'] * 367 // 16
  assert plan['trainval_half'] == round(2500 / 3900 * plan['trainval_steps'])


@pytest.mark.end_to_end
def test_plan_caps_at_1000_epochs_and_refuses_no_time(tmp_path):
  _probe(tmp_path, 'trainval', 0.001, 0.001)
  _probe(tmp_path, 'train', 0.001, 0.001)
  assert json.loads(_plan(tmp_path, 10_000).stdout)['epochs'] == 1000
  done = _plan(tmp_path, 100)
  assert done.returncode != 0 and 'no time left to train' in done.stderr
