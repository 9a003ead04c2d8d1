"""Atomic file writes: readers see the old file or the whole new one, never a part.

Every file nrecur writes (configs, metrics rewrites, summaries, checkpoints,
sampled data) goes to a temporary name in the same folder, is flushed to disk
and renamed over the target. Temporaries are named ``.NAME.XXXX.tmp``, so
:func:`remove_stale_temporaries` can find what a killed process left behind.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable

TEMPORARY_GLOB = ".*.tmp"


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None], mode: int | None = None) -> Path:
    """Write ``path`` with ``write(handle)`` through a temporary file and a rename; returns the path.

    ``mode``: the file's permission bits (default: 0o666 less the umask, like ``open``). On any
    failure (disk full, no permission) the old ``path`` is untouched and the temporary is removed.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
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


def remove_stale_temporaries(
    folder: str | os.PathLike, recursive: bool = True, patterns: tuple[str, ...] = (TEMPORARY_GLOB,)
) -> list[Path]:
    """Delete the temporaries an atomic write leaves behind when its process is killed
    (``.NAME.XXXX.tmp`` in ``folder``, and in its subfolders when ``recursive``; ``patterns``
    narrows that to one kind of file). Returns what was removed."""
    folder = Path(folder)
    found = [p for pattern in patterns for p in (folder.rglob(pattern) if recursive else folder.glob(pattern))]
    removed = []
    for path in found:
        if path.is_file() and path.exists():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


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
