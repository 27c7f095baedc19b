"""INT8 ONNX: ONNX Runtime's static quantization of the float32 export, calibrated on real images.

Why static INT8: ONNX Runtime runs the quantized ESNet about twice as fast as the float32
file on a CPU, for a fraction of a point of CamVid val mIoU (docs/benchmarks.md, on
AVX-512 VNNI and on AVX2); dynamic quantization would leave the activations, which
dominate ESNet's cost, in float32. The choices, each recorded in the JSON beside the file:

- `quant_pre_process` first (shape inference, graph optimisation); its symbolic shape
  inference is skipped, it gives up on the symbolic height and width, which the
  quantized graph keeps: calibration images may differ in size.
- QDQ, uint8 activations and int8 weights per output channel (U8S8): the pairing x86's
  8-bit dot products take; int8 activations ran no faster than float32.
- Weights in 7 bits ([-64, 64]): without VNNI, x86 multiplies uint8 by int8 with AVX2's
  `vpmaddubsw`, which sums pairs of products in int16 and saturates; full 8-bit weights
  cost 4.9 points of mIoU on an AVX2-only CPU and none with VNNI. In 7 bits a pair's sum
  fits int16, so one file gives the same classes on every x86 CPU, as fast.
- Ranges at the 99.999th percentile of each activation's histogram over `count` images
  of the calibration source (better than MinMax and than lower percentiles on CamVid).

A calibration source is a dataset config (a `configs/*.py` file: images of its train
split, evenly spaced) or a folder of images (searched recursively, evenly spaced).
Images are normalised as the export's contract says and padded at the bottom and right
to multiples of 8 with the mean pixel (zero after normalisation), as inference does.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from esnet_jax import dataset_configs, datasets, predict, transforms
from esnet_jax.errors import EsnetError, ExportError, OptionError

METHOD = {
    'tool': 'onnxruntime.quantization.quantize_static',
    'format': 'QDQ',
    'weights': 'int8 in 7 bits ([-64, 64]), per output channel, symmetric',
    'activations': 'uint8, per tensor, asymmetric',
    'calibration_method': 'Percentile',
    'percentile': 99.999,
}
PERCENTILE = METHOD['percentile']


def calibration_images(
    source: str | os.PathLike[str],
    *,
    count: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> tuple[list[np.ndarray], dict[str, Any]]:
  """`count` calibration inputs of SOURCE, each float32 (1, H, W, 3), and how they were chosen.

  Raises:
    OptionError: SOURCE is neither a dataset config nor a folder, or holds too few images
      (its field is `calibration` or `calibration_images`).
  """
  path = Path(source)
  if path.is_file() and path.suffix == '.py':
    loaded, described = _config_images(path)
  elif path.is_dir():
    loaded, described = _folder_images(path)
  else:
    raise OptionError(
        'calibration',
        str(source),
        'a dataset config (a .py file with get_config(), e.g. configs/camvid.py) or a folder '
        'of images',
    )
  total = len(loaded)
  if total < count:
    raise OptionError('calibration_images', count, f'at most the {total} image(s) of {source}')
  chosen = np.linspace(0, total - 1, count).round().astype(int)
  images = [_prepare(loaded[i](), mean, std) for i in chosen]
  return images, {'source': str(source), **described, 'images': count, 'of': total}


def _config_images(path: Path) -> tuple[list[Any], dict[str, str]]:
  dataset_cfg = dataset_configs.load_dataset_config(path, 'calibration')
  try:
    source = datasets.build_source(dataset_cfg, dataset_cfg.train_split)
  except EsnetError as e:
    raise OptionError(
        'calibration', str(path), f'a dataset config whose train split reads: {e}'
    ) from e
  loaders = [lambda i=i: source[i]['image'] for i in range(len(source))]
  return loaders, {'dataset': dataset_cfg.name, 'split': dataset_cfg.train_split}


def _folder_images(path: Path) -> tuple[list[Any], dict[str, str]]:
  found, _ = predict.find_inputs([path])
  files = [f.path for f in found if f.path.suffix.lower() in predict.IMAGE_SUFFIXES]
  return [lambda f=f: predict.load_image(f) for f in files], {'folder': str(path)}


def _prepare(image: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
  label = np.zeros(image.shape[:2], np.uint8)
  padded, _ = transforms.pad_to_multiple(
      image, label, 8, ignore_label=0, image_pad_value=np.round(mean)
  )
  return transforms.normalize(padded, mean, std)[None]


class _Reader:
  """ONNX Runtime's CalibrationDataReader over prepared images."""

  def __init__(self, input_name: str, images: Sequence[np.ndarray]):
    self._inputs: Iterator[dict[str, np.ndarray]] = iter({input_name: x} for x in images)

  def get_next(self) -> dict[str, np.ndarray] | None:
    return next(self._inputs, None)


def quantize_int8(
    float_model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    images: Sequence[np.ndarray],
    *,
    input_name: str,
) -> dict[str, Any]:
  """Writes the INT8 QDQ model of FLOAT_MODEL to OUT; returns METHOD (for the JSON).

  Raises:
    ExportError: If ONNX Runtime's quantization tools are missing or fail.
  """
  try:
    # pylint: disable=g-import-not-at-top
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType
    from onnxruntime.quantization import quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process
  except ImportError as e:
    raise ExportError('INT8 export needs onnxruntime: pip install "esnet-jax[export]"') from e
  out = Path(out)
  out.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.TemporaryDirectory() as tmp:
    prepared = Path(tmp) / 'prepared.onnx'
    try:
      quant_pre_process(str(float_model), str(prepared), skip_symbolic_shape=True)
      with contextlib.redirect_stdout(io.StringIO()):  # Its histogram progress lines.
        quantize_static(
            str(prepared),
            str(out),
            _Reader(input_name, images),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            reduce_range=True,
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={'CalibPercentile': PERCENTILE},
        )
    except Exception as e:  # ORT raises bare Exceptions; name the step and the file.
      raise ExportError(
          f'INT8 quantization of {float_model} failed: {type(e).__name__}: {e}'
      ) from e
  return dict(METHOD)
