"""The ONNX files the runtimes load, made from the weights once and kept in the cache.

ONNX Runtime and OpenVINO run `esnet_jax.deploy.export`'s ONNX graph (H and W symbolic). Its
float32 file takes a fraction of a second to write; its INT8 file needs a calibration
over real images (a minute or more), so both are kept in the package's cache
(`$ESNET_JAX_CACHE_DIR`, default `~/.cache/esnet_jax`, under `engines/`) keyed by a hash
of the weights, and found again by any later run on the same weights. Weights shipped
with the package (`pretrained:NAME`) ship their INT8 file too, calibrated on the data
they were trained on (`esnet_jax.weights.pretrained`), so INT8 needs no calibration for them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from esnet_jax.system import output_files
from esnet_jax.errors import OptionError

CACHE_ENV = 'ESNET_JAX_CACHE_DIR'


def cache_dir() -> Path:
  """Where the engines' files are kept: `$ESNET_JAX_CACHE_DIR/engines`."""
  root = Path(os.environ.get(CACHE_ENV) or Path.home() / '.cache' / 'esnet_jax')
  return root / 'engines'


def weights_key(variables: Mapping[str, Any]) -> str:
  """A sha256 of the weights (every leaf's path, shape, dtype and bytes): the cache's key."""
  digest = hashlib.sha256()

  def visit(prefix: str, tree: Any) -> None:
    if isinstance(tree, Mapping):
      for key in sorted(tree):
        visit(f'{prefix}/{key}', tree[key])
      return
    array = np.asarray(tree)
    digest.update(f'{prefix}:{array.shape}:{array.dtype};'.encode())
    digest.update(np.ascontiguousarray(array).tobytes())

  visit('', {k: variables[k] for k in ('params', 'batch_stats') if k in variables})
  return digest.hexdigest()[:16]


def _write_json(path: Path, info: Mapping[str, Any]) -> None:
  output_files.write_text(path, json.dumps(dict(info), indent=1) + '\n')


def float32_onnx(variables: Mapping[str, Any], meta: Mapping[str, Any]) -> Path:
  """The float32 ONNX export of VARIABLES (H and W symbolic, BatchNorm folded), cached."""
  from esnet_jax.deploy import export  # pylint: disable=g-import-not-at-top

  path = cache_dir() / f'{weights_key(variables)}.float32.onnx'
  if not (path.is_file() and Path(f'{path}.json').is_file()):
    with output_files.replacing(path) as tmp:
      export.export_onnx(variables, tmp)
    export.write_metadata(
        path,
        meta,
        fmt='onnx',
        num_classes=_num_classes(variables),
        height=None,
        width=None,
        batch=None,
        fold_bn=True,
    )
  return path


def _num_classes(variables: Mapping[str, Any]) -> int:
  from esnet_jax.model.esnet import num_classes_of  # pylint: disable=g-import-not-at-top

  return num_classes_of(variables)


def onnx_file(variables: Mapping[str, Any], meta: Mapping[str, Any], settings: Any) -> Path:
  """The ONNX file a runtime loads for `settings.precision` (an `EngineSettings`): the INT8
  QDQ file for 'int8' (calibrated on `settings.calibration` if none is shipped or cached),
  else the float32 export."""
  if settings.precision == 'int8':
    return int8_onnx(
        variables,
        meta,
        calibration=settings.calibration,
        calibration_images=settings.calibration_images,
    )
  return float32_onnx(variables, meta)


def shipped_int8(meta: Mapping[str, Any]) -> Path | None:
  """The INT8 file shipped beside pretrained weights, if META names such weights."""
  from esnet_jax.weights import pretrained  # pylint: disable=g-import-not-at-top

  name = meta.get('pretrained')
  if not name or name not in pretrained.PRETRAINED:
    return None
  return pretrained.int8_file(name)


def int8_onnx(
    variables: Mapping[str, Any],
    meta: Mapping[str, Any],
    *,
    calibration: str = '',
    calibration_images: int = 32,
) -> Path:
  """The INT8 QDQ ONNX file of VARIABLES: shipped, cached, or calibrated now on CALIBRATION.

  Raises:
    OptionError: no INT8 file of these weights is shipped or cached and no calibration
      source was given (`calibration`).
  """
  shipped = shipped_int8(meta)
  if shipped is not None:
    return shipped
  key = weights_key(variables)
  cached = sorted(cache_dir().glob(f'{key}.int8-*.onnx'))
  if cached and not calibration:
    return cached[-1]
  if not calibration:
    raise OptionError(
        'calibration',
        calibration,
        'a dataset config (e.g. configs/camvid.py) or a folder of images to calibrate INT8 on: '
        f'no INT8 file of these weights is shipped or cached yet (cached in {cache_dir()} '
        'once made)',
    )
  from esnet_jax.deploy import export
  from esnet_jax.deploy import export_options  # pylint: disable=g-import-not-at-top

  source = hashlib.sha256(
      f'{output_files.resolved(calibration)}:{calibration_images}'.encode()
  ).hexdigest()[:8]
  path = cache_dir() / f'{key}.int8-{source}.onnx'
  if path.is_file() and Path(f'{path}.json').is_file():
    return path
  path.parent.mkdir(parents=True, exist_ok=True)
  settings = export_options.ExportOptions(
      checkpoint=str(meta.get('source', '(weights in memory)')),
      format='onnx',
      height=None,
      width=None,
      out=str(path),
      quantize='int8',
      calibration=calibration,
      calibration_images=calibration_images,
  )
  export.write_export(variables, meta, settings, path, export.metadata_path(path))
  return path
