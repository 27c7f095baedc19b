"""Quick start: ESNet on generated street scenes, no download, minutes on a laptop CPU.

  python -m esnet_jax.main --config configs/quickstart.py --workdir workdirs/quickstart

Generates 8-class synthetic street scenes (esnet_jax.datasets.synthetic), trains
for 400 steps with periodic evaluation and checkpoints, and ends with the final
evaluation. Result: see the README's quick start section (mIoU and wall time on
2 CPU cores, measured with this exact command).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 400
  config.eval_every_steps = 200
  config.checkpoint_every_steps = 100
  config.log_every_steps = 25
  config.optimizer.learning_rate = 2e-3  # short schedule: higher peak, short warmup
  config.optimizer.warmup_steps = 20
  config.dataset.image_size = (128, 256)
  config.dataset.crop_size = (128, 256)
  config.dataset.scale_range = (0.75, 1.5)
  config.dataset.num_train = 1024
  config.dataset.num_eval = 64
  return config
