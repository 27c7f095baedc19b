"""esnet_jax.config.options: each tool's settings, the same from its command line and from a config.

For predict, benchmark and export, the same settings are given both ways and
the two options objects must be equal; a bad value is refused once, in the
words of the path it came by.
"""

from __future__ import annotations

import pytest

from configs import benchmark as benchmark_config
from configs import default
from esnet_jax import benchmark
from esnet_jax import export as export_command
from esnet_jax import predict as predict_command
from esnet_jax.data.datasets import CAMVID_CLASSES
from esnet_jax.errors import ConfigError, OptionError
from esnet_jax.config.options import BenchmarkOptions, EvalOptions, PredictOptions
from esnet_jax.deploy.export_options import ExportOptions


def _predict_args(*extra):
  return predict_command.build_parser().parse_args(
      ['--checkpoint', 'runs/a', '--input', 'photos/', '--output', 'out', *extra]
  )


def test_predict_settings_are_the_same_both_ways(tmp_path):
  argv = ['--alpha', '0.3', '--batch-size', '2', '--flip', '--scales', '0.75,1,1.25']
  argv += ['--dtype', 'bfloat16', '--kernels', 'xla', '--palette', 'camvid', '--which', 'best']
  from_args = PredictOptions.from_args(_predict_args(*argv))
  config = default.get_config()
  config.predict.checkpoint = 'runs/a'
  config.predict.input = 'photos/'
  config.predict.output = 'out'
  config.predict.alpha = 0.3
  config.predict.palette = 'dataset'
  config.dataset.name = 'camvid'
  config.eval_batch_size = 2
  config.eval.flip = True
  config.eval.scales = (0.75, 1, 1.25)
  config.model.dtype = 'bfloat16'
  config.model.kernels = 'xla'
  from_config = PredictOptions.from_config(config, tmp_path)
  # A workdir has no 'best' for predict in a config: it reads the latest.
  assert from_args.which == 'best' and from_config.which == 'latest'
  assert from_config == PredictOptions(**{**vars(from_args), 'which': 'latest'})
  assert from_args.class_table == CAMVID_CLASSES and from_args.scales == (0.75, 1.0, 1.25)


def test_predict_precision_in_a_config_supersedes_the_trainings_dtype(tmp_path):
  config = default.get_config()
  config.predict.input = 'a.png'
  config.model.dtype = 'bfloat16'  # How the run trained.
  assert PredictOptions.from_config(config, tmp_path).effective_precision == 'bfloat16'
  for precision in ('float32', 'int8'):
    config.predict.precision = precision
    assert PredictOptions.from_config(config, tmp_path).effective_precision == precision


def test_camvid_configs_train_in_bfloat16_and_evaluate_in_float32(tmp_path):
  from configs import camvid, camvid_long_cpu, camvid_trainval, camvid_trainval_cpu

  for module in (camvid, camvid_trainval_cpu, camvid_long_cpu):
    config = module.get_config()
    config.predict.input = 'a.png'
    assert config.model.dtype == 'bfloat16', module.__name__
    assert EvalOptions.from_config(config).precision == 'float32'
    assert PredictOptions.from_config(config, tmp_path).effective_precision == 'float32'
  assert camvid_trainval.get_config().model.dtype == 'float32'  # The GPU's: XLA's bf16.


def test_predict_defaults_fill_in_the_workdir(tmp_path):
  config = default.get_config()
  config.predict.input = 'a.png'
  options = PredictOptions.from_config(config, tmp_path)
  assert options.checkpoint == str(tmp_path) and options.output == str(tmp_path / 'predictions')
  assert options.class_table is None and options.batch_size == config.eval_batch_size


def test_a_bad_predict_value_names_the_flag_or_the_key(tmp_path):
  with pytest.raises(OptionError, match=r'^--alpha=1.5: expected a number in \[0, 1\]\.$'):
    PredictOptions.from_args(_predict_args('--alpha', '1.5'))
  with pytest.raises(OptionError, match=r'^--scales=\(0.0,\): expected a non-empty list'):
    PredictOptions.from_args(_predict_args('--scales', '0'))
  config = default.get_config()
  config.predict.input = 'a.png'
  config.predict.alpha = 1.5
  with pytest.raises(ConfigError, match=r'^config.predict.alpha=1.5: expected a number in'):
    PredictOptions.from_config(config, tmp_path)
  config.predict.alpha = 0.5
  config.eval_batch_size = 0
  with pytest.raises(ConfigError, match=r'^config.eval_batch_size=0: expected a positive'):
    PredictOptions.from_config(config, tmp_path)
  config.eval_batch_size = 2
  config.predict.palette = 'dataset'
  config.dataset.name = 'kitti'
  with pytest.raises(ConfigError, match=r"^config.dataset.name='kitti'"):
    PredictOptions.from_config(config, tmp_path)


