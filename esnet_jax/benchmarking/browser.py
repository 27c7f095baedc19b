"""How fast the browser demo runs ESNet in headless Chromium, at a few input sizes.

  python -m esnet_jax.benchmarking.browser [--checkpoint pretrained:camvid | --model FILE.onnx] \
      [--image PHOTO] [--sizes 360x480,240x320] [--runs 20] [--threads N] [--json PATH]

Builds the demo site (`esnet_jax.browser_demo.static_site`), serves it on localhost and has headless
Chromium (`esnet_jax.browser_demo.driver`) show an image, then times the page's own
`session.run` calls at each size (`window.esnet.benchmark`: the network only, after 3
untimed calls; the page's per-frame latency adds normalising, argmax and drawing). Headless
Chromium runs with `--disable-gpu`, so this is the WebAssembly backend (SIMD, threads as
the page picks them: the machine's cores, at most 8, or `--threads`). Without `--image` a
generated street scene is used.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from esnet_jax.system import runner
from esnet_jax.browser_demo import driver, static_site
from esnet_jax.benchmarking import machine
from esnet_jax.errors import OptionError
from esnet_jax.kernels import build as kernel_build


def _sizes(text: str) -> list[str]:
  sizes = []
  for item in text.split(','):
    try:
      h, w = (int(v) for v in item.lower().split('x'))
    except ValueError:
      raise OptionError('sizes', text, 'HxW[,HxW...] with H and W multiples of 8') from None
    if h <= 0 or w <= 0 or h % 8 or w % 8:
      raise OptionError('sizes', text, 'HxW[,HxW...] with H and W multiples of 8')
    sizes.append(f'{h}x{w}')
  return sizes


def _scene(path: Path) -> Path:
  from PIL import Image  # pylint: disable=g-import-not-at-top

  from esnet_jax.data.datasets import synthetic  # pylint: disable=g-import-not-at-top

  image, _ = synthetic.render_scene(np.random.default_rng(0), (360, 480))
  Image.fromarray(image).save(path)
  return path


def measure(
    checkpoint: str | None,
    sizes: Sequence[str],
    *,
    model: str | None = None,
    image: str | None = None,
    runs: int = 20,
    threads: int | None = None,
) -> dict[str, Any]:
  """Per-size network latency in the page (ms, p50 and min) and the machine it ran on.

  The site is CHECKPOINT's float32 export, or MODEL (an export, e.g. an INT8 one).
  """
  with tempfile.TemporaryDirectory(prefix='esnet_browser_bench_') as tmp:
    site = static_site.build_site(Path(tmp) / 'site', checkpoint=checkpoint, model=model)
    # Absolute: the driver runs in the demo's folder, not in the caller's.
    picture = str(Path(image).resolve()) if image else str(_scene(Path(tmp) / 'scene.png'))
    server = static_site.serve(site, port=0)
    server.start()
    try:
      url = server.url + f'?sizes={",".join(sizes)}' + (f'&threads={threads}' if threads else '')
      found = driver.drive('fps', url, image=picture, sizes=list(sizes), runs=runs, warmup=3)
    finally:
      server.shutdown()
      server.server_close()
  rows = []
  for row in found['rows']:
    times = np.asarray(row['times'])
    p50 = float(np.median(times))
    rows.append(
        {
            'height': row['height'],
            'width': row['width'],
            'backend': row['backend'],
            'threads': row['threads'],
            'ms_p50': p50,
            'ms_min': float(times.min()),
            'fps_p50': 1e3 / p50,
            'runs': len(times),
        }
    )
  return {
      'checkpoint': checkpoint,
      'model': model,
      'image': image or 'a generated 360x480 street scene',
      'rows': rows,
      'browser': found['user_agent'],
      'cpu_model': machine.cpu_model(),
      'cpu_isa': kernel_build.cpu_isa(),
      'cpu_threads': kernel_build.threads(),
  }


def build_parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='python -m esnet_jax.benchmarking.browser',
      description="Time the browser demo's network calls in headless Chromium (WebAssembly).",
      formatter_class=argparse.ArgumentDefaultsHelpFormatter,
  )
  weights = parser.add_mutually_exclusive_group()
  weights.add_argument('--checkpoint', default=None, help='weights to export (pretrained:camvid)')
  weights.add_argument(
      '--model', default=None, help='an ONNX file of esnet_jax.deploy.export instead'
  )
  parser.add_argument('--image', default=None, help='the picture shown (default: generated)')
  parser.add_argument(
      '--sizes', default='360x480,240x320', help='input sizes, HxW, comma-separated'
  )
  parser.add_argument('--runs', type=int, default=20, help='timed calls per size')
  parser.add_argument(
      '--threads', type=int, default=None, help="WebAssembly threads (the page's choice)"
  )
  parser.add_argument('--json', default=None, help='also write the result to this file')
  return parser


@runner.command()
def main(argv: Sequence[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if args.runs < 1:
    raise OptionError('runs', args.runs, 'a positive integer')
  if args.image is not None and not Path(args.image).is_file():
    raise OptionError('image', args.image, 'an image file')
  checkpoint = None if args.model else args.checkpoint or 'pretrained:camvid'
  result = measure(
      checkpoint,
      _sizes(args.sizes),
      model=args.model,
      image=args.image,
      runs=args.runs,
      threads=args.threads,
  )
  print(f"{result['browser']}; {result['cpu_model']}, {result['cpu_isa']}")
  for row in result['rows']:
    print(
        f"{row['height']}x{row['width']}  {row['backend']}, {row['threads']} threads  "
        f"p50 {row['ms_p50']:.0f} ms ({row['fps_p50']:.1f} FPS), min {row['ms_min']:.0f} ms, "
        f"{row['runs']} runs"
    )
  if args.json:
    Path(args.json).write_text(json.dumps(result, indent=2) + '\n')
  return 0


if __name__ == '__main__':
  runner.run(main)
