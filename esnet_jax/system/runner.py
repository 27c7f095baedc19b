"""How every command of the package ends: an error exit's last output is its `error:` line.

Orbax, TensorStore and asyncio keep threads and event loops that, when a process
exits after an error, may print thousands of lines of their own (closed event
loops, cancelled reads) after the one line that says what went wrong. `run`
wraps a command's `main`: on success the process exits normally; on an error
exit it flushes what was printed, points the process's stdout and stderr at
/dev/null so that no other thread can print after it, writes the error line
to the terminal's stderr (again, if the command printed it and something came
after), and ends
the process at once, skipping the interpreter's exit-time work, where the noise
comes from. An exception no command expected is a bug: its traceback is printed,
then one `error:` line that says so.
"""

from __future__ import annotations

import functools
import os
import sys
import threading
import traceback
from typing import Any, Callable, NoReturn

from esnet_jax import errors


class Failure(SystemExit):
  """Ends a command with one `error:` line and an exit status (2 unless told)."""

  def __init__(self, message: str, status: int = 2):
    super().__init__(status)
    self.message = message


def one_line(text: str, limit: int = 2000) -> str:
  """`text` on one line (a message from a library may span many)."""
  text = ' '.join(str(text).split())
  return text if len(text) <= limit else text[: limit - 3] + '...'


def exit_now(status: int, line: str | Callable[[], str | None] | None = None) -> NoReturn:
  """End the process with `status`; `line`, if given, is the very last output.

  `line` may be a function, asked once nothing else can print any more.
  """
  for stream in (sys.stdout, sys.stderr):
    try:
      stream.flush()
    except (OSError, ValueError):
      pass
  try:
    terminal = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    if callable(line):
      line = line()
    if line is not None:
      os.write(terminal, (line.rstrip('\n') + '\n').encode(errors='replace'))
  except OSError:
    pass
  os._exit(status)  # pylint: disable=protected-access


def command(*also: type[BaseException]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
  """Decorates a command's `main(argv)`: the package's errors (`errors.EsnetError`), a
  missing optional package (ImportError) and the exceptions in `also` end it with one
  `error:` line on stderr and their exit status (2 for those without one), returned, so
  that `run(main)` exits with it and a test may call `main` in-process."""
  expected = (errors.EsnetError, ImportError, *also)

  def decorate(main: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(main)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
      try:
        return main(*args, **kwargs)
      except expected as e:
        print(f'error: {one_line(e)}', file=sys.stderr)
        return getattr(e, 'exit_status', 2)

    return wrapped

  return decorate


class _LastErrorLine:
  """What a command printed: its last `error:` line, and whether anything came after it."""

  def __init__(self):
    self.line: str | None = None
    self.followed = False
    self._lock = threading.Lock()

  def saw(self, text: str) -> None:
    with self._lock:
      for line in text.splitlines():
        if line.startswith('error:'):
          self.line, self.followed = line, False
        elif line.strip() and self.line is not None:
          self.followed = True


class _Watched:
  """A text stream whose writes `_LastErrorLine` sees."""

  def __init__(self, stream: Any, watch: _LastErrorLine):
    self._stream, self._watch = stream, watch

  def write(self, text: str) -> int:
    self._watch.saw(text)  # First: what reaches the terminal has always been seen.
    return self._stream.write(text)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._stream, name)


def run(main: Callable[[], int | None]) -> NoReturn:
  """Run a command's `main` (which returns an exit status or raises) and exit with it.

  A command that printed its `error:` line itself and returned a non-zero status
  has that line written again last if anything (another thread) printed after it.
  """
  watch = _LastErrorLine()
  sys.stdout, sys.stderr = _Watched(sys.stdout, watch), _Watched(sys.stderr, watch)
  try:
    status = main()
  except Failure as e:
    exit_now(int(e.code), f'error: {one_line(e.message)}')
  except errors.EsnetError as e:  # The package's own errors: one line, their status.
    exit_now(e.exit_status, f'error: {one_line(e)}')
  except SystemExit as e:
    if isinstance(e.code, str):  # sys.exit('error: ...') prints its message: the last line.
      exit_now(1, one_line(e.code))
    status = e.code
  except KeyboardInterrupt:
    exit_now(130, 'error: interrupted (Ctrl-C).')
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    exit_now(
        1,
        f'error: unexpected {type(e).__name__}: {one_line(e, 300)} (a bug in '
        'esnet-jax: please report it with the traceback above).',
    )
  status = 0 if status is None else int(status)
  if status:
    exit_now(status, lambda: watch.line if watch.followed else None)
  sys.exit(0)
