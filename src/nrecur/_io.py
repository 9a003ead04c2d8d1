"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every file nrecur writes (configs, metrics rewrites, summaries, checkpoints,
sampled data) goes to a temporary name in the same folder, is flushed to disk
and renamed over the target. Temporaries are named ``.NAME.PID@HOST.XXXX.tmp``
after the process writing them, so :func:`remove_stale_temporaries` can remove
what a killed process left behind without touching the temporary of a writer
still at work (an ``analyze`` beside a training). One-line appends
(:func:`append_line`) are a single ``write``: whole or not at all.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

TEMPORARY_GLOB = ".*.tmp"

FOREIGN_TEMPORARY_AGE = 24 * 3600.0
"""Seconds after which a temporary written on another host (a shared file system) counts as stale: its
process cannot be asked whether it still runs."""

_OWNER = re.compile(r"\.(\d+)@([A-Za-z0-9-]*)\.[A-Za-z0-9_]+\.tmp$")


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname().split(".")[0])[:40]


def _owner_tag() -> str:
    return f"{os.getpid()}@{_host()}"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], mode: int | None = None) -> Path:
    """Write ``path`` with ``write(handle)`` through a temporary file and a rename; returns the path.

    ``mode``: the file's permission bits (default: 0o666 less the umask, like ``open``). On any
    failure (disk full, no permission) the old ``path`` is untouched and the temporary is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_owner_tag()}.", suffix=".tmp")
    except OSError as error:  # a read-only folder: name the file that could not be written, not a temporary
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if mode is None:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
        os.chmod(tmp, mode)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException as error:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(error, OSError) and error.errno is not None and error.filename is None:
            # A failed write or flush (disk full) does not say which file; name the one being written.
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` (one line, its newline added) to ``path`` in a single write: a reader sees it whole or
    not at all. An error names the file (a full disk's "No space left on device" does not by itself)."""
    data = (line + "\n").encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
        try:
            written = os.write(fd, data)
        finally:
            os.close(fd)
        if written != len(data):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # a short write: the disk filled up
    except OSError as error:
        if error.errno is not None and error.filename is None:
            raise OSError(error.errno, error.strerror or str(error), str(path)) from error
        raise


def is_stale_temporary(path: str | os.PathLike) -> bool:
    """Whether the temporary ``path`` was left by a process that no longer runs: its process (``PID@HOST`` in
    its name) is gone from this host, or was on another host and the file is older than
    :data:`FOREIGN_TEMPORARY_AGE`; a temporary without an owner in its name (an older version's) is stale."""
    match = _OWNER.search(Path(path).name)
    if match is None:
        return True
    pid, host = int(match.group(1)), match.group(2)
    if host != _host():
        try:
            return time.time() - os.stat(path).st_mtime > FOREIGN_TEMPORARY_AGE
        except FileNotFoundError:
            return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False  # alive, another user's
    return False


def remove_stale_temporaries(
    folder: str | os.PathLike, recursive: bool = True, patterns: tuple[str, ...] = (TEMPORARY_GLOB,)
) -> list[Path]:
    """Delete the temporaries atomic writes left behind when their process was killed
    (``.NAME.PID@HOST.XXXX.tmp`` in ``folder``, and in its subfolders when ``recursive``; ``patterns``
    narrows that to one kind of file), and the temporary folders (:func:`temporary_folder`) with what is in
    them, never one a live process is writing (:func:`is_stale_temporary`). Every writer of a folder calls it
    before it writes there. Returns what was removed."""
    folder = Path(folder)
    found = [p for pattern in patterns for p in (folder.rglob(pattern) if recursive else folder.glob(pattern))]
    removed = []
    for path in found:
        if path.is_dir() and is_stale_temporary(path):
            shutil.rmtree(path, ignore_errors=True)  # a temporary folder (:func:`temporary_folder`)
            removed.append(path)
        elif path.is_file() and is_stale_temporary(path):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def temporary_folder(parent: str | os.PathLike, name: str) -> Path:
    """A new empty folder in ``parent``, named as temporaries are (``.NAME.PID@HOST.XXXX.tmp``): removed by
    :func:`remove_stale_temporaries` once its process is gone."""
    return Path(tempfile.mkdtemp(dir=parent, prefix=f".{name}.{_owner_tag()}.", suffix=".tmp"))


def move_files(paths: Iterable[str | os.PathLike], source: str | os.PathLike, target: str | os.PathLike) -> list[Path]:
    """Move the files ``paths`` (under ``source``) to the same places under ``target`` (the same file system),
    each by a rename; returns their new paths. A reader of ``target`` sees each file old or new, never a part."""
    source, target = Path(source), Path(target)
    moved = []
    for path in map(Path, paths):
        destination = target / path.relative_to(source)
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, destination)
        moved.append(destination)
    for folder in {path.parent for path in moved}:
        _fsync_directory(folder)
    return moved


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)
