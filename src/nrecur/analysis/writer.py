"""Writing results while the next analysis computes.

A result's figures are single-threaded matplotlib work, about a second a
figure, and an analysis with two or more threads leaves a core idle for much
of its time. :class:`ResultWriter` writes each result (its JSON and figures)
in a process forked from this one while this process computes the next
analysis, one such process at a time: the child starts with the result in its
memory (nothing is pickled) and ignores Ctrl-C, so an interrupt waits for the
result under way instead of losing it. It writes in this process instead
where the analyses have one thread (side-by-side jobs, test workers: no core
is idle) or where fork is not how the platform starts processes
(:func:`in_background`; ``NRECUR_WRITE_IN_BACKGROUND=0`` or ``1`` decides it
instead).

Writes that must wait until every analysis is computed (``staged``) go to a
temporary folder inside the target and move into it at
:meth:`ResultWriter.finish`, file by file, each by a rename; a failure leaves
the target as it was.
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import sys
import time
import traceback
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, Callable

from nrecur._io import move_files, remove_stale_temporaries, temporary_folder

__all__ = ["BACKGROUND_VARIABLE", "ResultWriter", "Written", "in_background"]

Write = Callable[[Path], list[Path]]
"""``write(folder) -> paths``: writes one result's files into ``folder`` and returns their paths."""


BACKGROUND_VARIABLE = "NRECUR_WRITE_IN_BACKGROUND"
"""The environment variable that decides it instead: ``0`` (in this process) or ``1`` (forked, on Linux)."""


def in_background() -> bool:
    """Whether results are written in a forked process: on Linux (where fork is how processes start), when
    the analyses run on more than one thread, or as :data:`BACKGROUND_VARIABLE` says."""
    import torch

    chosen = os.environ.get(BACKGROUND_VARIABLE)
    if chosen not in (None, "0", "1"):
        raise ValueError(f"{BACKGROUND_VARIABLE}={chosen!r}: allowed values are 0 (write in this process) and 1 (in a forked one)")
    linux = sys.platform.startswith("linux")
    return linux and (chosen == "1" or (chosen is None and torch.get_num_threads() > 1))


@dataclass(frozen=True)
class Written:
    """One submitted write, done: its ``paths`` in the target folder, or the ``error`` it failed with and that
    error's ``trace`` (the traceback's text); ``seconds`` it took (its own, not the wait for it)."""

    key: Any
    paths: tuple[Path, ...]
    error: BaseException | None
    trace: str
    seconds: float


class ResultWriter:
    """Writes into ``folder`` what :meth:`submit` is given, in the background where :func:`in_background` says
    (``background`` overrides it); ``staged``: nothing in ``folder`` changes before :meth:`finish`."""

    def __init__(self, folder: str | Path, staged: bool, background: bool | None = None) -> None:
        self.folder = Path(folder)
        self.staged = staged
        self.background = in_background() if background is None else background
        self.done: list[Written] = []
        self.running: tuple[Any, multiprocessing.process.BaseProcess, Connection, float] | None = None
        self.stage: Path | None = None
        self.made_folder = False
        if self.background:
            import matplotlib.pyplot  # noqa: F401 - imported once here, not in every child

            import nrecur.analysis.figures.common  # noqa: F401

    def submit(self, key: Any, write: Write) -> None:
        """Write one result with ``write`` (after the one under way ends, in the background)."""
        if not self.background:
            start = time.perf_counter()
            try:
                paths, error, trace = write(self._target()), None, ""
            except Exception as caught:  # noqa: BLE001 - the caller raises it or records it
                paths, error, trace = [], caught, traceback.format_exc()
            self._done(key, paths, error, trace, time.perf_counter() - start)
            return
        self._wait()
        context = multiprocessing.get_context("fork")
        receive, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(write, self._target(), send), name=f"nrecur-write-{key}", daemon=True)
        process.start()
        send.close()
        self.running = (key, process, receive, time.perf_counter())  # the start: a child that dies took this long

    def take(self) -> list[Written]:
        """The writes done since the last :meth:`take` (none while ``staged``: they are done at :meth:`finish`)."""
        if self.staged:
            return []
        done, self.done = self.done, []
        return done

    def finish(self) -> list[Written]:
        """Wait for every write; with ``staged``, move them into the folder now (none if one failed). Returns
        those not taken yet, in the order submitted."""
        self._wait()
        if self.stage is not None:
            if any(written.error is not None for written in self.done):
                self.abandon()
            else:
                move_files(self.stage, self.folder)
                shutil.rmtree(self.stage, ignore_errors=True)
                self.stage = None
        done, self.done = self.done, []
        return done

    def abandon(self) -> None:
        """Wait for the write under way and drop what is staged: the folder stays as it was (with ``staged``)."""
        self._wait()
        if self.stage is not None:
            shutil.rmtree(self.stage, ignore_errors=True)
            if self.made_folder and not any(self.folder.iterdir()):
                self.folder.rmdir()
            self.stage = None

    def _target(self) -> Path:
        if not self.staged:
            return self.folder
        if self.stage is None:
            self.made_folder = not self.folder.exists()
            self.folder.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(self.folder, recursive=False)  # a killed writer's (files and stages)
            self.stage = temporary_folder(self.folder, "staged")
        return self.stage

    def _wait(self) -> None:
        if self.running is None:
            return
        key, process, receive, start = self.running
        try:
            paths, error, trace, seconds = receive.recv()  # Ctrl-C here leaves it running: finish waits for it again
        except EOFError:  # the child died before it could answer (killed, out of memory)
            process.join()
            message = f"the process writing {key} ended with exit code {process.exitcode}"
            paths, error, trace, seconds = [], RuntimeError(message), "", time.perf_counter() - start
        self.running = None
        receive.close()
        process.join()
        self._done(key, paths, error, trace, seconds)

    def _done(self, key: Any, paths: list, error: BaseException | None, trace: str, seconds: float) -> None:
        if self.stage is not None:  # where the files will be once they move
            paths = [self.folder / Path(path).relative_to(self.stage) for path in paths]
        self.done.append(Written(key, tuple(Path(path) for path in paths), error, trace, seconds))


def _child(write: Write, folder: Path, send: Connection) -> None:
    """The forked writer: ``write(folder)``, its paths or its error sent back; Ctrl-C is the parent's to handle."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    start = time.perf_counter()
    try:
        answer = ([str(path) for path in write(folder)], None, "")
    except Exception as error:  # noqa: BLE001 - sent to the parent, which raises or records it
        answer = ([], error, traceback.format_exc())
    seconds = time.perf_counter() - start
    try:
        send.send((*answer, seconds))
    except Exception:  # noqa: BLE001 - an error that does not pickle: its text
        send.send(([], RuntimeError(f"{type(answer[1]).__name__}: {answer[1]}"), answer[2], seconds))
    send.close()
