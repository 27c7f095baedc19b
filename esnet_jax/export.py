"""Export ESNet inference for deployment: serialized StableHLO and ONNX.

  python -m esnet_jax.export --checkpoint PATH --format stablehlo|onnx \
      --height H --width W --out FILE [--batch N] [--no-fold-bn]

or, with a config, `python -m esnet_jax.main --config C --workdir W --config.mode=export`
(keys `config.export.*`; the same settings, `options.ExportOptions`).

Both formats compute the same function, with the weights embedded:

  input  `image`:  float32 (batch, H, W, 3), RGB, normalised as in training,
                   (pixel - mean) / std; H and W multiples of 8
  output `logits`: float32 (batch, H, W, num_classes); argmax over the last
                   axis is the class map

Normalisation, padding to a multiple of 8 and the argmax stay outside the
graph so that a deployment can batch, resize and post-process as it likes;
`FILE.json` beside the export records mean, std, class names and colours.
The batch is symbolic unless `--batch` fixes it. BatchNorm is folded into the
convolutions by default (`--no-fold-bn` keeps the BatchNorm layers).

- StableHLO: `jax.export` of the Flax model, serialized (`Exported.serialize()`);
  `load_stablehlo(FILE).call(x)` runs it in any JAX of a compatible version.
- ONNX: jax2onnx cannot be used: every release pins orbax-checkpoint < 0.11.37,
  which conflicts with this project's orbax 0.12, and 0.17.1's Flax max_pool
  plugin fails on `nn.max_pool(x, window, strides=...)` with flax 0.12.8. The
  maintained route taken instead is PyTorch's ONNX exporter (`torch.onnx.export`,
  dynamo, with onnxscript's optimiser folding BatchNorm) applied to the original
  PyTorch network (`esnet_jax.torch_reference`) holding these weights
  (`convert.flax_to_torch`); its parity with the Flax model is tested, and the
  test suite checks onnxruntime against JAX within 1e-4. Needs the `export`
  extra (onnx, onnxruntime, onnxscript, torch).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def _check_size(height: int, width: int, batch: int | None) -> None:
  """The input size `ExportOptions` admits, for callers of the functions below."""
  values = {'height': height, 'width': width, 'batch': batch}
  for field, ok, expected in options.export_size_checks(height, width, batch):
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
    height: int,
    width: int,
    path: str | os.PathLike[str],
    *,
    batch: int | None = None,
    fold_bn: bool = True,
) -> Path:
  """ONNX of the same function through PyTorch's exporter (see the module docstring)."""
  _check_size(height, width, batch)
  try:
    import torch  # pylint: disable=g-import-not-at-top
    from esnet_jax import torch_reference  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError(
        'ONNX export needs PyTorch and onnxscript: pip install '
        '"esnet-jax[export]" (on CPU-only machines: pip install '
        'torch==2.13.0 first).'
    ) from e

  class NHWC(torch.nn.Module):
    """The original NCHW network behind the NHWC interface of the StableHLO export."""

    def __init__(self, network: torch.nn.Module):
      super().__init__()
      self.network = network

    def forward(self, images: torch.Tensor) -> torch.Tensor:
      return self.network(images.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)

  network = torch_reference.from_variables(variables)
  example = torch.zeros((batch or 2, height, width, 3), dtype=torch.float32)
  dynamic = None if batch else ({0: torch.export.Dim('batch')},)
  program = torch.onnx.export(
      NHWC(network).eval(),
      (example,),
      dynamo=True,
      input_names=[INPUT_NAME],
      output_names=[OUTPUT_NAME],
      dynamic_shapes=dynamic,
      optimize=fold_bn,
      verbose=False,
  )
  path = Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  program.save(str(path))
  return path


def write_metadata(
    path: str | os.PathLike[str],
    meta: Mapping[str, Any],
    *,
    fmt: str,
    num_classes: int,
    height: int,
    width: int,
    batch: int | None,
    fold_bn: bool,
) -> Path:
  """`FILE.json`: the input/output contract and what is needed to prepare inputs."""
  info = {
      'format': fmt,
      'input': {
          'name': INPUT_NAME,
          'dtype': 'float32',
          'layout': 'NHWC RGB',
          'shape': [batch or 'batch', height, width, 3],
          'normalisation': '(pixel - mean) / std, pixels in 0..255',
      },
      'output': {
          'name': OUTPUT_NAME,
          'dtype': 'float32',
          'shape': [batch or 'batch', height, width, num_classes],
      },
      'mean': list(meta.get('mean', MEAN_RGB)),
      'std': list(meta.get('std', STD_RGB)),
      'num_classes': num_classes,
      'bn_folded': fold_bn,
      **{k: meta[k] for k in ('class_names', 'colours', 'ignore_label', 'source') if k in meta},
  }
  out = Path(f'{path}.json')
  out.write_text(json.dumps(info, indent=1))
  return out


def export(
    checkpoint: str | os.PathLike[str],
    fmt: str,
    height: int,
    width: int,
    out: str | os.PathLike[str],
    *,
    batch: int | None = None,
    fold_bn: bool = True,
    which: str = 'latest',
) -> tuple[Path, Path]:
  """Export a checkpoint to `out` in `fmt`; returns (export file, metadata file)."""
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
  if settings.format == 'stablehlo':
    exported = export_stablehlo(variables, **size, fold_bn=settings.fold_bn)
    path = save_stablehlo(exported, settings.out)
  else:
    path = export_onnx(variables, path=settings.out, **size, fold_bn=settings.fold_bn)
  return path, write_metadata(
      path,
      meta,
      fmt=settings.format,
      num_classes=num_classes_of(variables),
      **size,
      fold_bn=settings.fold_bn,
  )


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
  parser.add_argument('--height', type=int, required=True, help='multiple of 8')
  parser.add_argument('--width', type=int, required=True, help='multiple of 8')
  parser.add_argument('--out', required=True, help='output file')
  parser.add_argument(
      '--batch', type=int, default=None, help='fixed batch size (default: symbolic)'
  )
  parser.add_argument(
      '--no-fold-bn', action='store_true', help='keep the BatchNorm layers instead of folding them'
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
