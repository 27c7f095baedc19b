"""The browser demo in headless Chromium: the tasks of `browser_demo/web/drive.mjs`, run from Python.

Why a Node.js driver: Playwright's `playwright-core` (a pinned npm package beside the page,
no browser download) drives the system's Chromium, Debian's `chromium`; the Python side
stays on the standard library. Used by the demo's browser test and by
`esnet_jax.benchmarking.browser`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from esnet_jax.browser_demo import static_site
from esnet_jax.errors import DemoError

DRIVER = static_site.WEB / 'drive.mjs'


def chromium_path() -> str:
  """The Chromium to drive: `$ESNET_CHROMIUM`, else `chromium` or `chromium-browser` on PATH.

  Raises:
    DemoError: none is found.
  """
  for candidate in (os.environ.get('ESNET_CHROMIUM'), 'chromium', 'chromium-browser'):
    if candidate and shutil.which(candidate):
      return shutil.which(candidate)
  raise DemoError(
      'the browser check needs Chromium: apt install chromium, or set ESNET_CHROMIUM to its path'
  )


def check_driver() -> None:
  """Raise DemoError (what to install) unless node, playwright-core and Chromium are here."""
  if shutil.which('node') is None:
    raise DemoError('the browser check needs Node.js: apt install nodejs npm')
  if not (static_site.NODE_MODULES / 'playwright-core').is_dir():
    raise DemoError(f'the browser check needs playwright-core: run `{static_site.npm_command()}`')
  chromium_path()


def drive(task: str, url: str, *, timeout_s: float = 300, **args: Any) -> dict[str, Any]:
  """Runs drive.mjs's TASK against the demo at URL; returns the JSON it prints.

  Raises:
    DemoError: the driver or browser is missing, or the task failed (its stderr's tail).
  """
  check_driver()
  spec = {'task': task, 'url': url, 'chromium': chromium_path(), 'timeout_ms': 1000 * timeout_s}
  spec.update(args)
  try:
    done = subprocess.run(
        ['node', str(DRIVER), json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=timeout_s + 120,
        cwd=static_site.WEB,
    )
  except subprocess.TimeoutExpired as e:
    raise DemoError(f'headless Chromium: the {task} task ran past {timeout_s + 120:.0f} s') from e
  if done.returncode != 0:
    tail = ' '.join(done.stderr.split())[-1500:]
    raise DemoError(f'headless Chromium: the {task} task failed: {tail}')
  return json.loads(done.stdout)
