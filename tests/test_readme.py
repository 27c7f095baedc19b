"""The README stays a page for users: at most 250 lines, its local links resolving."""

from __future__ import annotations

import re

from conftest import REPO

MAX_LINES = 250


def test_the_readme_is_at_most_250_lines():
  lines = (REPO / 'README.md').read_text().splitlines()
  assert len(lines) <= MAX_LINES, f'README.md has {len(lines)} lines; move detail to docs/'


def test_the_readme_and_usage_links_to_local_files_resolve():
  for page in (REPO / 'README.md', REPO / 'docs' / 'usage.md'):
    for target in re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', page.read_text()):
      if '://' in target:
        continue
      assert (page.parent / target).exists(), f'{page.name} links to missing {target}'
