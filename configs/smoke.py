"""Seconds-long end-to-end run on tiny synthetic scenes, for tests.

  python -m esnet_jax.main --config configs/smoke.py --workdir /tmp/esnet_smoke

Reaches nothing in particular (a handful of steps); it checks that training,
evaluation, checkpointing and resuming work.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 2
  config.eval_batch_size = 2
  config.num_train_steps = 4
  config.eval_every_steps = 4
  config.checkpoint_every_steps = 2
  config.log_every_steps = 2
  config.dataset.image_size = (32, 48)  # tiny synthetic scenes
  config.dataset.crop_size = (32, 48)
  config.dataset.num_train = 8
  config.dataset.num_eval = 4
  return config
