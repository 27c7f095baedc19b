"""Defaults shared by every config: the paper's optimisation recipe on synthetic data.

Not meant to be run as is (use quickstart.py, camvid.py or cityscapes.py);
every other config starts from `get_config()` here and changes a few fields.
"""

import ml_collections

from esnet_jax.data.datasets import default_dataset_config


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.mode = 'train'  # 'train' (with periodic evaluation), 'eval', 'predict' or 'export'
  config.seed = 0
  config.batch_size = 8  # global, over all devices and hosts
  config.eval_batch_size = 8  # global
  config.num_train_steps = 1000
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 250
  config.log_every_steps = 50
  config.keep_checkpoints = 3  # last N; the best by mIoU is kept apart in workdir/best
  # Weight EMA: 0 = off; else the decay of an exponential moving average of the params
  # and BatchNorm statistics (e.g. 0.999), evaluated, checkpointed and exported in their stead.
  config.ema_decay = 0.0

  config.model = ml_collections.ConfigDict()
  config.model.dtype = 'float32'  # or 'bfloat16' (compute; parameters stay float32)
  config.model.dropout = True  # the original's spatial dropout (0.03 encoder, 0.3 PFCU)
  # Who computes the model (esnet_jax.model.implementations): 'auto' = the compiled CPU kernels
  # (esnet_jax.kernels) in float32 where they built on a CPU backend, else XLA; 'xla' = XLA
  # everywhere; 'native' = the kernels or an error. Same variables, same function.
  config.model.kernels = 'auto'

  config.dataset = default_dataset_config()

  config.loss = ml_collections.ConfigDict()
  config.loss.class_weights = 'enet'  # 'enet' (1/ln(1.02+p_c)), 'none', or 'w0,w1,...'
  # The weights raised to this power: 1 as they are, 0.5 their square root (rare classes
  # still favoured, but predicted less often where they are not), 0 no weighting.
  config.loss.class_weight_power = 1.0
  config.loss.ohem = False
  config.loss.ohem_threshold = 0.7  # OHEM keeps pixels whose true-class prob is below
  config.loss.ohem_min_kept = 100000  # ... and at least this many per device
  config.loss.label_smoothing = 0.0  # e: targets (1 - e) on the class, e spread over all

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.learning_rate = 5e-4
  config.optimizer.b1 = 0.9
  config.optimizer.b2 = 0.999
  config.optimizer.eps = 1e-8
  # 'coupled': L2 added to the gradient before Adam, as torch.optim.Adam(weight_decay=...)
  # in the ERFNet/ESNet training code; 'decoupled': AdamW.
  config.optimizer.weight_decay = 1e-4
  config.optimizer.weight_decay_mode = 'coupled'
  config.optimizer.poly_power = 0.9
  config.optimizer.warmup_steps = 0

  config.eval = ml_collections.ConfigDict()
  config.eval.checkpoint = ''  # eval mode: a checkpoint path; '' = this workdir
  config.eval.which = 'latest'  # eval mode: 'latest' or 'best' checkpoint of a workdir
  config.eval.flip = False  # test-time augmentation: average with the mirrored image
  config.eval.scales = (1.0,)  # test-time augmentation: e.g. (0.75, 1.0, 1.25)
  # Eval mode's engine and precision (esnet_jax.deploy.engines; periodic evaluation runs in JAX):
  config.eval.engine = 'auto'  # 'auto' (fastest installed), 'jax', 'onnxruntime', 'openvino'
  config.eval.precision = ''  # '' = config.model.dtype's; 'float32', 'bfloat16' or 'int8'
  config.eval.threads = 0  # ONNX Runtime's / OpenVINO's threads; 0 = theirs
  config.eval.calibration = ''  # INT8 of weights that ship no INT8 file: config or folder

  # predict mode (esnet_jax.inference.predict); TTA from eval.flip/scales, batch eval_batch_size.
  config.predict = ml_collections.ConfigDict()
  config.predict.input = ''  # image, folder, glob or video
  config.predict.output = ''  # '' = workdir/predictions
  config.predict.checkpoint = ''  # '' = this workdir's latest; or any checkpoint/.pth
  config.predict.alpha = 0.5  # opacity of the class colours in the overlays
  config.predict.palette = 'checkpoint'  # 'checkpoint' colours, or 'dataset' (config.dataset)
  config.predict.submission = False  # Cityscapes test-server labelIds PNGs only
  # What runs the network (esnet_jax.deploy.engines): auto = the fastest installed for the precision.
  config.predict.engine = 'auto'  # 'auto', 'jax', 'onnxruntime' or 'openvino'
  config.predict.precision = ''  # '' = config.model.dtype's; 'float32', 'bfloat16' or 'int8'
  config.predict.threads = 0  # ONNX Runtime's / OpenVINO's threads; 0 = theirs
  config.predict.calibration = ''  # INT8 of weights that ship no INT8 file: config or folder

  # export mode (esnet_jax.deploy.export): the same settings as python -m esnet_jax.export.
  config.export = ml_collections.ConfigDict()
  config.export.format = 'stablehlo'  # or 'onnx' (needs the export extra)
  config.export.height = 512  # input size, multiples of 8; onnx: 0 = symbolic (any multiple of 8)
  config.export.width = 1024
  config.export.batch = 0  # 0 = a symbolic batch dimension
  config.export.checkpoint = ''  # '' = this workdir's; or any checkpoint/.pth/pretrained:NAME
  config.export.which = 'latest'  # 'latest' or 'best' checkpoint of a workdir
  config.export.fold_bn = True  # BatchNorm folded into the convolutions
  config.export.out = ''  # '' = workdir/esnet.<format>
  config.export.quantize = (
      'none'  # or 'int8' (ONNX: static QDQ quantization, esnet_jax.deploy.quantize)
  )
  config.export.calibration = ''  # int8: a dataset config (e.g. configs/camvid.py) or image folder
  config.export.calibration_images = 32  # int8: images of it to calibrate on, evenly spaced
  return config
