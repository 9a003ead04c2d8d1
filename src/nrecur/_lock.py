"""One writer per folder: an OS lock held by the process that writes it.

A run folder, a sweep folder and the main job's folder each have one writer at
a time. The writer takes the folder's lock (:func:`folder_lock`: the file
``.lock`` in the folder) before it writes anything and keeps it until it is
done; a second writer is refused at once with :class:`FolderBusyError`, one
line naming the holder's process id and what to do, instead of mixing its files
with the first's. The lock is ``flock``: the kernel drops it when its process
ends, however it ends, so the lock of a killed writer never blocks anyone and
there is nothing stale to clean up. Readers (``load_run``, ``analyze``,
``report``, ``eval``) take no lock: every file is replaced atomically, and they
read around a checkpoint replaced under them.

``flock`` belongs to an open file description, so a process that opened the
lock file a second time would wait on itself. A process therefore keeps one
description per lock file and counts how often it holds it: the lock is
re-entrant within a process. The holder removes the lock file when it lets go;
a process that locked a file just removed (it opened it before the removal)
notices and locks the new one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_NAME", "FolderBusyError", "folder_lock", "locked"]

LOCK_NAME = ".lock"
"""The lock file of a folder (a run folder, a sweep folder, the main job's folder)."""


class FolderBusyError(BlockingIOError):
    """Another process holds the lock: the message is one line naming it and what to do (the CLI exits 2)."""


@dataclass
class _Held:
    fd: int
    count: int


_HELD: dict[str, _Held] = {}
"""The lock files this process holds (real path → its one open description and how often it is held)."""
_GUARD = threading.Lock()


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as its lock file says."""

    pid: int | None
    doing: str

    def describe(self) -> str:
        return f"{self.doing} (pid {self.pid})" if self.pid is not None else self.doing


def _key(path: Path) -> str:
    return os.path.join(os.path.realpath(path.parent), path.name)


@contextlib.contextmanager
def locked(path: str | os.PathLike, *, doing: str, refused: str = "", wait: bool = False) -> Iterator[None]:
    """Hold the lock file ``path`` (made if missing; its folder must exist) while the block runs.

    ``doing``: what this process does, in words ("a training"), written into the file for a process it
    refuses. ``wait``: wait until the lock is free instead of refusing. Refused (without ``wait``):
    :class:`FolderBusyError` ``"{path's folder} is in use by {holder} (pid N); {refused}"``.
    """
    path = Path(path)
    key = _key(path)
    with _GUARD:
        mine = _HELD.get(key)
        if mine is not None:
            mine.count += 1
    if mine is None:
        fd = _acquire(path, doing, refused, wait)
        with _GUARD:
            mine = _HELD[key] = _Held(fd, 1)
    try:
        yield
    finally:
        with _GUARD:
            mine.count -= 1
            last = mine.count == 0
            if last:
                del _HELD[key]
        if last:
            _release(path, mine.fd)


def _acquire(path: Path, doing: str, refused: str, wait: bool) -> int:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            message = f"{path.parent} is in use by {holder.describe()}"
            raise FolderBusyError(f"{message}; {refused}" if refused else message) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            same = os.path.samestat(os.fstat(fd), os.stat(path))
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {doing}\n".encode(), 0)
            return fd
        os.close(fd)  # its holder removed the file while we waited for it: lock the file there now


def _read_holder(fd: int, patience: float = 0.2) -> Holder:
    """The holder written in the lock file (it writes itself there just after locking: wait a moment for it)."""
    deadline = time.monotonic() + patience
    while True:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
        pid, _, doing = text.partition(" ")
        if pid.isdigit():
            return Holder(int(pid), doing or "another process")
        if time.monotonic() > deadline:
            return Holder(None, "another process")
        time.sleep(0.01)


def _release(path: Path, fd: int) -> None:
    try:
        if os.path.samestat(os.fstat(fd), os.stat(path)):
            os.unlink(path)  # while still held: whoever locks the old file next sees it is gone
    except OSError:
        pass  # gone already, or a read-only folder: the lock ends with the description anyway
    finally:
        os.close(fd)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, *, doing: str, refused: str = "") -> Iterator[Path]:
    """Hold ``folder``'s lock (``folder/.lock``) while the block runs: the one-writer rule of the module docstring.

    The folder (and missing parents) is made if needed; the folders made here are removed again on the way
    out if nothing but the lock was written in them (a start that failed leaves no folder behind).
    ``doing`` and ``refused``: see :func:`locked`.
    """
    folder = Path(folder)
    made: list[Path] = []
    try:
        with contextlib.ExitStack() as stack:
            for attempt in range(3):
                made += _make_folders(folder)
                try:
                    stack.enter_context(locked(folder / LOCK_NAME, doing=doing, refused=refused))
                    break
                except FileNotFoundError:
                    if attempt == 2:  # removed again each time between its making and the lock
                        raise
            yield folder
    finally:
        for path in reversed(made):
            try:
                path.rmdir()  # only an empty folder: a start that wrote nothing leaves none behind
            except OSError:
                break


def _make_folders(folder: Path) -> list[Path]:
    """Make ``folder`` and its missing parents; returns those this call made, outermost first."""
    missing = []
    path = folder
    while not path.exists():
        missing.append(path)
        if path.parent == path:
            break
        path = path.parent
    made = []
    for path in reversed(missing):
        try:
            path.mkdir()
        except FileExistsError:
            continue  # another process made it meanwhile: not ours to remove
        made.append(path)
    return made
