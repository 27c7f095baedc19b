"""configs/camvid_trainval_cpu.py's recipe three times as long (issue #42): 17550 steps of 8
(about 300 epochs of train+val), the first 11250 at half scale (64%, as there).

The held-out check first, on train only (val stays out):

  python -m esnet_jax.main --config configs/camvid_long_cpu.py --workdir workdirs/camvid_long_train \
      --config.dataset.train_split=train

then the candidate for `pretrained:camvid`, on train+val (468 images; its val figure is not
held out):

  python -m esnet_jax.main --config configs/camvid_long_cpu.py --workdir workdirs/camvid_long_tv

Each run is resumable: the same command continues it after a stop, and its progress (steps,
val mIoU at each evaluation, wall time per segment) is in the workdir's metrics.jsonl and
eval/. It trains in bfloat16 where the CPU has bf16 dot products (from configs/camvid.py):
a step of 8 took 408-457 ms at half scale (176x240) and 1586 ms at full scale on 2 Zen 4 cores
against 570-588 and 2166 ms in float32, about 4.1 hours of steps for the run instead of 5.6
(`python -m esnet_jax.benchmark --train --batch 8 --height H --width W --dtype D`). Records:
docs/camvid/trials.md.
"""

from configs import camvid_trainval_cpu

LENGTH = 3  # times configs/camvid_trainval_cpu.py's steps
STEPS = LENGTH * camvid_trainval_cpu.STEPS
HALF_SCALE_STEPS = LENGTH * camvid_trainval_cpu.HALF_SCALE_STEPS


def get_config():
  config = camvid_trainval_cpu.get_config()
  config.num_train_steps = STEPS
  config.dataset.phases = ((HALF_SCALE_STEPS, 0.5, 176, 240),)
  config.eval_every_steps = STEPS // 6  # six evaluations, as in configs/camvid.py
  return config
