"""Threads and OpenMP's wait policy: for a training the user starts, and for the workers nrecur starts side by side.

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads; the number of threads
can change at any time (``torch.set_num_threads``). With OpenMP's default
policy a lone process is fastest (its threads spin briefly between the many
small kernels of a small model), but beside other busy processes the spinning
threads fight them for the cores and a step's threads wait on each other:
throughput collapses. ``PASSIVE`` threads sleep instead.

* A training the user starts (``nrecur train``): :func:`plan_threads` looks at
  how busy the CPU is before torch loads (:func:`busy_cores`) and picks, by
  :func:`choose_threading`, all cores and OpenMP's default policy on a quiet
  machine, or the free cores and ``PASSIVE`` beside busy processes; the
  trainer's :class:`~nrecur.train.threads.ThreadWatcher` then follows the
  load while training (threads only). ``OMP_WAIT_POLICY``, ``OMP_NUM_THREADS``
  and ``--threads`` given by the user always win.
* Workers nrecur starts side by side (:func:`side_by_side`) get ``PASSIVE``
  unless the environment sets a policy.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

__all__ = [
    "CpuMeter", "Threading", "busy_cores", "choose_threading", "plan_threads", "side_by_side", "usable_cores",
]  # fmt: skip

VARIABLE = "OMP_WAIT_POLICY"
THREADS_VARIABLE = "OMP_NUM_THREADS"
SPIN_VARIABLE = "GOMP_SPINCOUNT"
"""GNU OpenMP's own wait setting (how long a thread spins before it sleeps); given, it counts as a chosen policy."""

QUIET = 0.5
"""Below this many cores' worth of other processes' work the machine counts as quiet."""


@dataclass(frozen=True)
class Threading:
    """How many threads a training uses and how OpenMP's threads wait, and why."""

    threads: int
    wait_policy: str | None
    """``OMP_WAIT_POLICY`` for the process (None: OpenMP's default, threads spin briefly before they sleep)."""
    busy: float
    """Cores' worth of other processes' work when chosen (NaN: not measured)."""
    reason: str
    """Why, in words: the line the run's log shows."""
    threads_given: bool = False
    """The user fixed the threads (``--threads`` or ``OMP_NUM_THREADS``): nothing changes them while training."""


def choose_threading(cores: int, busy: float, env: Mapping[str, str], threads: int | None = None) -> Threading:
    """The threads and wait policy for a training on ``cores`` cores while other processes keep ``busy`` cores'
    worth of work going: all cores with OpenMP's default policy when the machine is quiet (``busy`` < :data:`QUIET`),
    else the cores left free (at least one) with ``PASSIVE``. ``threads`` (``--threads``), then ``env``'s
    ``OMP_NUM_THREADS``, fix the threads (a variable that is not a positive integer is ignored, and the reason says
    so); ``env``'s ``OMP_WAIT_POLICY`` fixes the policy."""
    cores = max(1, cores)
    quiet = not busy >= QUIET  # NaN (not measured): as quiet, OpenMP's own choice
    given = threads if threads is not None else _positive_int(env.get(THREADS_VARIABLE))
    if given is not None:
        count, why_count = given, f"{given} threads as given ({'--threads' if threads is not None else THREADS_VARIABLE})"
    elif quiet:
        count, why_count = cores, f"all {cores} cores"
    else:
        count = max(1, min(cores, round(cores - busy)))
        why_count = f"{count} of {cores} cores (the others are busy)"
    if VARIABLE in env:
        policy, why_policy = env[VARIABLE], f"{VARIABLE}={env[VARIABLE]} as given"
    elif SPIN_VARIABLE in env:
        policy, why_policy = None, f"{SPIN_VARIABLE}={env[SPIN_VARIABLE]} as given"
    elif quiet:
        policy, why_policy = None, "OpenMP's default wait policy (threads spin briefly: fastest alone)"
    else:
        policy, why_policy = "PASSIVE", f"{VARIABLE}=PASSIVE (spinning threads would fight the busy processes for the cores)"
    load = "load not measured" if busy != busy else f"other processes busy on {busy:.1f} of {cores} cores"
    raw = env.get(THREADS_VARIABLE)
    if threads is None and raw is not None and given is None:
        why_count += f" ({THREADS_VARIABLE}={raw!r} ignored: not a positive integer)"
    return Threading(count, policy, busy, f"{load}: {why_count}, {why_policy}", threads_given=given is not None)


def _positive_int(text: str | None) -> int | None:
    try:
        value = int(text) if text is not None else None
    except ValueError:
        return None
    return value if value is not None and value >= 1 else None


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class CpuMeter:
    """Cores' worth of work of *other* processes between two readings: the CPU's busy time (``/proc/stat``)
    less this process's own (``os.times``), over the wall time between them. Without ``/proc/stat``: the load
    average less this process's share."""

    def __init__(self) -> None:
        self._last = self._read()

    @staticmethod
    def _read() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as stat:
                fields = [float(x) for x in stat.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0.0)  # idle + iowait
        busy = (sum(fields[:8]) - idle) / ticks  # user..steal; guest time is counted in user already
        own = os.times()
        return time.monotonic(), busy, own.user + own.system

    def others(self) -> float:
        """Other processes' busy cores since the last call (or since the meter was made)."""
        now = self._read()
        last, self._last = self._last, now
        if now is None or last is None:
            load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
            return load
        wall = now[0] - last[0]
        if wall <= 0:
            return float("nan")
        return max(0.0, ((now[1] - last[1]) - (now[2] - last[2])) / wall)


def busy_cores(seconds: float = 0.25) -> float:
    """Cores' worth of other processes' work, measured over ``seconds`` (this process sleeps meanwhile)."""
    meter = CpuMeter()
    time.sleep(seconds)
    return meter.others()


def plan_threads(threads: int | None = None, env: dict[str, str] | None = None) -> Threading:
    """Choose a training's threads and wait policy (:func:`choose_threading`, the load measured now) and set the
    policy in ``env`` (default ``os.environ``) for OpenMP to read when torch loads. Once torch has loaded, the
    policy it loaded with stays, and the choice says so."""
    env = os.environ if env is None else env
    given_threads = threads if threads is not None else _positive_int(env.get(THREADS_VARIABLE))
    policy_given = VARIABLE in env or SPIN_VARIABLE in env
    busy = float("nan") if given_threads is not None and policy_given else busy_cores()
    choice = choose_threading(usable_cores(), busy, env, threads)
    if choice.wait_policy is not None and not policy_given:
        if "torch" in sys.modules:
            loaded = f"torch loaded already with {VARIABLE} {env.get(VARIABLE, 'unset')}, kept"
            return Threading(choice.threads, env.get(VARIABLE), busy, f"{choice.reason}; {loaded}", choice.threads_given)
        env[VARIABLE] = choice.wait_policy
    return choice


@contextlib.contextmanager
def side_by_side() -> Iterator[None]:
    """Processes started inside inherit ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets a policy;
    the environment is as before afterwards."""
    if VARIABLE in os.environ:
        yield
        return
    os.environ[VARIABLE] = "PASSIVE"
    try:
        yield
    finally:
        os.environ.pop(VARIABLE, None)
