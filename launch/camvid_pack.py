"""Pack CamVid train and val small enough to travel to a GPU machine (64 MiB limit).

  python launch/camvid_pack.py SRC DST [--quality 95]

SRC is a CamVid folder in the SegNet layout (train.txt / val.txt or the split folders,
as `esnet_jax.data.datasets.camvid` reads it); DST becomes one in the list-file layout with
the images re-encoded as JPEG (4:4:4 chroma, the given quality; the PNG originals are
about 4x larger: 119 MB for the 468 images against about 28 MiB at quality 95) and the
label PNGs copied unchanged. Only the training images are lossy: evaluate the weights
trained from a pack on the original PNGs.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from PIL import Image

from esnet_jax.data.datasets.camvid import camvid_source

SPLITS = ('train', 'val')


def pack(src: Path, dst: Path, quality: int) -> int:
  """Writes the pack; returns its size in bytes."""
  for split in SPLITS:
    lines = []
    for image, label in camvid_source(src, split).paths:
      image_out = Path(split) / (image.stem + '.jpg')
      label_out = Path(f'{split}annot') / label.name
      (dst / image_out).parent.mkdir(parents=True, exist_ok=True)
      (dst / label_out).parent.mkdir(parents=True, exist_ok=True)
      Image.open(image).convert('RGB').save(dst / image_out, 'JPEG', quality=quality, subsampling=0)
      shutil.copyfile(label, dst / label_out)
      lines.append(f'{image_out} {label_out}')
    (dst / f'{split}.txt').write_text('\n'.join(lines) + '\n')
  return sum(p.stat().st_size for p in dst.rglob('*') if p.is_file())


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('src', type=Path, help='CamVid folder (SegNet layout)')
  parser.add_argument('dst', type=Path, help='output folder (must not exist)')
  parser.add_argument('--quality', type=int, default=95, help='JPEG quality, 1-100')
  args = parser.parse_args(argv)
  if args.dst.exists():
    parser.error(f'{args.dst} exists: name a new folder')
  if not 1 <= args.quality <= 100:
    parser.error(f'--quality {args.quality}: expected 1 to 100')
  size = pack(args.src, args.dst, args.quality)
  print(f'{args.dst}: {size / 2**20:.1f} MiB')
  return 0


if __name__ == '__main__':
  sys.exit(main())
