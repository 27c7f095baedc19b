"""Export ESNet inference for deployment: serialized StableHLO and ONNX.

  python -m esnet_jax.export --checkpoint PATH --format stablehlo \
      --height H --width W --out FILE [--batch N] [--no-fold-bn]
  python -m esnet_jax.export --checkpoint PATH --format onnx \
      --out FILE [--height H --width W] [--batch N] [--no-fold-bn] \
      [--quantize int8 --calibration CONFIG_OR_FOLDER [--calibration-images 32]]

or, with a config, `python -m esnet_jax.main --config C --workdir W --config.mode=export`
(keys `config.export.*`; the same settings, `export_options.ExportOptions`).

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
- ONNX: `esnet_jax.deploy.onnx_graph` writes the graph node by node from the variable
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
  quantization, calibrated on `--calibration`'s images (`esnet_jax.deploy.quantize`);
  the same input and output, and `FILE.json` records how under `quantization`
  (calibration images resized to a fixed-size graph's input, bilinearly).

Nothing the user already has is lost: `--out` and `--out`.json are refused, before any
work, where they would replace a file the export reads (the checkpoint, the calibration
config, a calibration folder's images) or are folders; both are written under temporary
names beside their targets and renamed onto them only once both are complete, so that a
failed export leaves an earlier one as it was (`check_outputs`, `output_files`).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp

from esnet_jax.system import output_files
from esnet_jax.model import deployed
from esnet_jax.weights import pretrained, resolver
from esnet_jax.model.esnet import num_classes_of
from esnet_jax.errors import ExportError, OptionError
from esnet_jax.deploy import export_options
from esnet_jax.deploy.export_options import ExportOptions
from esnet_jax.data.transforms import MEAN_RGB, STD_RGB

INPUT_NAME = 'image'
OUTPUT_NAME = 'logits'


def load_checkpoint(
    path: str | os.PathLike[str], which: str = 'latest'
) -> tuple[dict[str, Any], dict[str, Any]]:
  """(variables, meta) of anything `resolver.load` accepts."""
  loaded = resolver.load(path, which)
  return loaded.variables, loaded.meta


def inference_function(
    variables: Mapping[str, Any], fold_bn: bool = True
) -> Callable[[jax.Array], jax.Array]:
  """Normalised float32 NHWC images -> float32 logits NHWC, the weights closed over.

  The deployed network (`deployed.deployed_network`) on XLA's operations only, so
  that the exported program runs on any platform.
  """
  model, variables = deployed.deployed_network(variables, kernels='xla', fold_bn=fold_bn)
  variables = jax.tree.map(jnp.asarray, variables)
  return lambda images: model.apply(variables, images, train=False)


def _check_size(
    height: int | None, width: int | None, batch: int | None, *, symbolic_size: bool = False
) -> None:
  """The input size `ExportOptions` admits, for callers of the functions below."""
  values = {'height': height, 'width': width, 'batch': batch}
  checks = export_options.export_size_checks(height, width, batch, symbolic_size=symbolic_size)
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
  """Writes EXPORTED, serialized, to PATH whole (`output_files.write_bytes`)."""
  return output_files.write_bytes(path, exported.serialize())


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
  """ONNX of the same function (`onnx_graph.build_model`), written to `path` whole.

  batch, height and width are symbolic unless given; height and width are
  multiples of 8 either way.
  """
  _check_size(height, width, batch, symbolic_size=True)
  try:
    import onnx  # pylint: disable=g-import-not-at-top
    from esnet_jax.deploy import onnx_graph  # pylint: disable=g-import-not-at-top
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
  with output_files.replacing(path) as tmp:
    onnx.save(model, str(tmp))
  return Path(path)


# What each dimension left symbolic admits, for FILE.json.
_SYMBOLIC = {
    'batch': 'any positive size',
    'height': 'any multiple of 8',
    'width': 'any multiple of 8',
}


def _onnx_opset() -> int:
  from esnet_jax.deploy import onnx_graph  # pylint: disable=g-import-not-at-top

  return onnx_graph.OPSET


def metadata(
    meta: Mapping[str, Any],
    *,
    fmt: str,
    num_classes: int,
    height: int | None,
    width: int | None,
    batch: int | None,
    fold_bn: bool,
    quantization: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
  """What `FILE.json` holds: the input/output contract and what is needed to prepare inputs.

  `quantization` (INT8 files) records how the file was quantized and calibrated.

  A None size is a symbolic dimension: its name stands in the shapes, and
  `input.symbolic_dims` says what it admits (height and width: multiples of 8).
  """
  sizes = {'batch': batch, 'height': height, 'width': width}
  dims = [size if size is not None else name for name, size in sizes.items()]
  symbolic = {name: _SYMBOLIC[name] for name, size in sizes.items() if size is None}
  return {
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


def metadata_path(path: str | os.PathLike[str]) -> Path:
  """`FILE.json` of the export FILE."""
  return Path(f'{os.fspath(path)}.json')


def write_metadata(path: str | os.PathLike[str], meta: Mapping[str, Any], **contract: Any) -> Path:
  """Writes `FILE.json` (`metadata(meta, **contract)`) beside the export PATH, whole."""
  return output_files.write_text(
      metadata_path(path), json.dumps(metadata(meta, **contract), indent=1)
  )


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


def _flag(field: str, config: bool) -> str:
  """How the user named an `ExportOptions` field: its flag, or its config key."""
  return f'config.export.{field}' if config else '--' + field.replace('_', '-')


def check_outputs(settings: ExportOptions, *, config: bool = False) -> tuple[Path, Path]:
  """(export file, its JSON) of SETTINGS, both checked before any work is done.

  Neither may be a file the export reads (the checkpoint, a pretrained name's file, the
  calibration config or a calibration folder's images), a folder, or lie under a file.

  `config`: name the settings as `config.export.*` keys, not as flags.

  Raises:
    OutputError: naming the output and the input it would replace.
    InputError: a calibration folder holds no image.
  """
  inputs = []
  if resolver.is_pretrained(settings.checkpoint):
    name = settings.checkpoint[len(resolver.PRETRAINED_PREFIX) :]
    if name in pretrained.PRETRAINED:  # An unknown name fails when the weights are loaded.
      inputs.append(
          (f"{_flag('checkpoint', config)} {settings.checkpoint}'s file", pretrained.get(name).path)
      )
  else:
    inputs.append((_flag('checkpoint', config), settings.checkpoint))
  if settings.quantize == 'int8':
    calibration = Path(settings.calibration)
    flag = _flag('calibration', config)
    inputs.append((flag, calibration))
    if calibration.is_dir():
      from esnet_jax.deploy import quantize  # pylint: disable=g-import-not-at-top

      inputs += [(f'{flag} image', f) for f in quantize.calibration_folder_files(calibration)]
  option = _flag('out', config)
  out = output_files.check_output_file(settings.out, option, inputs)
  json_path = output_files.check_output_file(metadata_path(out), f'{option} (its .json)', inputs)
  return out, json_path


def run_options(settings: ExportOptions, *, config: bool = False) -> tuple[Path, Path]:
  """What `export` does, for settings already checked (the command line, a config).

  The outputs are checked first (`check_outputs`; `config` as there); the export and its
  JSON are written under temporary names beside them and renamed onto them only when
  both are complete, so that a failure leaves earlier files as they were.
  """
  out, json_path = check_outputs(settings, config=config)
  variables, meta = load_checkpoint(settings.checkpoint, settings.which)
  write_export(variables, meta, settings, out, json_path)
  return out, json_path


def write_export(
    variables: Mapping[str, Any],
    meta: Mapping[str, Any],
    settings: ExportOptions,
    out: Path,
    json_path: Path,
) -> None:
  """Writes the export of VARIABLES that SETTINGS ask for to OUT and its JSON to JSON_PATH,
  each under a temporary name renamed into place when both are complete."""
  size = dict(height=settings.height, width=settings.width, batch=settings.batch)
  quantization = None
  with output_files.replacing(out) as tmp, output_files.replacing(json_path) as tmp_json:
    if settings.format == 'stablehlo':
      save_stablehlo(export_stablehlo(variables, **size, fold_bn=settings.fold_bn), tmp)
    elif settings.quantize == 'int8':
      quantization = _export_int8(variables, meta, settings, size, tmp)
    else:
      export_onnx(variables, tmp, **size, fold_bn=settings.fold_bn)
    contract = metadata(
        meta,
        fmt=settings.format,
        num_classes=num_classes_of(variables),
        **size,
        fold_bn=settings.fold_bn,
        quantization=quantization,
    )
    tmp_json.write_text(json.dumps(contract, indent=1))


def _export_int8(
    variables: Mapping[str, Any],
    meta: Mapping[str, Any],
    settings: ExportOptions,
    size: Mapping[str, int | None],
    out: Path,
) -> dict[str, Any]:
  """The float32 ONNX (in a temporary folder), quantized into OUT; returns the JSON's record.

  Calibration images are brought to a fixed-size graph's input size (`quantize`).
  """
  from esnet_jax.deploy import quantize  # pylint: disable=g-import-not-at-top

  mean, std = meta.get('mean', MEAN_RGB), meta.get('std', STD_RGB)
  images, calibration = quantize.calibration_images(
      settings.calibration,
      count=settings.calibration_images,
      mean=mean,
      std=std,
      height=size['height'],
      width=size['width'],
  )
  with tempfile.TemporaryDirectory(prefix='esnet_int8_') as tmp:
    float_path = export_onnx(
        variables, Path(tmp) / 'float32.onnx', **size, fold_bn=settings.fold_bn
    )
    method = quantize.quantize_int8(
        float_path,
        out,
        images,
        input_name=INPUT_NAME,
        name=settings.out,
        source=settings.calibration,
    )
  return {**method, 'calibration': calibration}


def _report(paths: tuple[Path, Path]) -> None:
  path, meta_path = paths
  print(f'Wrote {path} ({path.stat().st_size / 1e6:.1f} MB) and {meta_path}')


def export_from_config(config: Any, workdir: str | os.PathLike[str]) -> tuple[Path, Path]:
  """`main.py --config.mode=export`: `config.export` (`ExportOptions.from_config`)."""
  paths = run_options(ExportOptions.from_config(config, workdir), config=True)
  _report(paths)
  return paths
