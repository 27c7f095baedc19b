"""The paper's setting: Cityscapes fine, 19 classes, 1024x512 network input.

  python -m esnet_jax.main --config configs/cityscapes.py --workdir workdirs/cityscapes \
      --config.dataset.root=/path/to/cityscapes    # leftImg8bit/ and gtFine/ inside

Multi-GPU / multi-host: the same command through launch/slurm.sbatch or
launch/multihost.sh (config.batch_size is global). Recipe as the ERFNet/ESNet
training code: Adam (0.9, 0.999, 1e-8), lr 5e-4, coupled weight decay 1e-4, poly
decay (power 0.9), ENet class weights, ~150 epochs of the 2975 training images.
The paper reports 70.7% mIoU on the Cityscapes TEST set with this network. NOT RUN
here (no GPU): no result of this project's own is claimed for it.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 56_000  # ~150 epochs of 2975 images at batch 8
  config.eval_every_steps = 2_000
  config.checkpoint_every_steps = 1_000
  config.log_every_steps = 100
  config.dataset.name = 'cityscapes'
  config.dataset.root = ''  # required: --config.dataset.root=/path/to/cityscapes
  # Images are 2048x1024; the network sees 1024x512 (scale 0.5), jittered around it.
  config.dataset.scale_range = (0.375, 1.0)
  config.dataset.crop_size = (512, 1024)
  config.dataset.eval_scale = 0.5  # evaluated at full 2048x1024 label resolution
  config.dataset.colour_jitter = 0.2
  config.dataset.num_workers = 4
  return config
