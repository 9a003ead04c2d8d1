"""Threads while training: the count :func:`nrecur._threads.plan_threads` chose, then following the load.

:class:`ThreadWatcher` sets the chosen number of torch threads when training
starts and says in the run's log which threads and wait policy the run has and
why. Every ``every_seconds`` it reads how busy the other processes kept the
CPU since its last look (:class:`nrecur._threads.CpuMeter`) and, when two looks
in a row ask for another count (:func:`nrecur._threads.choose_threading`),
changes the threads: a run that started alone gives a core back when another
busy process appears, and takes it again when that one ends. Threads the user
fixed (``--threads``, ``OMP_NUM_THREADS``) never change. The wait policy cannot
change after torch loaded; the count can, at any step.
"""

from __future__ import annotations

import time

import torch

from nrecur._log import logger
from nrecur._threads import CpuMeter, Threading, choose_threading, usable_cores
from nrecur.train.loop import Callback, StepInfo, Trainer

__all__ = ["ThreadWatcher"]


class ThreadWatcher(Callback):
    """Sets ``choice.threads`` at the start, logs ``choice.reason``, and follows the load while training
    (see the module docstring)."""

    def __init__(self, choice: Threading, every_seconds: float = 3.0, cores: int | None = None) -> None:
        self.choice = choice
        self.every_seconds = every_seconds
        self.cores = cores or usable_cores()
        self.changes: list[tuple[int, int, float]] = []
        """``(step, threads, busy)`` of every change made while training."""
        self._meter: CpuMeter | None = None
        self._next = 0.0
        self._asked: int | None = None

    def apply(self) -> None:
        """Set the chosen number of torch threads now (before the run's first evaluation, say)."""
        torch.set_num_threads(self.choice.threads)

    def on_start(self, trainer: Trainer) -> None:
        self.apply()
        logger().info(f"threads: {self.choice.reason}")
        self._meter = CpuMeter()
        self._next = time.monotonic() + self.every_seconds

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        if self.choice.threads_given or self._meter is None or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.every_seconds
        busy = self._meter.others()
        wanted = choose_threading(self.cores, busy, {}).threads
        if wanted == torch.get_num_threads():
            self._asked = None
        elif self._asked == wanted:  # two looks in a row: not a passing burst
            torch.set_num_threads(wanted)
            self.changes.append((trainer.step, wanted, busy))
            logger().info(f"threads: {wanted} from step {trainer.step:,} (other processes busy on {busy:.1f} of {self.cores} cores)")
            self._asked = None
        else:
            self._asked = wanted
