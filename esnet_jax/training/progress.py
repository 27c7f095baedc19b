"""The training's progress, reported every `log_every` steps: the loss averaged over the
window since the last report, images per second in that window, and the ETA from the run's
own pace (a resumed run counts from the step it resumed at, not from 0), as a progress line
and as scalars (`MetricWriter`)."""

from __future__ import annotations

import time
from typing import Any, Mapping

from esnet_jax.training.metric_writers import MetricWriter


class Progress:
  """Accumulates each step's loss; reports at every `log_every`-th step and at the last."""

  def __init__(
      self, writer: MetricWriter, *, total: int, batch_size: int, log_every: int, start_step: int
  ):
    self.writer, self.total, self.batch_size, self.log_every = writer, total, batch_size, log_every
    self.run_start, self.run_start_step = time.time(), start_step
    self._window_start()

  def _window_start(self) -> None:
    self.window_loss, self.window_steps, self.window_time = 0.0, 0, time.time()

  def step(self, step: int, loss: float, step_metrics: Mapping[str, Any]) -> None:
    """Counts step `step`'s loss; reports the window if this step is a reporting one.

    `step_metrics` are the train step's (replicated) metrics: its learning rate and
    pixel accuracy are read only when reporting.
    """
    self.window_loss += loss
    self.window_steps += 1
    if step % self.log_every and step != self.total:
      return
    now = time.time()
    images_per_sec = self.window_steps * self.batch_size / max(now - self.window_time, 1e-9)
    lr = float(step_metrics['learning_rate'][0])
    average = self.window_loss / self.window_steps
    eta = (now - self.run_start) / max(step - self.run_start_step, 1) * (self.total - step)
    self.writer.progress(step, self.total, average, lr, images_per_sec, eta)
    self.writer.write_scalars(
        step,
        {
            'train/loss': average,
            'train/learning_rate': lr,
            'train/pixel_accuracy': float(step_metrics['pixel_accuracy'][0]),
            'train/images_per_sec': images_per_sec,
        },
    )
    self._window_start()
