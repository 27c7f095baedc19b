"""ESNet on CamVid by the field's protocol: train+val (468 images), batch 16, long schedule.

  python -m esnet_jax.main --config configs/camvid_trainval.py --workdir workdirs/camvid_tv \
      --config.dataset.root=/path/to/CamVid

The recipe of `configs/camvid.py` (Adam, lr 2e-3 with poly decay, square-rooted ENet class
weights, 240x320 crops at scales 0.75-1.35, the first 64% of the steps at half scale), at
the batch and length of the small networks CamVid results are quoted for (DABNet's: batch
16, about 1000 epochs of train+val), sized for one GPU. The same recipe on train only, for
its val figure: add `--config.dataset.train_split=train` (the val figure of this config is
not a held-out one: val is in its training set). `launch/camvid_gpu.sh` runs both on a GPU
machine that has JAX but no registry, from a pack made by `launch/camvid_pack.py`.
"""

from configs import camvid

EPOCHS = 1000
IMAGES = 468  # train (367) + val (101)
HALF_SCALE_FRACTION = 2500 / 3900  # as in configs/camvid.py


def get_config():
  config = camvid.get_config()
  config.dataset.train_split = 'train+val'
  config.batch_size = 16
  config.eval_batch_size = 16
  config.num_train_steps = EPOCHS * IMAGES // config.batch_size
  config.dataset.phases = ((round(HALF_SCALE_FRACTION * config.num_train_steps), 0.5, 176, 240),)
  # One evaluation, at the end; a checkpoint every ~35 epochs (each resumable).
  config.eval_every_steps = config.num_train_steps
  config.checkpoint_every_steps = 1000
  config.log_every_steps = 100
  config.dataset.num_workers = 6  # loader processes: a GPU step outruns one CPU loader
  # On a GPU bfloat16 is XLA's, rounded per operation: 6 points below float32 at the quick
  # start (docs/records/2026-12-07-bfloat16-kernels.md); the CPU kernels' bf16 is not here.
  config.model.dtype = 'float32'
  return config
