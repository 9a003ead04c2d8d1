"""What an ensemble's members are made of (see :mod:`nrecur.train.ensemble`).

* :class:`Member`: a :class:`~nrecur.train.loop.Trainer` whose steps its ensemble takes;
* :class:`BatchedEvaluator`: its :class:`~nrecur.train.callbacks.Evaluator`, served scores the
  ensemble computed for all members at once;
* :class:`Replay`: a stand-in model answering with logits computed beforehand, so the objective and
  :func:`~nrecur.train.evaluate.evaluate` run unchanged on one member's share of the vmapped logits;
* :class:`Batches`: every member's training batch of a step, the next steps' drawn in the background
  (batches are pure functions of the seed and the step, so this changes no number).
"""

from __future__ import annotations

import multiprocessing
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Protocol

import numpy as np
import torch
from torch import Tensor, nn

from nrecur._processes import worker_context, worker_started
from nrecur.train.callbacks import Evaluator
from nrecur.train.data import DataSource, draw_batches
from nrecur.train.evaluate import EvalSet, Evaluation
from nrecur.train.loop import StepInfo, Trainer, TrainResult


class EnsembleLike(Protocol):
    def evaluations(self, member: Trainer) -> dict[str, Evaluation]: ...


class Member(Trainer):
    """One model of an ensemble: a :class:`Trainer` whose steps the :class:`Ensemble` takes for it."""

    def start_clock(self, started: float) -> None:
        """Count training time from ``started`` (a ``time.perf_counter()`` value), as ``fit`` does."""
        self._clock = started - self.seconds

    def train_step(self) -> StepInfo:
        raise RuntimeError("an ensemble member takes its steps with its ensemble (Ensemble.fit)")

    def finish(self) -> TrainResult:
        """End as ``fit`` ends: stop reason, training time, the callbacks' ``on_end``."""
        if self.stop_reason is None:
            self.stop_reason = "steps"
        self.seconds = self.elapsed()
        for callback in self.callbacks:
            callback.on_end(self)
        return self.result()


class BatchedEvaluator(Evaluator):
    """The :class:`Evaluator` of a member, with its scores computed for all members at once by the ensemble."""

    def __init__(self, ensemble: EnsembleLike, eval_sets: dict[str, EvalSet]) -> None:
        super().__init__(eval_sets)
        self.ensemble = ensemble

    def evaluate_all(self, trainer: Trainer) -> dict[str, Evaluation]:
        return self.ensemble.evaluations(trainer)


class Replay(nn.Module):
    """A stand-in model that answers ``tokens`` with logits computed beforehand for exactly those tokens.

    The objective and :func:`evaluate` then run unchanged on one member's share of the vmapped
    logits. ``tokens [batch, pos]``, ``logits [batch, pos, vocab]``; calls may come in chunks, in order.
    """

    def __init__(self, tokens: Tensor, logits: Tensor) -> None:
        super().__init__()
        self.tokens, self.logits = tokens, logits
        self.anchor = nn.Parameter(torch.empty(0, device=logits.device))  # evaluate() reads the device from it
        self._next = 0

    def forward(self, tokens: Tensor) -> Tensor:
        rows = slice(self._next, self._next + len(tokens))
        expected = self.tokens[rows]
        same = tokens.data_ptr() == expected.data_ptr() and tokens.shape == expected.shape and tokens.stride() == expected.stride()
        if not (same or torch.equal(tokens.to(expected.device), expected)):
            raise RuntimeError("Replay was asked for other tokens than the ones its logits were computed for")
        self._next = rows.stop % len(self.tokens)
        return self.logits[rows]


def stacked_batches(sources: Sequence[DataSource], step: int) -> np.ndarray:
    """``[model, batch, pos + 1]``: each source's training batch of ``step``."""
    return np.stack(draw_batches(sources, step))


_WORKER_SOURCES: list[DataSource] = []
"""In a worker process of :class:`Batches`: the data sources of all members."""


def _start_worker(sources: list[DataSource], parent: int) -> None:
    global _WORKER_SOURCES
    worker_started(parent, threads=1)
    _WORKER_SOURCES = sources


def _draw_in_worker(rows: tuple[int, ...], step: int) -> np.ndarray:
    return stacked_batches([_WORKER_SOURCES[row] for row in rows], step)


class Batches:
    """The training batches of the active members, step by step, drawn ahead in the background.

    ``workers=0``: one thread draws the next step's batches while the main thread is inside torch
    kernels (which release the GIL). ``workers=N``: N processes (from
    :func:`~nrecur._processes.worker_context`, each holding every member's data source) draw the next N
    steps' in parallel, for when drawing batches is slower than a step (a GPU). Batches are pure functions
    of the seed and the step, so where they are drawn changes no number. Close it (or use it as a context
    manager) to end the thread or processes.
    """

    def __init__(self, members: Sequence[Trainer], workers: int = 0) -> None:
        self.sources = [member.data for member in members]
        self._row = {id(member): row for row, member in enumerate(members)}
        if workers > 0 and multiprocessing.current_process().daemon:
            warnings.warn(
                f"data_workers={workers} ignored: this is a daemonic process (a sweep worker?), which may not start "
                "processes; batches are drawn by one thread",
                stacklevel=3,
            )
            workers = 0
        self.workers = workers
        if workers > 0:
            context = worker_context()  # forked from a server: no torch threads or CUDA of this process
            self._pool: Executor = ProcessPoolExecutor(workers, context, _start_worker, (self.sources, os.getpid()))
        else:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nrecur-batches")
        self._ahead: dict[tuple[tuple[int, ...], int], Future] = {}

    def get(self, members: Sequence[Trainer], step: int) -> np.ndarray:
        """The batches of ``step`` for ``members`` (in order); starts drawing those of the next steps."""
        rows = tuple(self._row[id(member)] for member in members)
        future = self._ahead.pop((rows, step), None)
        for key in [key for key in self._ahead if key[0] != rows or key[1] < step]:
            stale = self._ahead.pop(key)
            stale.cancel() or stale.exception()  # wait for a draw no longer needed; its result is dropped
        batches = future.result() if future is not None else self._draw(rows, step)
        for ahead in range(step + 1, step + 1 + max(1, self.workers)):
            if (rows, ahead) not in self._ahead:
                self._ahead[(rows, ahead)] = self._pool.submit(self._draw_fn, rows, ahead)
        return batches

    @property
    def _draw_fn(self) -> Callable[[tuple[int, ...], int], np.ndarray]:
        return _draw_in_worker if self.workers > 0 else self._draw

    def _draw(self, rows: tuple[int, ...], step: int) -> np.ndarray:
        return stacked_batches([self.sources[row] for row in rows], step)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._ahead.clear()

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
