"""An error exit's last output is its one `error:` line, whatever other threads print."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from conftest import REPO
from esnet_jax.system import runner

# A command whose library threads keep printing and whose exit-time handlers print too,
# as orbax's and asyncio's do after a failure.
_NOISY = textwrap.dedent("""
    import atexit, sys, threading, time
    from esnet_jax.system import runner

    def noise():
      while True:
        print('noise from a thread', file=sys.stderr, flush=True)
        time.sleep(0.001)

    def main():
      threading.Thread(target=noise, daemon=True).start()
      atexit.register(lambda: print('noise at exit', file=sys.stderr, flush=True))
      time.sleep(0.05)
      print('work done so far')
      how = sys.argv[1]
      if how == 'failure':
        raise runner.Failure('the workdir /w is in use\\nby another training')
      if how == 'printed':
        print('error: printed by the command itself', file=sys.stderr)
        return 2
      if how == 'bug':
        raise KeyError('missing')
      if how == 'config':
        from esnet_jax import errors
        raise errors.ConfigError('config.batch_size=0: expected a positive integer.')
      if how == 'damaged':
        from esnet_jax import errors
        raise errors.DamagedCheckpointError('checkpoint step 4 in /w\\nis zeroed')
      return 0

    runner.run(main)
""")


def _run(how: str) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-c', _NOISY, how], cwd=REPO, capture_output=True, text=True, timeout=60
  )


@pytest.mark.end_to_end
@pytest.mark.parametrize(
    'how,code,last',
    [
        ('failure', 2, 'error: the workdir /w is in use by another training'),
        ('printed', 2, 'error: printed by the command itself'),
        ('config', 1, 'error: config.batch_size=0: expected a positive integer.'),
        ('damaged', 2, 'error: checkpoint step 4 in /w is zeroed'),
        (
            'bug',
            1,
            "error: unexpected KeyError: 'missing' (a bug in esnet-jax: please report it "
            'with the traceback above).',
        ),
    ],
)
def test_an_error_exit_ends_with_its_error_line(how, code, last):
  out = _run(how)
  assert out.returncode == code, out.stderr[-2000:]
  assert out.stderr.splitlines()[-1] == last, out.stderr[-2000:]
  assert 'noise at exit' not in out.stderr
  assert out.stdout == 'work done so far\n'  # What was printed before is kept.
  if how == 'bug':
    assert 'Traceback' in out.stderr and "KeyError: 'missing'" in out.stderr


@pytest.mark.end_to_end
def test_a_successful_exit_runs_the_exit_handlers():
  out = _run('ok')
  assert out.returncode == 0 and 'noise at exit' in out.stderr


def test_an_error_line_glued_to_another_threads_partial_line_is_written_again():
  # The interleaving CI once met: a thread's line without its newline yet, then the
  # command's `error:` text, then the newlines.
  watch = runner._LastErrorLine()  # pylint: disable=protected-access
  for text in ('noise from a thread', 'error: printed by the command itself', '\n', '\n'):
    watch.saw(text, 'stderr')
  assert watch.followed and watch.line == 'error: printed by the command itself'
  assert watch.last(watch.line) == 'error: printed by the command itself'
  watch.saw('noise from a thread', 'stderr')  # Cut off mid-line by the exit.
  assert watch.last(watch.line) == '\nerror: printed by the command itself'


def test_an_error_line_on_its_own_line_and_last_is_not_written_again():
  watch = runner._LastErrorLine()  # pylint: disable=protected-access
  for text in ('noise\n', 'error: printed by the command itself', '\n', '\n'):
    watch.saw(text, 'stderr')
  assert not watch.followed
  watch.saw('more work\n', 'stdout')  # Output after it, on either stream, follows it.
  assert watch.followed
