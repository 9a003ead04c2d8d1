"""The local backend: trials in worker processes sized to the machine, one thread each.

Workers are started once, forked from a server that has imported torch
(:func:`nrecur._processes.worker_context`: no inherited torch state, no import
per worker), and trained one group after another. Each uses ``threads``
threads (default 1) and OpenMP's ``PASSIVE`` wait policy (unless the
environment set one when the server started): on a busy machine, OpenMP
threads that spin while they wait cut throughput several fold.

Safety: a worker is killed as soon as the sweep process ends
(:func:`nrecur._processes.worker_started`), and holds each trial's lock while
it works, so a rerun never trains a folder that an orphan still writes. A
worker that dies (killed, out of memory) is replaced and its trials go back in
the queue — they resume from their run folders; a trial whose worker died
``max_deaths`` times in one invocation is recorded as failed.
"""

from __future__ import annotations

import collections
import multiprocessing
import multiprocessing.util
import os
import signal
import sys
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Callable

from nrecur._processes import worker_context, worker_started
from nrecur.sweep.groups import GROUP_RUNNERS, TrialGroup
from nrecur.sweep.store import SweepDir, TrialRecord
from nrecur.sweep.trial import record_from_folder
from nrecur.train.folder import RunFolder


def available_cpus() -> int:
    """CPUs this process may run on (its affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _worker_main(connection: Connection, sweep_path: str, runner: str, threads: int, parent: int) -> None:
    if not worker_started(parent, threads):  # the sweep ended before this worker started
        return
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the sweep's to handle: it ends the workers
    sweep = SweepDir(sweep_path)
    while True:
        try:
            group = connection.recv()
        except (EOFError, OSError):
            return
        if group is None:
            # Every run folder and record is written and closed (atomically) before its group's answer is sent:
            # leave without the interpreter's teardown (torch's takes ~0.5 s), but with multiprocessing's
            # finalizers, which release the semaphores this process made (numba's thread pool makes one; left
            # behind, each ends the sweep with the resource tracker's "leaked semaphore" warning).
            multiprocessing.util._run_finalizers()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)
        try:
            connection.send(GROUP_RUNNERS[runner](group, sweep))
        except KeyboardInterrupt:  # SIGTERM from the sweep: training wrote a checkpoint at the step it reached
            sys.exit(128 + signal.SIGTERM)


@dataclass
class _Worker:
    process: multiprocessing.Process
    connection: Connection
    group: TrialGroup | None = None


def run_local(
    groups: list[TrialGroup],
    sweep: SweepDir,
    on_done: Callable[[TrialRecord], None],
    workers: int | None = None,
    threads: int = 1,
    runner: str = "one-by-one",
    max_deaths: int = 2,
) -> None:
    """Train every group in ``workers`` processes (default: one per available CPU, at most one per group)."""
    if not groups:
        return
    count = max(1, min(workers or available_cpus(), len(groups)))
    context = worker_context(preload=("nrecur.sweep.groups",))
    queue = collections.deque(groups)
    deaths: collections.Counter[str] = collections.Counter()
    pool: list[_Worker] = []

    def start() -> _Worker:
        mine, theirs = context.Pipe()
        process = context.Process(
            target=_worker_main, args=(theirs, str(sweep.path), runner, threads, os.getpid()), daemon=True, name="nrecur-sweep-worker"
        )
        process.start()
        theirs.close()
        return _Worker(process, mine)

    finished = False
    try:
        pool = [start() for _ in range(count)]
        while queue or any(worker.group is not None for worker in pool):
            for worker in pool:
                if worker.group is None and queue:
                    worker.group = queue.popleft()
                    worker.connection.send(worker.group)
            busy = [worker for worker in pool if worker.group is not None]
            wait([w.connection for w in busy] + [w.process.sentinel for w in busy])
            for index, worker in enumerate(pool):
                if worker.group is None:
                    continue
                records = _receive(worker)
                if records is not None:
                    # The next group first, then the bookkeeping (which may write the table): no worker waits on it.
                    worker.group = queue.popleft() if queue else None
                    if worker.group is not None:
                        worker.connection.send(worker.group)
                    for record in records:
                        on_done(record)
                elif not worker.process.is_alive():
                    _after_death(worker, sweep, queue, deaths, max_deaths, on_done)
                    worker.connection.close()
                    pool[index] = start()
        finished = True
    finally:
        # Done: ask the workers to leave. Interrupted: end them now, each trial in training after a checkpoint of
        # the step it reached (SIGTERM; nrecur.train.loop), so that the next run resumes it from there.
        for worker in pool:
            try:
                if finished:
                    worker.connection.send(None)
                else:
                    worker.process.terminate()
            except (OSError, ValueError):
                pass
        for worker in pool:
            worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()


def _receive(worker: _Worker) -> list[TrialRecord] | None:
    """The worker's answer if it has sent one, else None (still working, or dead)."""
    try:
        if worker.connection.poll():
            return worker.connection.recv()
    except (EOFError, OSError):
        return None
    return None


def _after_death(worker: _Worker, sweep: SweepDir, queue, deaths, max_deaths: int, on_done) -> None:
    """Requeue what a dead worker left unrecorded; record as failed a trial whose worker died ``max_deaths`` times."""
    group = worker.group
    worker.group = None
    code = worker.process.exitcode
    how = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
    left = []
    for trial in group.trials:
        record = sweep.read_record(trial.trial_id)
        if record is not None:
            on_done(record)
            continue
        deaths[trial.trial_id] += 1
        if deaths[trial.trial_id] >= max_deaths:
            reason = f"its worker process died {max_deaths} times (last: {how})"
            record = record_from_folder(trial, RunFolder(sweep.run_dir(trial.trial_id)), "failed", reason)
            sweep.write_record(record)
            on_done(record)
        else:
            left.append(trial)
    if left:
        queue.appendleft(TrialGroup(tuple(left)))
