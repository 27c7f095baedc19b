"""Quick start: ESNet on generated street scenes, no download, minutes on a laptop CPU.

  python -m esnet_jax.main --config configs/quickstart.py --workdir workdirs/quickstart

Generates 8-class synthetic street scenes (esnet_jax.data.datasets.synthetic), trains
for 800 steps of 4 crops of 96x192 with periodic evaluation and checkpoints, and
ends with the final evaluation. Result (2026-11-29, 2 cores of an AMD EPYC with
AVX2 + FMA): val mIoU 68.0% in 8 min 5 s and 8 min 52 s of wall time (two runs). In
so short a run, updates count more than pixels: 400 steps of 8 crops of 128x256
reached 68.4% in 10 min 38 s there, 300 of them 53.9% in 8 min 52 s, 400 of 8 crops
of 96x192 57.3% in 7 min 44 s (docs/benchmarks.md, quick start).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 4  # small batches, many updates: what a short run needs
  config.eval_batch_size = 8
  config.num_train_steps = 800
  config.eval_every_steps = 400
  config.checkpoint_every_steps = 200
  config.log_every_steps = 50
  config.optimizer.learning_rate = 2e-3  # short schedule: higher peak, short warmup
  config.optimizer.warmup_steps = 20
  config.dataset.image_size = (128, 256)
  config.dataset.crop_size = (96, 192)  # from 128x256 scenes scaled 0.75-1.5
  config.dataset.scale_range = (0.75, 1.5)
  config.dataset.num_train = 1024
  config.dataset.num_eval = 64
  return config
