"""What nrecur tells while it works: the ``nrecur`` logger, and progress that reads well anywhere.

Training, the analyses and the jobs write their progress lines, notes and
end-of-run lines to the logger ``nrecur`` at level INFO. Until the application
configures logging itself (a handler on the root logger), nrecur's own handler
prints them to stderr as plain lines, so ``train(...)`` in a script or a
notebook shows its progress and how it ended. To silence them::

    import logging
    logging.getLogger("nrecur").setLevel(logging.WARNING)   # warnings only

(or pass ``progress=False``). An application with its own logging gets the
lines through its handlers instead (``logging.basicConfig(...)``).

:func:`progress` wraps a loop: a tqdm bar when stderr is a terminal; elsewhere
(a file, a pipe, a notebook) one plain line every :data:`PLAIN_EVERY` seconds
and one at the end, with no control codes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["PLAIN_EVERY", "Ticker", "is_terminal", "logger", "progress"]

PLAIN_EVERY = 15.0
"""Seconds between two plain progress lines (output that is not a terminal)."""

T = TypeVar("T")


class _Stderr(logging.StreamHandler):
    """Plain lines to whatever ``sys.stderr`` is at the time (a test's capture, a redirection); silent once the
    root logger has handlers of its own, which then print the lines."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)
        self.setFormatter(logging.Formatter("%(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        if logging.getLogger().handlers:
            return
        self.stream = sys.stderr
        super().emit(record)


def logger() -> logging.Logger:
    """The ``nrecur`` logger, at INFO unless its level was set, with the plain stderr handler of the module
    docstring."""
    log = logging.getLogger("nrecur")
    if not any(isinstance(handler, _Stderr) for handler in log.handlers):
        log.addHandler(_Stderr())
    if log.level == logging.NOTSET:
        log.setLevel(logging.INFO)
    return log


def is_terminal() -> bool:
    """Whether stderr is a terminal (bars redraw in place there; elsewhere lines are plain)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # replaced or closed
        return False


class Ticker:
    """True at most once every ``every`` seconds: the cadence of plain progress lines."""

    def __init__(self, every: float = PLAIN_EVERY) -> None:
        self.every = every
        self._next = time.monotonic() + every

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.every
        return True


def progress(iterable: Iterable[T], description: str, total: int | None = None, enabled: bool = True) -> Iterator[T] | Iterable[T]:
    """``iterable`` with progress on stderr: a tqdm bar on a terminal, plain lines elsewhere (see the module
    docstring); ``iterable`` itself when not ``enabled``."""
    if not enabled:
        return iterable
    if is_terminal():
        from tqdm import tqdm

        return tqdm(iterable, desc=description, total=total, leave=False, dynamic_ncols=True, file=sys.stderr)
    return _plain(iterable, description, total)


def _plain(iterable: Iterable[T], description: str, total: int | None) -> Iterator[T]:
    log = logger()
    ticker = Ticker()
    start = time.perf_counter()
    done = 0
    for item in iterable:
        yield item
        done += 1
        if ticker.due():
            log.info(f"{description}: {_count(done, total)}, {time.perf_counter() - start:.0f} s")
    seconds = time.perf_counter() - start
    if seconds >= 1.0:  # a quick loop says nothing
        log.info(f"{description}: {_count(done, total)} done in {seconds:.1f} s")


def _count(done: int, total: int | None) -> str:
    return f"{done}/{total}" if total else str(done)
