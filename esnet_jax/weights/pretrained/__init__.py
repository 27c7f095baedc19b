"""ESNet weights trained with this project and shipped inside the package.

Each entry names a weights file beside this module (an `.npz` in the original
PyTorch state-dict layout, so the PyTorch ESNet can load it too), its sha256,
and the dataset facts inference needs: class names, colours, normalisation.
The figures in `val_miou` come from the README's documented eval command; weights trained
on train+val (the field's protocol) state beside it the held-out val figure of the same
recipe trained on train only.
"""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any

from esnet_jax.data.datasets.camvid import CAMVID_CLASSES
from esnet_jax.data.datasets.base import ClassTable
from esnet_jax.errors import PretrainedError
from esnet_jax.data.transforms import MEAN_RGB, STD_RGB

WEIGHTS_DIR = Path(__file__).resolve().parent


@dataclasses.dataclass(frozen=True)
class PretrainedWeights:
  """One shipped set of weights and the facts needed to use it."""

  name: str
  filename: str
  sha256: str
  dataset: str
  class_table: ClassTable
  config: str  # The training config that produced the weights.
  train_split: str  # What they were trained on: with 'val' in it, `val_miou` is not held out.
  val_miou: float  # On the dataset's val split, as stated in the README.
  train_only_val_miou: float  # The same recipe trained on 'train' alone: a held-out val figure.
  # Their INT8 QDQ ONNX file (`esnet_jax.deploy.engines`' int8 precision), calibrated on the data
  # the weights were trained on, its sha256 and its val mIoU (on ONNX Runtime); '' if none.
  int8_filename: str = ''
  int8_sha256: str = ''
  int8_val_miou: float | None = None

  @property
  def path(self) -> Path:
    return WEIGHTS_DIR / self.filename

  @property
  def int8_path(self) -> Path:
    return WEIGHTS_DIR / self.int8_filename

  def meta(self) -> dict[str, Any]:
    """Checkpoint-style metadata (see `checkpointing`) for inference and predict."""
    table = self.class_table
    return {
        'num_classes': table.num_classes,
        'class_names': list(table.names),
        'colours': [list(c) for c in table.colours],
        'ignore_label': table.ignore_label,
        'mean': list(MEAN_RGB),
        'std': list(STD_RGB),
        'pretrained': self.name,
        'dataset': self.dataset,
        'config': self.config,
        'train_split': self.train_split,
        'val_miou': self.val_miou,
        'train_only_val_miou': self.train_only_val_miou,
        'source': str(self.path),
    }


PRETRAINED: dict[str, PretrainedWeights] = {
    'camvid': PretrainedWeights(
        name='camvid',
        filename='camvid.npz',
        sha256='2636221ed58c8fc3c7be07b9d3cf87836c5d6404c3ea1849127ab80eb7ea6025',
        dataset='camvid',
        class_table=CAMVID_CLASSES,
        config='configs/camvid_trainval_cpu.py',
        train_split='train+val',
        val_miou=0.8524,  # Not held out: val is in the training set.
        train_only_val_miou=0.6822,
        # `python -m esnet_jax.export --checkpoint pretrained:camvid --format onnx --quantize
        # int8 --calibration configs/camvid_trainval_cpu.py` (32 of the 468 train+val images);
        # val by onnx_eval, not held out as the float32 figure is not: 85.29% (float32 85.24%).
        int8_filename='camvid.int8.onnx',
        int8_sha256='24d3e52e5557acf88416a765a1cda35396d2c9cd4d983021eb02d64de62ca375',
        int8_val_miou=0.8529,
    ),  # 101 val images, full 360x480, label 11 ignored
}


def available() -> list[str]:
  """Names accepted by `weights_file` and `Segmenter.from_pretrained`."""
  return sorted(PRETRAINED)


def get(name: str) -> PretrainedWeights:
  """The registry entry for `name`."""
  if name not in PRETRAINED:
    raise PretrainedError(
        f'Unknown pretrained weights {name!r}; available: ' f'{", ".join(available()) or "none"}.'
    )
  return PRETRAINED[name]


def file_sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for chunk in iter(lambda: f.read(1 << 20), b''):
      digest.update(chunk)
  return digest.hexdigest()


def int8_file(name: str) -> Path | None:
  """The verified path of `name`'s shipped INT8 ONNX file (sha256 checked), None if it has none."""
  entry = get(name)
  if not entry.int8_filename:
    return None
  return _verified(name, entry.int8_path, entry.int8_sha256)


def _verified(name: str, path: Path, sha256: str) -> Path:
  if not path.is_file():
    raise PretrainedError(
        f'Pretrained weights {name!r}: {path} is missing from the installation; reinstall '
        'esnet-jax.'
    )
  actual = file_sha256(path)
  if actual != sha256:
    raise PretrainedError(
        f'Pretrained weights {name!r}: {path} has sha256 {actual}, expected {sha256}; the '
        'file is corrupt or was replaced. Reinstall esnet-jax.'
    )
  return path


def weights_file(name: str) -> Path:
  """The verified path of `name`'s weights file (its sha256 checked on every call)."""
  entry = get(name)
  return _verified(name, entry.path, entry.sha256)
