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
Each image reaches the graph as a deployment would feed it (`calibration_size`):

- a graph of fixed height and width (`export --height H --width W`) takes every image
  resized bilinearly to HxW; with one side fixed, that side is resized to it and the
  other scaled alike (aspect kept);
- a symbolic graph takes each image at its own size, except one of more than
  `MAX_CALIBRATION_PIXELS` (more than the largest frames this package's datasets have,
  Cityscapes' 1024x2048), which is downscaled bilinearly, aspect kept, to at most that:
  ONNX Runtime's calibration keeps every activation of the images it runs at once
  (about 2.2 kB a pixel, `memory_budget.CALIBRATION_BYTES_PER_PIXEL`), so a
  50-megapixel photo at full size would need over 100 GB; the scene at a smaller scale
  gives ranges of the same kind of content, an approximation the JSON records.

The JSON's `quantization.calibration.resized` says which of these happened. Images are
then normalised as the export's contract says and padded at the bottom and right to
multiples of 8 with the mean pixel (zero after normalisation), as inference does.

Before any image is decoded, each chosen image's size is read from its file's header and
the memory the calibration will take is checked (`memory_budget.check`); an image PIL
refuses as a decompression bomb is refused by name. Images of different sizes are
calibrated one size at a time (ONNX Runtime stacks the activations of the images it runs
at once, which must then agree in shape), their histograms merged; images of one size,
such as a dataset's, all at once (ONNX Runtime's default).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np
from PIL import Image

from esnet_jax.data import dataset_configs, datasets, image_files, transforms
from esnet_jax.system import memory_budget
from esnet_jax.system.runner import one_line
from esnet_jax.errors import EsnetError, ExportError, InputError, OptionError

METHOD = {
    'tool': 'onnxruntime.quantization.quantize_static',
    'format': 'QDQ',
    'weights': 'int8 in 7 bits ([-64, 64]), per output channel, symmetric',
    'activations': 'uint8, per tensor, asymmetric',
    'calibration_method': 'Percentile',
    'percentile': 99.999,
}
PERCENTILE = METHOD['percentile']
# A symbolic graph's calibration images above this many pixels are downscaled to it (see above).
MAX_CALIBRATION_PIXELS = 1024 * 2048


@dataclasses.dataclass(frozen=True)
class _Candidate:
  """One image of a calibration source, not yet decoded."""

  name: str  # Its file, or the config and example, for messages.
  size: Callable[[], tuple[int, int]]  # (height, width), without decoding the pixels.
  load: Callable[[], np.ndarray]  # uint8 RGB (height, width, 3).


def calibration_size(
    image_height: int, image_width: int, *, height: int | None = None, width: int | None = None
) -> tuple[int, int]:
  """The size an IMAGE_HEIGHT x IMAGE_WIDTH calibration image is resized to, before padding.

  `height` and `width` are the graph's fixed sides (None: symbolic); see the module
  docstring for why each case is resized as it is.
  """
  if height is not None and width is not None:
    return height, width
  if height is not None:
    return height, max(1, round(image_width * height / image_height))
  if width is not None:
    return max(1, round(image_height * width / image_width)), width
  pixels = image_height * image_width
  if pixels <= MAX_CALIBRATION_PIXELS:
    return image_height, image_width
  scale = math.sqrt(MAX_CALIBRATION_PIXELS / pixels)
  return max(1, math.floor(image_height * scale)), max(1, math.floor(image_width * scale))