def test_benchmark_settings_are_the_same_both_ways(tmp_path):
  argv = ['--height', '256', '--width', '512', '--batch', '2', '--dtype', 'bfloat16']
  argv += ['--runs', '7', '--warmup', '1', '--no-fold-bn', '--kernels', 'xla']
  argv += ['--num-classes', '11', '--json', str(tmp_path / 'benchmark.json')]
  from_args = BenchmarkOptions.from_args(benchmark.build_parser().parse_args(argv))
  config = benchmark_config.get_config()
  b = config.benchmark
  b.height, b.width, b.batch, b.dtype, b.runs, b.fold_bn = 256, 512, 2, 'bfloat16', 7, False
  b.warmup = 1
  b.num_classes = 11
  config.model.kernels = 'xla'
  assert BenchmarkOptions.from_config(config, tmp_path) == from_args
  # The defaults agree as well (the config file's runs and the CLI's are both MIN_RUNS).
  defaults = BenchmarkOptions.from_config(benchmark_config.get_config(), tmp_path)
  parsed = BenchmarkOptions.from_args(
      benchmark.build_parser().parse_args(['--json', str(tmp_path / 'benchmark.json')])
  )
  assert defaults == BenchmarkOptions(**{**vars(parsed), 'batch': 1})


def test_a_bad_benchmark_value_names_the_flag_or_the_key(tmp_path):
  parse = benchmark.build_parser().parse_args
  with pytest.raises(OptionError, match=r'^--width=100: expected a positive multiple of 8'):
    BenchmarkOptions.from_args(parse(['--width', '100']))
  with pytest.raises(OptionError, match=r'^--compare-jit=True: expected False unless --train'):
    BenchmarkOptions.from_args(parse(['--compare-jit']))
  config = benchmark_config.get_config()
  config.benchmark.runs = 0
  with pytest.raises(ConfigError, match=r'^config.benchmark.runs=0: expected a positive integer'):
    BenchmarkOptions.from_config(config, tmp_path)
  config.benchmark.runs = 5
  config.model.kernels = 'cuda'
  with pytest.raises(ConfigError, match=r"^config.model.kernels='cuda': expected one of"):
    BenchmarkOptions.from_config(config, tmp_path)
  with pytest.raises(OptionError, match=r'^runs=0: expected a positive integer'):
    BenchmarkOptions(runs=0)  # Made in Python: the field's own name.


def test_export_settings_are_the_same_both_ways(tmp_path):
  argv = ['--checkpoint', 'pretrained:camvid', '--format', 'onnx', '--height', '360']
  argv += ['--width', '480', '--out', str(tmp_path / 'esnet.onnx'), '--batch', '4']
  argv += ['--no-fold-bn', '--which', 'best']
  parser = export_command.build_parser()
  from_args = ExportOptions.from_args(parser.parse_args(argv))
  config = default.get_config()
  e = config.export
  e.checkpoint, e.format, e.height, e.width, e.batch = 'pretrained:camvid', 'onnx', 360, 480, 4
  e.fold_bn, e.which = False, 'best'
  assert ExportOptions.from_config(config, tmp_path) == from_args  # out: workdir/esnet.onnx
  config.export.width = 470
  with pytest.raises(ConfigError, match=r'^config.export.width=470: expected a positive multiple'):
    ExportOptions.from_config(config, tmp_path)
  with pytest.raises(OptionError, match=r'^--height=30: expected a positive multiple of 8'):
    ExportOptions.from_args(parser.parse_args([*argv, '--height', '30']))


def test_onnx_size_is_symbolic_unless_given_stablehlo_needs_it(tmp_path):
  """ONNX: no --height/--width (config: 0) is a symbolic size; StableHLO refuses it, in
  the flag's or the key's name."""
  parser = export_command.build_parser()
  argv = ['--checkpoint', 'pretrained:camvid', '--out', str(tmp_path / 'esnet.onnx')]
  from_args = ExportOptions.from_args(parser.parse_args([*argv, '--format', 'onnx']))
  assert (from_args.height, from_args.width, from_args.batch) == (None, None, None)
  config = default.get_config()
  e = config.export
  e.checkpoint, e.format, e.height, e.width, e.out = 'pretrained:camvid', 'onnx', 0, 0, argv[-1]
  assert ExportOptions.from_config(config, tmp_path) == from_args
  fixed = ExportOptions.from_args(parser.parse_args([*argv, '--format', 'onnx', '--width', '64']))
  assert (fixed.height, fixed.width) == (None, 64)
  with pytest.raises(OptionError, match=r'^--width=60: expected a positive multiple of 8'):
    ExportOptions.from_args(parser.parse_args([*argv, '--format', 'onnx', '--width', '60']))
  with pytest.raises(
      OptionError, match=r'^--height=None: expected .*\(only ONNX exports a symbolic size\)'
  ):
    ExportOptions.from_args(parser.parse_args([*argv, '--format', 'stablehlo', '--width', '64']))
  e.format = 'stablehlo'
  with pytest.raises(ConfigError, match=r'^config.export.height=0: expected a positive multiple'):
    ExportOptions.from_config(config, tmp_path)


def test_eval_settings_come_from_the_config_checked_once():
  config = default.get_config()
  config.eval.scales = (0.75, 1, 1.25)
  config.eval.flip = True
  assert EvalOptions.from_config(config) == EvalOptions('', 'latest', (0.75, 1.0, 1.25), True)
  config.eval.scales = (0, 1)
  with pytest.raises(ConfigError, match=r'^config.eval.scales=\(0.0, 1.0\): expected a non-empty'):
    EvalOptions.from_config(config)
  config.eval.scales = (1,)
  config.eval.which = 'newest'
  with pytest.raises(ConfigError, match=r"^config.eval.which='newest': expected one of latest"):
    EvalOptions.from_config(config)
