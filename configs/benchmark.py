"""Compiled-inference benchmark through main (same as `python -m esnet_jax.benchmark`).

  python -m esnet_jax.main --config configs/benchmark.py --workdir workdirs/benchmark

Times ESNet(19) at 1024x512, batch 1, float32, BN folded, 50 runs; prints the report
and writes workdir/benchmark.json. Results on 2 CPU cores: the README's benchmark table.
"""

import ml_collections

from configs import default


def get_config():
  config = default.get_config()
  config.mode = 'benchmark'
  config.benchmark = ml_collections.ConfigDict()
  config.benchmark.height = 512
  config.benchmark.width = 1024
  config.benchmark.batch = 1
  config.benchmark.dtype = 'float32'  # or 'bfloat16'
  config.benchmark.runs = 50
  config.benchmark.fold_bn = True
  config.benchmark.compare_torch = False  # needs the torch extra
  config.benchmark.checkpoint = ''  # '' = random weights (speed does not depend on them)
  config.benchmark.num_classes = 0  # 0 = 19, or the checkpoint's
  # True: every engine (JAX, ONNX Runtime, OpenVINO) at every precision it runs here, side
  # by side at `sizes` ('' = 512x1024,360x480; height and width then stay as they are),
  # ONNX Runtime's and OpenVINO's `threads` (0 = theirs).
  config.benchmark.engines = False
  config.benchmark.sizes = ''
  config.benchmark.threads = 0
  return config
