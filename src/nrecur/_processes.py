"""Worker processes forked from a server that has imported torch once, instead of each importing it anew.

A fresh Python process that trains first imports torch and, at its first
optimizer, ``torch._dynamo`` (torch.optim imports it lazily): seconds of CPU
before any work. :func:`worker_context` is the multiprocessing context nrecur's
workers start from (the main job's workers, sweep workers, batch drawers): a
fork server — one per process, started at the first worker — that imports
:data:`PRELOAD` and its first caller's modules, then forks each worker. The
server has no torch threads, no CUDA context and no training state: nrecur
never forks a process that trains.

What a caller should know:

* a worker inherits the environment the server had when it started, not the
  caller's later changes. The server starts inside
  :func:`~nrecur._threads.side_by_side`, so OpenMP's wait policy (read once,
  when torch loads in the server) is ``PASSIVE`` unless the environment set one;
* a worker's parent process is the server, which lives as long as any worker
  does, so the kernel's "kill me when my parent dies" cannot tie a worker to
  the process that asked for it: :func:`die_with` does, with a watching thread;
* the server ignores SIGTERM and SIGHUP (a signal to the whole process group
  must not end it before the workers it serves, whose exit codes it reports);
  :func:`worker_started`, a worker's first call, gives them back their defaults,
  ties the worker to its caller and sets its threads.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import select
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from nrecur._threads import side_by_side

__all__ = ["POLL_SECONDS", "PRELOAD", "die_with", "worker_context", "worker_started"]

POLL_SECONDS = 1.0
"""Where a process cannot be watched directly: how often :func:`die_with` looks whether it still runs."""

PRELOAD = ("numpy", "torch", "torch._dynamo")
"""What the server imports before it forks, for every worker: torch, and what torch.optim imports at its first use."""

SERVER_IGNORES = (signal.SIGTERM, signal.SIGHUP)
"""The signals the server ignores and a worker gets back (:func:`worker_started`)."""


def worker_context(preload: Sequence[str] = ()) -> multiprocessing.context.ForkServerContext:
    """The context to start workers from, its server running (started now if it is not). ``preload``: the
    modules the caller's workers run, imported by the server too when this call starts it (one server per
    process: later calls' modules are imported by each worker)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([*PRELOAD, *preload])
    with side_by_side(), _ignoring(SERVER_IGNORES):
        multiprocessing.forkserver.ensure_running()
    return context


@contextlib.contextmanager
def _ignoring(signals: Sequence[signal.Signals]) -> Iterator[None]:
    """Inside: ``signals`` ignored by this process, hence by a program it starts (an ignored signal stays ignored
    across ``exec``); afterwards as before. Only the main thread sets handlers; elsewhere nothing changes."""
    before = {}
    if threading.current_thread() is threading.main_thread():
        before = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)  # None: set outside Python


def worker_started(parent: int, threads: int) -> bool:
    """A worker's first call: SIGTERM and SIGHUP back to their defaults, its death tied to process ``parent``
    (:func:`die_with`), ``threads`` threads for torch and for the native pools numpy and torch use (OpenBLAS,
    OpenMP; their sizes were fixed when the server imported them). False when ``parent`` has already ended: the
    worker should return at once."""
    for sig in SERVER_IGNORES:
        signal.signal(sig, signal.SIG_DFL)
    if not die_with(parent):
        return False
    import threadpoolctl
    import torch

    torch.set_num_threads(threads)
    threadpoolctl.threadpool_limits(threads)
    return True


def die_with(parent: int) -> bool:
    """Have this process killed as soon as process ``parent`` (the one that started it) ends, by a watching
    thread; True while ``parent`` is alive. Linux gives the thread a handle on the process (``pidfd_open``) that
    wakes it at once; elsewhere it looks every :data:`POLL_SECONDS`."""
    try:
        handle = os.pidfd_open(parent)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # pragma: no cover - not Linux (or older than 5.3)
        handle = None
    if not _alive(parent):
        if handle is not None:
            os.close(handle)
        return False
    threading.Thread(target=_watch, args=(parent, handle), daemon=True, name="nrecur-die-with").start()
    return True


def _watch(parent: int, handle: int | None) -> None:
    if handle is not None:
        poller = select.poll()
        poller.register(handle, select.POLLIN)
        poller.poll()  # readable once the process has ended
    else:  # pragma: no cover - not Linux
        while _alive(parent):
            time.sleep(POLL_SECONDS)
    os.kill(os.getpid(), signal.SIGKILL)


def _alive(pid: int) -> bool:
    """Whether process ``pid`` exists and has not exited (a zombie has: it waits only to be reaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # pragma: no cover - no /proc: ask the kernel whether the pid exists
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state not in ("Z", "X")
