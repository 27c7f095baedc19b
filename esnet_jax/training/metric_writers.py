"""Where training metrics go: a progress line, `metrics.jsonl`, TensorBoard events.

Only process 0 writes; on other processes every method is a no-op, so the
training loop never has to ask which process it runs on.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Mapping, TextIO


def format_duration(seconds: float) -> str:
  seconds = max(0, int(round(seconds)))
  h, rem = divmod(seconds, 3600)
  m, s = divmod(rem, 60)
  return f'{h:d}:{m:02d}:{s:02d}' if h else f'{m:d}:{s:02d}'


def _ends_mid_line(path: Path) -> bool:
  """Whether `path` exists and its last byte is not a newline (a line cut short)."""
  try:
    with open(path, 'rb') as f:
      f.seek(0, 2)
      if f.tell() == 0:
        return False
      f.seek(-1, 2)
      return f.read(1) != b'\n'
  except FileNotFoundError:
    return False


class MetricWriter:
  """Appends scalars to `workdir/metrics.jsonl` and TensorBoard; prints progress.

  A resumed run appends to the same `metrics.jsonl`. If the previous run was
  killed mid-line, that torn line is kept as it is and the new records start on
  a line of their own, so every complete record stays readable (`plots.read_metrics`
  skips lines that are not JSON).
  """

  def __init__(self, workdir: str | Path, *, enabled: bool, stream: TextIO = sys.stdout):
    self.enabled = enabled
    self.stream = stream
    self._jsonl = None
    self._tb = None
    if enabled:
      workdir = Path(workdir)
      workdir.mkdir(parents=True, exist_ok=True)
      path = workdir / 'metrics.jsonl'
      torn = _ends_mid_line(path)
      self._jsonl = open(path, 'a', encoding='utf-8')
      if torn:  # A killed run cut its last line short: keep it, start the next on its own.
        self._jsonl.write('\n')
        self._jsonl.flush()
      from tensorboardX import SummaryWriter

      self._tb = SummaryWriter(str(workdir / 'tensorboard'))

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    if not self.enabled:
      return
    clean = {k: float(v) for k, v in scalars.items() if v is not None}
    self._jsonl.write(json.dumps({'step': int(step), 'time': time.time(), **clean}) + '\n')
    self._jsonl.flush()
    for key, value in clean.items():
      if math.isfinite(value):
        self._tb.add_scalar(key, value, int(step))
    self._tb.flush()

  def progress(
      self, step: int, total: int, loss: float, lr: float, images_per_sec: float, eta_s: float
  ) -> None:
    if not self.enabled:
      return
    width = len(str(total))
    self.stream.write(
        f'step {step:>{width}}/{total} ({100 * step / total:5.1f}%) | '
        f'loss {loss:.4f} | lr {lr:.2e} | {images_per_sec:6.1f} img/s | '
        f'ETA {format_duration(eta_s)}\n'
    )
    self.stream.flush()

  def print(self, message: str) -> None:
    if self.enabled:
      self.stream.write(message + '\n')
      self.stream.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._tb.close()
      self._jsonl = self._tb = None
