"""What a piece of work will need in memory, checked against what the machine has before it starts.

A slip such as `--scales 25` for `0.25`, or a 50-megapixel photo among calibration images,
asks XLA or ONNX Runtime for buffers of many gigabytes; failing there names no option and
no file, and may take the machine's swap down with it first. The tools estimate instead
(`inference_bytes`, `calibration_bytes`) and refuse with one line (`check`) that names the
option or file and the size it would take.

The estimates are linear in the pixels the network sees, with slopes measured on the
package's own runs (peak resident memory above the process's baseline, 2026-12-07, AMD
EPYC Zen 4, jax 0.12.1, onnxruntime 1.32; `docs/reliability.md` gives the commands):
ESNet inference keeps about 75 bytes a pixel with the CPU kernels and 107 with XLA's
operations, a flipped view as much again; ONNX Runtime's calibration keeps every
activation of the calibration images it runs at once, about 2.2 kB a pixel. The slopes
below round those up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from esnet_jax.errors import MemoryBudgetError

# Peak bytes per input pixel of one view (one scale, one flip) of ESNet inference, above the
# process's baseline; XLA's operations measured 107, the CPU kernels 75.
INFERENCE_BYTES_PER_PIXEL = 128
# Peak bytes per pixel of the calibration images ONNX Runtime's static quantization runs at
# once (`esnet_jax.deploy.quantize`: every activation of each is kept). Measured 2272 (4 images) and
# 2225 (8), the slope between them 2157; 2560 leaves a 13% margin. The command, run alone:
#   PYTHONPATH=. /usr/bin/time -f %M python measure.py N q    (N = 4, 8; baseline: N skip)
# where measure.py loads pretrained:camvid, takes N images of configs/camvid.py at 360x480
# (`quantize.calibration_images`), exports the float32 ONNX and, with `q`, runs
# `quantize.quantize_int8` on them: (peak KB - peak KB of `4 skip`) * 1024 / (N * 172800).
CALIBRATION_BYTES_PER_PIXEL = 2560
# The share of the free memory a tool may plan to use: the rest is for everything else.
USABLE_FRACTION = 0.8


def _meminfo_available() -> int | None:
  try:
    for line in Path('/proc/meminfo').read_text().splitlines():
      if line.startswith('MemAvailable:'):
        return int(line.split()[1]) * 1024
  except (OSError, ValueError, IndexError):
    pass
  return None


def _cgroup_available() -> int | None:
  """What a cgroup v2 memory limit leaves (limit - usage), if the process runs under one."""
  try:
    limit = Path('/sys/fs/cgroup/memory.max').read_text().strip()
    if limit == 'max':
      return None
    usage = int(Path('/sys/fs/cgroup/memory.current').read_text().strip())
    return max(int(limit) - usage, 0)
  except (OSError, ValueError):
    return None


def available_bytes() -> int:
  """Memory this process can still use: the kernel's MemAvailable, or less under a cgroup limit."""
  candidates = [v for v in (_meminfo_available(), _cgroup_available()) if v is not None]
  if not candidates:
    try:
      candidates.append(os.sysconf('SC_AVPHYS_PAGES') * os.sysconf('SC_PAGE_SIZE'))
    except (ValueError, OSError):
      return 1 << 62  # Unknown: do not refuse.
  return min(candidates)


def inference_bytes(
    height: int,
    width: int,
    *,
    num_classes: int,
    batch: int = 1,
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
) -> int:
  """Estimated peak bytes of segmenting a batch of HEIGHTxWIDTH images with these views.

  Each scale runs the network on the image resized by it (`inference.tta_size`), twice
  with `flip`; the probabilities at full size (float32, `num_classes` a pixel) are kept
  as well.
  """
  views = 2 if flip else 1
  pixels = sum(max(8.0, height * s) * max(8.0, width * s) for s in scales)
  network = INFERENCE_BYTES_PER_PIXEL * views * pixels
  outputs = 2 * 4 * num_classes * height * width
  return int(batch * (network + outputs))


def calibration_bytes(pixels: Sequence[int]) -> int:
  """Estimated peak bytes of calibrating INT8 on images of these pixel counts."""
  return int(CALIBRATION_BYTES_PER_PIXEL * sum(pixels))


def gigabytes(size: int) -> str:
  return f'{size / 1e9:.1f} GB'


def check(needed: int, what: str, *, available: int | None = None) -> None:
  """Raises MemoryBudgetError, naming WHAT and both sizes, if NEEDED would not fit.

  `what` names the option or file, e.g. '--scales 25 on photo.png (360x480)'.
  """
  available = available_bytes() if available is None else available
  if needed > USABLE_FRACTION * available:
    raise MemoryBudgetError(
        f'{what} would need about {gigabytes(needed)} of memory; this machine has '
        f'{gigabytes(available)} free. Use smaller scales, images or batches.'
    )
