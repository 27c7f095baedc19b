"""launch/camvid_pack.py: a CamVid pack reads as the same dataset, labels bit-exact."""

from __future__ import annotations

import pytest

import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from esnet_jax.data.datasets.camvid import camvid_source

REPO = Path(__file__).parents[2]


def _camvid(root: Path) -> None:
  rng = np.random.default_rng(0)
  for split, count in (('train', 3), ('val', 2)):
    lines = []
    for i in range(count):
      for folder, array in (
          (split, rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)),
          (f'{split}annot', rng.integers(0, 12, (24, 32), dtype=np.uint8)),
      ):
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(root / folder / f'f{i}.png')
      lines.append(f'{split}/f{i}.png {split}annot/f{i}.png')
    (root / f'{split}.txt').write_text('\n'.join(lines) + '\n')


def _pack(*args: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, 'launch/camvid_pack.py', *args],
      cwd=REPO,
      capture_output=True,
      text=True,
      env={'PYTHONPATH': str(REPO), 'PATH': '/usr/bin:/bin'},
  )


@pytest.mark.end_to_end
def test_pack_keeps_labels_and_order_and_images_close(tmp_path):
  src, dst = tmp_path / 'camvid', tmp_path / 'pack'
  _camvid(src)
  done = _pack(str(src), str(dst), '--quality', '95')
  assert done.returncode == 0, done.stderr
  assert 'MiB' in done.stdout
  for split in ('train', 'val+train'):
    original, packed = camvid_source(src, split), camvid_source(dst, split)
    assert [p.stem for p, _ in packed.paths] == [p.stem for p, _ in original.paths]
    assert all(p.suffix == '.jpg' for p, _ in packed.paths)
    for i in range(len(original)):
      a, b = original[i], packed[i]
      np.testing.assert_array_equal(b['label'], a['label'])
      assert b['image'].shape == a['image'].shape
      # Noise images are JPEG's worst case; quality 95 still keeps them close.
      assert np.abs(b['image'].astype(int) - a['image'].astype(int)).mean() < 12


@pytest.mark.end_to_end
def test_pack_refuses_an_existing_folder_and_a_bad_quality(tmp_path):
  src = tmp_path / 'camvid'
  _camvid(src)
  done = _pack(str(src), str(src))
  assert done.returncode == 2 and f'{src} exists' in done.stderr
  done = _pack(str(src), str(tmp_path / 'new'), '--quality', '0')
  assert done.returncode == 2 and '--quality 0: expected 1 to 100' in done.stderr