def calibration_images(
    source: str | os.PathLike[str],
    *,
    count: int,
    mean: Sequence[float],
    std: Sequence[float],
    height: int | None = None,
    width: int | None = None,
) -> tuple[list[np.ndarray], dict[str, Any]]:
  """`count` calibration inputs of SOURCE, each float32 (1, H, W, 3), and how they were chosen.

  `height` and `width`: the graph's fixed input sides, None where symbolic; images are
  resized to them (`calibration_size`).

  Raises:
    OptionError: SOURCE is neither a dataset config nor a folder, or holds too few images
      (its field is `calibration` or `calibration_images`).
    InputError: a chosen image cannot be read (named).
    MemoryBudgetError: the calibration would not fit in this machine's memory.
  """
  path = Path(source)
  if path.is_file() and path.suffix == '.py':
    candidates, described = _config_images(path)
  elif path.is_dir():
    candidates, described = _folder_images(path)
  else:
    raise OptionError(
        'calibration',
        str(source),
        'a dataset config (a .py file with get_config(), e.g. configs/camvid.py) or a folder '
        'of images',
    )
  total = len(candidates)
  if total < count:
    raise OptionError('calibration_images', count, f'at most the {total} image(s) of {source}')
  chosen = [candidates[i] for i in np.linspace(0, total - 1, count).round().astype(int)]
  originals = [c.size() for c in chosen]
  sizes = [calibration_size(*s, height=height, width=width) for s in originals]
  _check_memory(str(source), chosen, sizes, count)
  images = [_prepare(c, size, mean, std) for c, size in zip(chosen, sizes)]
  record = {'source': str(source), **described, 'images': count, 'of': total}
  resized = _resizing(originals, sizes, height, width)
  return images, ({**record, 'resized': resized} if resized else record)


def _resizing(
    originals: Sequence[tuple[int, int]],
    sizes: Sequence[tuple[int, int]],
    height: int | None,
    width: int | None,
) -> str | None:
  """What the JSON records of how the images were resized; None if none was."""
  if height is not None and width is not None:
    return f"bilinear, to the graph's fixed {height}x{width}"
  if height is not None or width is not None:
    side, size = ('height', height) if height is not None else ('width', width)
    return f"bilinear, to the graph's fixed {side} {size}, aspect kept"
  downscaled = sum(original != size for original, size in zip(originals, sizes))
  if not downscaled:
    return None
  return (
      f'{downscaled} image(s) of more than {MAX_CALIBRATION_PIXELS} pixels downscaled '
      'bilinearly to at most that, aspect kept'
  )


def _padded(size: tuple[int, int]) -> tuple[int, int]:
  return transforms.round_up(size[0], 8), transforms.round_up(size[1], 8)


def _check_memory(
    source: str, chosen: Sequence[_Candidate], sizes: Sequence[tuple[int, int]], count: int
) -> None:
  """`memory_budget.check` of the largest set of same-size images (run at once, see above)."""
  groups: dict[tuple[int, int], list[_Candidate]] = {}
  for candidate, size in zip(chosen, sizes):
    groups.setdefault(_padded(size), []).append(candidate)
  (h, w), members = max(groups.items(), key=lambda kv: kv[0][0] * kv[0][1] * len(kv[1]))
  if len(members) == 1:
    what = f'INT8 calibration on {members[0].name} (of calibration={source!r}) at {h}x{w}'
  else:
    what = (
        f'INT8 calibration on {len(members)} images of calibration={source!r} at {h}x{w} '
        f'(calibration_images={count})'
    )
  memory_budget.check(memory_budget.calibration_bytes([h * w] * len(members)), what)


def _header_size(path: Path) -> tuple[int, int]:
  """(height, width) of the image file PATH from its header (PIL decodes no pixels for it).

  Raises:
    InputError: naming PATH, if it cannot be read or PIL refuses it as a decompression bomb.
  """
  try:
    with warnings.catch_warnings():
      # Over PIL's warning limit but under its error limit: downscaled, see above.
      warnings.simplefilter('ignore', Image.DecompressionBombWarning)
      with Image.open(path) as image:
        return image.height, image.width
  except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
    raise InputError(f'Cannot read image {path}: {one_line(e)}') from e


