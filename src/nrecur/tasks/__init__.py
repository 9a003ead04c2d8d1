"""Generative processes: n-recurrence (SPEC §2.1–2.3) and general HMMs (SPEC §2.5)."""

from nrecur.tasks.hmm import HMMBatch, HMMProcess, mess3, rrxor
from nrecur.tasks.nrecurrence import Batch, NRecurrence

__all__ = ["Batch", "HMMBatch", "HMMProcess", "NRecurrence", "mess3", "rrxor"]
