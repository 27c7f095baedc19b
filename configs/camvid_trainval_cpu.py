"""The CPU candidate for `pretrained:camvid` by the field's protocol: train+val (468 images).

  python -m esnet_jax.main --config configs/camvid_trainval_cpu.py --workdir workdirs/camvid_tv

`configs/camvid.py`'s recipe 1.5 times as long (5850 steps of 8, the first 3750 at half
scale), the one lever of issue #26 that paid at full length (docs/camvid/trials.md). Its
val figure is not a held-out one (val is in its training set); for that, the same recipe
on train only:

  python -m esnet_jax.main --config configs/camvid_trainval_cpu.py --workdir workdirs/camvid_long \
      --config.dataset.train_split=train

Result, train only (2026-12-07, 2 cores of an Intel Xeon, AVX-512, code dcc3643, run as
`configs/camvid.py` with these values as overrides): **val mIoU 68.22%** at step 5850 (66.55%
for `configs/camvid.py`'s 3900 steps) in 85 min 14 s of wall time, 25 minutes of it beside
a CI run; records in docs/camvid/candidate-2026-12-07/.
Result, train+val (the first command, 2026-12-07, 2 cores of an AMD EPYC family 25 model 17,
Zen 4, AVX-512 with VNNI, code 3992f7a, one segment alone on the machine): 87 min 58 s of
wall time; val mIoU 85.24% at step 5850, not held out. These are the weights shipped as
`pretrained:camvid` (latest checkpoint, params sha256 c7773dbe...); records in docs/camvid/.
A step takes about twice as long on 2 AVX2 cores (about 200 minutes for the run there); the
run is resumable (re-run the same command). Both results were trained in float32; since
2026-12-08 the recipe trains in bfloat16 where the CPU has bf16 dot products (configs/camvid.py):
add --config.model.dtype=float32 to rerun them as they were.
"""

from configs import camvid

STEPS = 5850
HALF_SCALE_STEPS = 3750  # 64% of the steps, as in configs/camvid.py (2500 of 3900)


def get_config():
  config = camvid.get_config()
  config.dataset.train_split = 'train+val'
  config.num_train_steps = STEPS
  config.dataset.phases = ((HALF_SCALE_STEPS, 0.5, 176, 240),)
  config.eval_every_steps = 975  # six evaluations, as in configs/camvid.py
  return config
