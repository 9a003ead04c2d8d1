"""Writing results while the next analysis computes.

Drawing a result's figures is single-threaded matplotlib work, and an analysis
with two or more threads leaves a core idle for much of its time.
:class:`ResultWriter` writes each result (its JSON and figures) in a process
forked from this one while this process computes the next analysis, one such
process at a time: the child starts with the result in its memory (nothing is
pickled) and ignores Ctrl-C and SIGTERM, so an interrupt waits for the result
under way instead of losing it. It writes in this process instead where the
analyses have one thread (side-by-side jobs, test workers: no core is idle),
inside a daemonic process (which may not start children), or where fork is not
how the platform starts processes (:func:`in_background`; the environment
variable :data:`BACKGROUND_VARIABLE` overrides the thread rule).

Writes that must wait until every analysis is computed (``staged``) go to a
temporary folder inside the target and move into it at
:meth:`ResultWriter.finish`, file by file, each by a rename; a failure leaves
the target as it was.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Callable, NamedTuple

from nrecur._io import move_files, remove_stale_temporaries, temporary_folder

__all__ = ["BACKGROUND_VARIABLE", "ResultWriter", "Written", "in_background"]

Write = Callable[[Path], list[Path]]
"""``write(folder) -> paths``: writes one result's files into ``folder`` and returns their paths."""

BACKGROUND_VARIABLE = "NRECUR_WRITE_IN_BACKGROUND"
"""``0``: write in this process; ``1``: in a forked one (on Linux, outside a daemonic process), whatever the
number of threads."""

_SHIELDED = {signal.SIGINT, signal.SIGTERM}
"""The signals a writing child ignores: they are its parent's to handle."""


def in_background() -> bool:
    """Whether results are written in a forked process: on Linux (where fork is how processes start), outside
    a daemonic process, when the analyses run on more than one thread or :data:`BACKGROUND_VARIABLE` says so."""
    import torch

    chosen = os.environ.get(BACKGROUND_VARIABLE)
    if chosen not in (None, "0", "1"):
        raise ValueError(f"{BACKGROUND_VARIABLE}={chosen!r}: allowed values are 0 (write in this process) and 1 (in a forked one)")
    possible = sys.platform.startswith("linux") and not multiprocessing.current_process().daemon
    return possible and (chosen == "1" or (chosen is None and torch.get_num_threads() > 1))


@dataclass(frozen=True)
class Written:
    """One submitted write, done: ``key`` as submitted, its ``paths`` in the target folder, or the ``error`` it
    failed with and that error's ``trace`` (the traceback's text); ``seconds`` it took (its own, not the wait)."""

    key: Any
    paths: tuple[Path, ...]
    error: BaseException | None
    trace: str
    seconds: float


class _Running(NamedTuple):
    """The write under way in a child process."""

    key: Any
    name: str
    process: BaseProcess
    answer: Connection
    start: float


class ResultWriter:
    """Writes into ``folder`` what :meth:`submit` is given, in the background where :func:`in_background` says
    (``background`` overrides it); ``staged``: nothing in ``folder`` changes before :meth:`finish`. As a context
    manager, leaving it without :meth:`finish` abandons what is staged."""

    def __init__(self, folder: str | Path, staged: bool, background: bool | None = None) -> None:
        self.folder = Path(folder)
        self.staged = staged
        self.background = in_background() if background is None else background
        self.done: list[Written] = []
        self.moving: list[Path] = []  # staged files of the writes that succeeded: what finish moves
        self.running: _Running | None = None
        self.accepted: set = set()  # the keys written or being written: a key not here is still to submit
        self.stage: Path | None = None
        self.made_folder = False
        if self.background:  # matplotlib imported (and its backend chosen) once here, not in every child
            from nrecur.analysis.figures.common import pyplot

            pyplot()

    def __enter__(self) -> "ResultWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.abandon()

    def submit(self, key: Any, name: str, write: Write) -> None:
        """Write one result (``name``, for messages) with ``write``: at once here, or in a child process once
        the one under way has ended."""
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
        answer, send = context.Pipe(duplex=False)
        process = context.Process(target=_child, args=(write, self._target(), send), name=f"nrecur-write-{name}", daemon=True)
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, _SHIELDED)  # the child ignores them before it sees one
        try:
            with warnings.catch_warnings():  # Python 3.12+ warns of fork in a threaded process: the child only writes
                warnings.filterwarnings("ignore", message=".*fork.*", category=DeprecationWarning)
                process.start()
            self.running = _Running(key, name, process, answer, time.perf_counter())
            self.accepted.add(key)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)  # a signal that came meanwhile is raised here
            send.close()

    def take(self) -> list[Written]:
        """The writes done since the last :meth:`take` (none while ``staged``: they are done at :meth:`finish`)."""
        if self.staged:
            return []
        done, self.done = self.done, []
        return done

    def finish(self) -> list[Written]:
        """Wait for every write; with ``staged``, move the files of those that succeeded into the folder, or none
        if one failed. Returns the writes not taken yet, in the order submitted."""
        self._wait()
        if self.stage is not None:
            if any(written.error is not None for written in self.done):
                self.abandon()
            else:
                move_files(self.moving, self.stage, self.folder)
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
        """Wait for the child under way; an interrupt while waiting leaves it under way (a later wait resumes)."""
        if self.running is None:
            return
        key, name, process, answer, start = self.running
        wait([answer, process.sentinel])  # reading only once there is an answer or an end: never half a message
        try:
            paths, error, trace, seconds = answer.recv()
        except EOFError:  # the child ended without answering (killed, out of memory)
            process.join()
            code = process.exitcode
            how = f"was killed by {signal.Signals(-code).name}" if code is not None and code < 0 else f"ended with exit code {code}"
            paths, error, trace, seconds = [], RuntimeError(f"the process writing {name} {how}"), "", time.perf_counter() - start
        self.running = None
        answer.close()
        process.join()
        self._done(key, paths, error, trace, seconds)

    def _done(self, key: Any, paths: list, error: BaseException | None, trace: str, seconds: float) -> None:
        self.accepted.add(key)
        if self.stage is not None:  # where the files will be once they move
            if error is None:
                self.moving += [Path(path) for path in paths]
            paths = [self.folder / Path(path).relative_to(self.stage) for path in paths]
        self.done.append(Written(key, tuple(Path(path) for path in paths), error, trace, seconds))


def _child(write: Write, folder: Path, send: Connection) -> None:
    """The forked writer: ``write(folder)``, its paths or its error sent back; signals are the parent's."""
    for number in _SHIELDED:
        signal.signal(number, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SHIELDED)
    start = time.perf_counter()
    try:
        paths, error, trace = [str(path) for path in write(folder)], None, ""
    except Exception as caught:  # noqa: BLE001 - sent to the parent, which raises or records it
        paths, error, trace = [], caught, traceback.format_exc()
    if error is not None:
        try:  # an error the parent could not rebuild travels as its text
            error = pickle.loads(pickle.dumps(error))
        except Exception:  # noqa: BLE001
            error = RuntimeError(f"{type(error).__name__}: {error}")
    try:
        send.send((paths, error, trace, time.perf_counter() - start))
    except OSError:  # the parent is gone: nobody to tell
        pass
    send.close()
