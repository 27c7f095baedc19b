"""How every command of the package ends: an error exit's last output is its `error:` line.

Orbax, TensorStore and asyncio keep threads and event loops that, when a process
exits after an error, may print thousands of lines of their own (closed event
loops, cancelled reads) after the one line that says what went wrong. `run`
wraps a command's `main`: on success the process exits normally; on an error
exit it flushes what was printed, points the process's stdout and stderr at
/dev/null so that no other thread can print after it, writes the error line
to the terminal's stderr (again, if the command printed it and something came
after or another thread's partial line came before it), on a line of its own,
and ends the process at once, skipping the interpreter's exit-time work, where the noise
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
  """What a command printed: its last `error:` line, whether anything came after it,
  and whether stderr ends mid-line (another thread's partial line, which an error line
  written then would be glued to)."""

  def __init__(self):
    self.line: str | None = None
    self.followed = False
    self._at_line_start = {'stdout': True, 'stderr': True}
    self.lock = threading.Lock()

  def saw(self, text: str, stream: str) -> None:
    """Called, under `lock`, with each write before it reaches `stream`."""
    for piece in text.splitlines(keepends=True):
      content = piece.rstrip('\r\n')
      if content.startswith('error:'):
        # An error line glued to another thread's partial line must be written again.
        self.line, self.followed = content, not self._at_line_start[stream]
      elif content.strip() and self.line is not None:
        self.followed = True
      self._at_line_start[stream] = piece.endswith('\n')

  def last(self, line: str | None) -> str | None:
    """`line` as the last output: on a fresh line of stderr."""
    if line is None or self._at_line_start['stderr']:
      return line
    return '\n' + line


class _Watched:
  """A text stream whose writes `_LastErrorLine` sees, in the order they reach it."""

  def __init__(self, stream: Any, name: str, watch: _LastErrorLine):
    self._stream, self._name, self._watch = stream, name, watch

  def write(self, text: str) -> int:
    with self._watch.lock:  # What reaches the stream has been seen, in the same order.
      self._watch.saw(text, self._name)
      return self._stream.write(text)

  def __getattr__(self, name: str) -> Any:
    return getattr(self._stream, name)


def run(main: Callable[[], int | None]) -> NoReturn:
  """Run a command's `main` (which returns an exit status or raises) and exit with it.

  A command that printed its `error:` line itself and returned a non-zero status
  has that line written again last if anything (another thread) printed after it.
  """
  watch = _LastErrorLine()
  sys.stdout = _Watched(sys.stdout, 'stdout', watch)
  sys.stderr = _Watched(sys.stderr, 'stderr', watch)

  def last(line: str | None) -> Callable[[], str | None]:
    return lambda: watch.last(line)

  try:
    status = main()
  except Failure as e:
    exit_now(int(e.code), last(f'error: {one_line(e.message)}'))
  except errors.EsnetError as e:  # The package's own errors: one line, their status.
    exit_now(e.exit_status, last(f'error: {one_line(e)}'))
  except SystemExit as e:
    if isinstance(e.code, str):  # sys.exit('error: ...') prints its message: the last line.
      exit_now(1, last(one_line(e.code)))
    status = e.code
  except KeyboardInterrupt:
    exit_now(130, last('error: interrupted (Ctrl-C).'))
  except Exception as e:  # pylint: disable=broad-except
    traceback.print_exc()
    exit_now(
        1,
        last(
            f'error: unexpected {type(e).__name__}: {one_line(e, 300)} (a bug in '
            'esnet-jax: please report it with the traceback above).'
        ),
    )
  status = 0 if status is None else int(status)
  if status:
    exit_now(status, lambda: watch.last(watch.line) if watch.followed else None)
  sys.exit(0)
