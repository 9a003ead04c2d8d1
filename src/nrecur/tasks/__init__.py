"""Generative processes (SPEC §2): every kind implements :class:`~nrecur.tasks.base.Task`.

``NRecurrence`` (SPEC §2.1–2.3), the hidden Markov models ``Mess3``, ``RRXOR``
and ``HMM`` (SPEC §2.5) and in-context modular arithmetic ``ModularICL``
(SPEC §2.6). ``AnyTask`` is the union of all kinds, discriminated by ``kind``.
"""

from nrecur.tasks.base import EvalView, Sequences, Strata, Task, Truth, task_union
from nrecur.tasks.hmm import HMM, RRXOR, HMMBatch, HMMProcess, HMMTask, Mess3, mess3, rrxor
from nrecur.tasks.modular import ModularBatch, ModularICL
from nrecur.tasks.nrecurrence import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = [
    "AnyTask",
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
    "rrxor",
]

#: Any task kind, discriminated by ``kind`` (``RunConfig.task``): every kind imported above.
AnyTask = task_union()
