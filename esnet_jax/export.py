"""Export ESNet inference for deployment: serialized StableHLO and ONNX.

  python -m esnet_jax.export --checkpoint PATH --format stablehlo \
      --height H --width W --out FILE [--batch N] [--no-fold-bn]
  python -m esnet_jax.export --checkpoint PATH --format onnx \
      --out FILE [--height H --width W] [--batch N] [--no-fold-bn] \
      [--quantize int8 --calibration CONFIG_OR_FOLDER [--calibration-images 32]]

or, with a config, `python -m esnet_jax.main --config C --workdir W --config.mode=export`
(keys `config.export.*`; the same settings, `options.ExportOptions`).

Both formats compute the same function, with the weights embedded:

  input  `image`:  float32 (batch, H, W, 3), RGB, normalised as in training,
                   (pixel - mean) / std; H and W multiples of 8
  output `logits`: float32 (batch, H, W, num_classes); argmax over the last
                   axis is the class map

Normalisation, padding to a multiple of 8 and the argmax stay outside the
graph so that a deployment can batch, resize and post-process as it likes;
`FILE.json` beside the export records mean, std, class names and colours, and
which dimensions are symbolic. The batch is symbolic unless `--batch` fixes it.
BatchNorm is folded into the convolutions by default (`--no-fold-bn` keeps the
BatchNorm layers).

- StableHLO: `jax.export` of the Flax model, serialized (`Exported.serialize()`),
  for the one H and W given; `load_stablehlo(FILE).call(x)` runs it in any JAX
  of a compatible version.
- ONNX: `esnet_jax.onnx_graph` writes the graph node by node from the variable
  tree (opset 17), H and W symbolic (any multiples of 8) unless `--height` and
  `--width` fix them. Needs the `export` extra (onnx; onnxruntime to run it).
  Why this route: jax2onnx cannot be used (every release pins
  orbax-checkpoint < 0.11.37, which conflicts with this project's orbax 0.12,
  and 0.17.1's Flax max_pool plugin fails on `nn.max_pool(x, window,
  strides=...)` with flax 0.12.8); PyTorch's exporter on the original network,
  the route before this one, made torch (a multi-GB dependency) a requirement
  of export and fixed H and W at export time. ESNet is a few dozen
  convolutions, so a direct graph from the variable tree is small, exact (the
  tests check onnxruntime against JAX within 1e-4) and symbolic in H and W.
- INT8 ONNX (`--quantize int8`): that graph quantized by ONNX Runtime's static
  quantization, calibrated on `--calibration`'s images (`esnet_jax.quantize`);
  the same input and output, and `FILE.json` records how under `quantization`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp

from esnet_jax import cli, inference, options, weights
from esnet_jax.convert import num_classes_of
from esnet_jax.errors import EsnetError, ExportError, OptionError
from esnet_jax.options import EXPORT_FORMATS as FORMATS, ExportOptions
from esnet_jax.transforms import MEAN_RGB, STD_RGB

INPUT_NAME = 'image'
OUTPUT_NAME = 'logits'


def load_checkpoint(
    path: str | os.PathLike[str], which: str = 'latest'
) -> tuple[dict[str, Any], dict[str, Any]]:
  """(variables, meta) of anything `weights.load` accepts."""
  loaded = weights.load(path, which)
  return loaded.variables, loaded.meta


def inference_function(
    variables: Mapping[str, Any], fold_bn: bool = True
) -> Callable[[jax.Array], jax.Array]:
  """Normalised float32 NHWC images -> float32 logits NHWC, the weights closed over.

  The deployed network (`inference.deployed_network`) on XLA's operations only, so
  that the exported program runs on any platform.
  """
  model, variables = inference.deployed_network(variables, kernels='xla', fold_bn=fold_bn)
  variables = jax.tree.map(jnp.asarray, variables)
  return lambda images: model.apply(variables, images, train=False)


def _check_size(
    height: int | None, width: int | None, batch: int | None, *, symbolic_size: bool = False
) -> None:
  """The input size `ExportOptions` admits, for callers of the functions below."""
  values = {'height': height, 'width': width, 'batch': batch}
  checks = options.export_size_checks(height, width, batch, symbolic_size=symbolic_size)
  for field, ok, expected in checks:
    if not ok:
      raise ExportError(f'--{field}={values[field]!r}: expected {expected}.')


def export_stablehlo(
    variables: Mapping[str, Any],
    height: int,
    width: int,
    *,
    batch: int | None = None,
    fold_bn: bool = True,
) -> jax.export.Exported:
  """`jax.export` of `inference_function`; batch symbolic ('batch') unless given."""
  _check_size(height, width, batch)
  batch_dim = jax.export.symbolic_shape('batch')[0] if batch is None else batch
  spec = jax.ShapeDtypeStruct((batch_dim, height, width, 3), jnp.float32)
  return jax.export.export(jax.jit(inference_function(variables, fold_bn)))(spec)


def save_stablehlo(exported: jax.export.Exported, path: str | os.PathLike[str]) -> Path:
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_bytes(exported.serialize())
  return path


def load_stablehlo(path: str | os.PathLike[str]) -> jax.export.Exported:
  """The exported function of a file written by `save_stablehlo`; run it with `.call(x)`."""
  return jax.export.deserialize(bytearray(Path(path).read_bytes()))


def export_onnx(
    variables: Mapping[str, Any],
    path: str | os.PathLike[str],
    *,
    height: int | None = None,
    width: int | None = None,
    batch: int | None = None,
    fold_bn: bool = True,
) -> Path:
  """ONNX of the same function (`onnx_graph.build_model`), written to `path`.

  batch, height and width are symbolic unless given; height and width are
  multiples of 8 either way.
  """
  _check_size(height, width, batch, symbolic_size=True)
  try:
    import onnx  # pylint: disable=g-import-not-at-top
    from esnet_jax import onnx_graph  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('ONNX export needs onnx: pip install "esnet-jax[export]".') from e
  model = onnx_graph.build_model(
      variables,
      fold_bn=fold_bn,
      batch=batch,
      height=height,
      width=width,
      input_name=INPUT_NAME,
      output_name=OUTPUT_NAME,
  )
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  onnx.save(model, str(path))
  return path


# What each dimension left symbolic admits, for FILE.json.
_SYMBOLIC = {
    'batch': 'any positive size',
    'height': 'any multiple of 8',
    'width': 'any multiple of 8',
}


def _onnx_opset() -> int:
  from esnet_jax import onnx_graph  # pylint: disable=g-import-not-at-top

  return onnx_graph.OPSET


def write_metadata(
    path: str | os.PathLike[str],
    meta: Mapping[str, Any],
    *,
    fmt: str,
    num_classes: int,
    height: int | None,
    width: int | None,
    batch: int | None,
    fold_bn: bool,
    quantization: Mapping[str, Any] | None = None,
) -> Path:
  """`FILE.json`: the input/output contract and what is needed to prepare inputs.

  `quantization` (INT8 files) records how the file was quantized and calibrated.

  A None size is a symbolic dimension: its name stands in the shapes, and
  `input.symbolic_dims` says what it admits (height and width: multiples of 8).
  """
  sizes = {'batch': batch, 'height': height, 'width': width}
  dims = [size if size is not None else name for name, size in sizes.items()]
  symbolic = {name: _SYMBOLIC[name] for name, size in sizes.items() if size is None}
  info = {
      'format': fmt,
      'input': {
          'name': INPUT_NAME,
          'dtype': 'float32',
          'layout': 'NHWC RGB',
          'shape': [*dims, 3],
          'symbolic_dims': symbolic,
          'normalisation': '(pixel - mean) / std, pixels in 0..255',
      },
      'output': {
          'name': OUTPUT_NAME,
          'dtype': 'float32',
          'shape': [*dims, num_classes],
      },
      'mean': list(meta.get('mean', MEAN_RGB)),
      'std': list(meta.get('std', STD_RGB)),
      'num_classes': num_classes,
      'bn_folded': fold_bn,
      **({'onnx_opset': _onnx_opset()} if fmt == 'onnx' else {}),
      **({'quantization': dict(quantization)} if quantization else {}),
      **{k: meta[k] for k in ('class_names', 'colours', 'ignore_label', 'source') if k in meta},
  }
  out = Path(f'{path}.json')
  out.write_text(json.dumps(info, indent=1))
  return out


def export(
    checkpoint: str | os.PathLike[str],
    fmt: str,
    height: int | None,
    width: int | None,
    out: str | os.PathLike[str],
    *,
    batch: int | None = None,
    fold_bn: bool = True,
    which: str = 'latest',
) -> tuple[Path, Path]:
  """Export a checkpoint to `out` in `fmt`; returns (export file, metadata file).

  height and width are required for StableHLO; for ONNX, None leaves them symbolic.
  """
  try:
    settings = ExportOptions(
        checkpoint=os.fspath(checkpoint),
        format=fmt,
        height=height,
        width=width,
        out=os.fspath(out),
        batch=batch,
        fold_bn=fold_bn,
        which=which,
    )
  except OptionError as e:
    raise ExportError(str(e)) from None
  return run_options(settings)


def run_options(settings: ExportOptions) -> tuple[Path, Path]:
  """What `export` does, for settings already checked (the command line, a config)."""
  variables, meta = load_checkpoint(settings.checkpoint, settings.which)
  size = dict(height=settings.height, width=settings.width, batch=settings.batch)
  quantization = None
  if settings.format == 'stablehlo':
    exported = export_stablehlo(variables, **size, fold_bn=settings.fold_bn)
    path = save_stablehlo(exported, settings.out)
  elif settings.quantize == 'int8':
    path, quantization = _export_int8(variables, meta, settings, size)
  else:
    path = export_onnx(variables, settings.out, **size, fold_bn=settings.fold_bn)
  return path, write_metadata(
      path,
      meta,
      fmt=settings.format,
      num_classes=num_classes_of(variables),
      **size,
      fold_bn=settings.fold_bn,
      quantization=quantization,
  )


def _export_int8(
    variables: Mapping[str, Any],
    meta: Mapping[str, Any],
    settings: ExportOptions,
    size: Mapping[str, int | None],
) -> tuple[Path, dict[str, Any]]:
  """The float32 ONNX (in a temporary folder), quantized into `settings.out`."""
  from esnet_jax import quantize  # pylint: disable=g-import-not-at-top

  mean, std = meta.get('mean', MEAN_RGB), meta.get('std', STD_RGB)
  images, calibration = quantize.calibration_images(
      settings.calibration, count=settings.calibration_images, mean=mean, std=std
  )
  with tempfile.TemporaryDirectory(prefix='esnet_int8_') as tmp:
    float_path = export_onnx(
        variables, Path(tmp) / 'float32.onnx', **size, fold_bn=settings.fold_bn
    )
    method = quantize.quantize_int8(float_path, settings.out, images, input_name=INPUT_NAME)
  return Path(settings.out), {**method, 'calibration': calibration}


def _report(paths: tuple[Path, Path]) -> None:
  path, meta_path = paths
  print(f'Wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {meta_path}')


def export_from_config(config: Any, workdir: str | os.PathLike[str]) -> tuple[Path, Path]:
  """`main.py --config.mode=export`: `config.export` (`ExportOptions.from_config`)."""
  paths = run_options(ExportOptions.from_config(config, workdir))
  _report(paths)
  return paths


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.export',
      description='Export ESNet (normalised float32 NHWC images -> logits) to StableHLO '
      'or ONNX.',
  )
  parser.add_argument(
      '--checkpoint',
      required=True,
      help='pretrained:NAME, training workdir, orbax checkpoint, or .pth/.npz weights',
  )
  parser.add_argument('--which', default='latest', choices=options.WHICH)
  parser.add_argument('--format', required=True, choices=FORMATS)
  size = (
      "a multiple of 8; required for stablehlo; for onnx it fixes the graph's %s "
      '(default: symbolic, any multiple of 8)'
  )
  parser.add_argument('--height', type=int, default=None, help=size % 'height')
  parser.add_argument('--width', type=int, default=None, help=size % 'width')
  parser.add_argument('--out', required=True, help='output file')
  parser.add_argument(
      '--batch', type=int, default=None, help='fixed batch size (default: symbolic)'
  )
  parser.add_argument(
      '--no-fold-bn', action='store_true', help='keep the BatchNorm layers instead of folding them'
  )
  parser.add_argument(
      '--quantize',
      default='none',
      choices=options.QUANTIZE_CHOICES,
      help='int8: ONNX Runtime static quantization (QDQ, per-channel int8 weights, uint8 '
      'activations), onnx only',
  )
  parser.add_argument(
      '--calibration',
      default='',
      help='with --quantize int8: a dataset config (its train split, e.g. configs/camvid.py) '
      'or a folder of images to calibrate on',
  )
  parser.add_argument(
      '--calibration-images',
      type=int,
      default=32,
      help='with --quantize int8: how many images of --calibration, evenly spaced (default 32)',
  )
  return parser


def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  try:
    _report(run_options(ExportOptions.from_args(args)))
  except (EsnetError, ImportError) as e:  # ImportError: an optional package is missing.
    print(f'error: {e}', file=sys.stderr)
    return getattr(e, 'exit_status', 2)
  return 0


if __name__ == '__main__':
  cli.run(main)