def _config_images(path: Path) -> tuple[list[_Candidate], dict[str, str]]:
  dataset_cfg = dataset_configs.load_dataset_config(path, 'calibration')
  try:
    source = datasets.build_source(dataset_cfg, dataset_cfg.train_split)
  except EsnetError as e:
    raise OptionError(
        'calibration', str(path), f'a dataset config whose train split reads: {e}'
    ) from e
  described = {'dataset': dataset_cfg.name, 'split': dataset_cfg.train_split}
  load = lambda i: lambda: source[i]['image']
  if isinstance(source, datasets.FileSegmentationSource):
    files = [image for image, _ in source.paths]
    candidates = [
        _Candidate(str(f), lambda f=f: _header_size(f), load(i)) for i, f in enumerate(files)
    ]
  else:  # Generated examples (synthetic), all of the split's one size.
    candidates = [
        _Candidate(
            f'{path} {dataset_cfg.train_split} example {i}', lambda: source.max_size, load(i)
        )
        for i in range(len(source))
    ]
  return candidates, described


def calibration_folder_files(path: str | os.PathLike[str]) -> list[Path]:
  """The image files of a calibration folder, in the order they are chosen from.

  Raises:
    InputError: the folder holds no image or video.
  """
  found, _ = image_files.find_inputs([path])
  return [f.path for f in found if f.path.suffix.lower() in image_files.IMAGE_SUFFIXES]


def _folder_images(path: Path) -> tuple[list[_Candidate], dict[str, str]]:
  files = calibration_folder_files(path)
  candidates = [
      _Candidate(str(f), lambda f=f: _header_size(f), lambda f=f: image_files.load_image(f))
      for f in files
  ]
  return candidates, {'folder': str(path)}


def _prepare(
    candidate: _Candidate, size: tuple[int, int], mean: Sequence[float], std: Sequence[float]
) -> np.ndarray:
  """CANDIDATE decoded, resized to SIZE, padded to multiples of 8 and normalised."""
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', Image.DecompressionBombWarning)  # Its size was checked.
    image = transforms.resize_image(candidate.load(), size)
  label = np.zeros(image.shape[:2], np.uint8)
  padded, _ = transforms.pad_to_multiple(
      image, label, 8, ignore_label=0, image_pad_value=np.round(mean)
  )
  return transforms.normalize(padded, mean, std)[None]


class _Reader:
  """ONNX Runtime's CalibrationDataReader over prepared images, one group per size.

  `quantize_static` with `CalibStridedMinMax=1` calls `set_range(i, i + 1)` for each
  of the `len()` groups and collects each group's activations in one go.
  """

  def __init__(self, input_name: str, images: Sequence[np.ndarray]):
    groups: dict[tuple[int, ...], list[np.ndarray]] = {}
    for x in images:
      groups.setdefault(x.shape, []).append(x)
    self._input_name = input_name
    self._groups = list(groups.values())
    self._inputs: Iterator[np.ndarray] = iter(images)

  def __len__(self) -> int:
    return len(self._groups)

  def set_range(self, start_index: int, end_index: int) -> None:
    self._inputs = iter([x for group in self._groups[start_index:end_index] for x in group])

  def get_next(self) -> dict[str, np.ndarray] | None:
    x = next(self._inputs, None)
    return None if x is None else {self._input_name: x}


def quantize_int8(
    float_model: str | os.PathLike[str],
    out: str | os.PathLike[str],
    images: Sequence[np.ndarray],
    *,
    input_name: str,
    name: str | os.PathLike[str] | None = None,
    source: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
  """Writes the INT8 QDQ model of FLOAT_MODEL to OUT; returns METHOD (for the JSON).

  `name` and `source` are what an error calls the output and the calibration source
  (the user's `--out` and `--calibration`, where FLOAT_MODEL and OUT are temporary
  files); by default OUT.

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
            extra_options={'CalibPercentile': PERCENTILE, 'CalibStridedMinMax': 1},
        )
    except Exception as e:  # ORT raises bare Exceptions; name the step and the user's files.
      calibrated = f' calibrated on {source}' if source is not None else ''
      message = one_line(f'{type(e).__name__}: {e}', 600)
      for temporary in (str(prepared), str(float_model), str(out)):
        message = message.replace(temporary, '(temporary file)')
      raise ExportError(f'INT8 quantization of {name or out}{calibrated} failed: {message}') from e
  return dict(METHOD)
