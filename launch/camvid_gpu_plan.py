"""Size the two CamVid schedules of launch/camvid_gpu.sh to the time left, from its probe.

Reads the probe runs' metrics.jsonl (a log line every 25 steps, half of the steps at half
scale) and prints the plan as JSON: the epochs both runs get (at most 1000, the field's
protocol), their steps, and the measured step times and fixed costs it rests on. The
estimate is cautious: both runs are assumed to share the GPU for all their steps, though
the train-only run ends first.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HALF_SCALE_FRACTION = 2500 / 3900  # as configs/camvid_trainval.py
MAX_EPOCHS = 1000
MARGIN_S = 40  # converting, packing and the unforeseen
SAFETY = 0.9  # the share of the rest planned for: two runs' step times vary


def step_seconds(metrics: Path, half: int) -> tuple[float, float, int]:
  """Seconds a step at half and at full scale, and the batch, past each phase's compile."""
  rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
  rows = [r for r in rows if 'train/images_per_sec' in r]
  batch = json.loads((metrics.parent / 'config.json').read_text())['batch_size']
  first = rows[0]['step']  # its window holds the first compilation
  half_rows = [r for r in rows if first < r['step'] <= half]
  full_rows = [r for r in rows if r['step'] > half + first]  # past the recompile at the switch
  if not half_rows or not full_rows:
    raise SystemExit(f'{metrics}: too few log lines to time both phases')

  def seconds(rs):
    return batch / min(r['train/images_per_sec'] for r in rs)

  return seconds(half_rows), seconds(full_rows), batch


def _examples(list_file: Path) -> int:
  return sum(1 for line in list_file.read_text().splitlines() if line.strip())


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--work', type=Path, required=True)
  parser.add_argument('--pack', type=Path, required=True, help='the CamVid pack (list files)')
  parser.add_argument('--probe-steps', type=int, required=True)
  parser.add_argument('--probe-seconds', type=float, required=True)
  parser.add_argument('--seconds-left', type=float, required=True)
  args = parser.parse_args(argv)
  half = args.probe_steps // 2
  lines = {split: _examples(args.pack / f'{split}.txt') for split in ('train', 'val')}
  images = {'trainval': lines['train'] + lines['val'], 'train': lines['train']}
  timed = {
      name: step_seconds(args.work / f'probe_{name}' / 'metrics.jsonl', half) for name in images
  }
  s_half = max(t[0] for t in timed.values())
  s_full = max(t[1] for t in timed.values())
  batch = timed['trainval'][2]
  fixed = args.probe_seconds - half * s_half - (args.probe_steps - half) * s_full
  per_step = HALF_SCALE_FRACTION * s_half + (1 - HALF_SCALE_FRACTION) * s_full
  train_s = SAFETY * (args.seconds_left - fixed - MARGIN_S)
  epochs = min(MAX_EPOCHS, int(train_s / per_step * batch / images['trainval']))
  if epochs < 1:
    raise SystemExit(f'no time left to train: {args.seconds_left:.0f} s left, fixed {fixed:.0f} s')
  plan = {
      'epochs': epochs,
      'limit_s': int(args.seconds_left - MARGIN_S / 2),
      'step_s_half_scale': round(s_half, 4),
      'step_s_full_scale': round(s_full, 4),
      'fixed_s': round(fixed, 1),
      'batch': batch,
  }
  for name, count in images.items():
    steps = epochs * count // batch
    plan[f'{name}_steps'] = steps
    plan[f'{name}_half'] = round(HALF_SCALE_FRACTION * steps)
  json.dump(plan, sys.stdout, indent=1)
  print()
  return 0


if __name__ == '__main__':
  sys.exit(main())
