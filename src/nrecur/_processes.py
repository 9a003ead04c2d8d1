"""Worker processes that start in milliseconds: forked from a server that has imported torch once.

A fresh Python process that trains pays for importing torch and, at its first
optimizer, ``torch._dynamo`` (torch.optim imports it lazily): about 4 s of CPU
on a 2-core machine, before any work. :func:`worker_context` is the
multiprocessing context nrecur's workers start from (sweep workers, batch
drawers): a fork server — one process per parent, started at the first worker —
that imports :data:`PRELOAD` and then forks each worker. The server has no
torch threads, no CUDA context and no training state, so the workers start as
clean as spawned ones (the reason nrecur never forks the parent itself).

Two consequences a caller should know:

* a worker's parent process is the server, not the process that asked for it,
  and the server lives as long as any worker does: the kernel's "kill me when
  my parent dies" cannot tie a worker to the process that asked for it.
  :func:`die_with` does, with a thread that watches that process;
* a worker inherits the environment the server had when it started. The server
  starts inside :func:`~nrecur._threads.side_by_side`, so OpenMP's wait policy
  (read once, when torch loads in the server) is ``PASSIVE`` unless the
  environment set one.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import select
import signal
import threading
import time
from pathlib import Path

from nrecur._threads import side_by_side

__all__ = ["POLL_SECONDS", "PRELOAD", "die_with", "worker_context"]

POLL_SECONDS = 1.0
"""Where a process cannot be watched directly: how often :func:`die_with` looks whether it still runs."""

PRELOAD = ("torch", "torch._dynamo", "nrecur.train.loop", "nrecur.sweep.groups")
"""What the server imports before it forks: torch, what its first optimizer imports, and nrecur's training."""


def worker_context() -> multiprocessing.context.ForkServerContext:
    """The context to start workers from, its server running (started now if it is not)."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(list(PRELOAD))
    with side_by_side():
        multiprocessing.forkserver.ensure_running()
    return context


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
        return False
    threading.Thread(target=_watch, args=(parent, handle), daemon=True, name="nrecur-die-with").start()
    return True


def _watch(parent: int, handle: int | None) -> None:
    if handle is not None:
        select.select([handle], [], [])  # readable once the process has ended
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
