"""Generative processes (SPEC §2): every kind implements :class:`~nrecur.tasks.base.Task`.

``NRecurrence`` (SPEC §2.1–2.3), the hidden Markov models ``Mess3``, ``RRXOR``
and ``HMM`` (SPEC §2.5) and in-context modular arithmetic ``ModularICL``
(SPEC §2.6). A new kind is a ``Task`` subclass with its own ``kind`` (it registers
itself in ``Task.KINDS``) and an observer registered with ``register_observer``.
"""

from nrecur.tasks.base import EvalView, Sequences, Strata, Task, Truth, register_observer, task_from_data
from nrecur.tasks.hmm import HMM, RRXOR, HMMBatch, HMMProcess, HMMTask, Mess3, mess3, rrxor
from nrecur.tasks.modular import ModularBatch, ModularICL
from nrecur.tasks.nrecurrence import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = [
    "Batch",
    "EvalView",
    "HMM",
    "HMMBatch",
    "HMMProcess",
    "HMMTask",
    "Mess3",
    "ModularBatch",
    "ModularICL",
    "NRecurrence",
    "RRXOR",
    "Sequences",
    "Strata",
    "Task",
    "Truth",
    "mess3",
    "register_observer",
    "task_from_data",
    "rrxor",
]
