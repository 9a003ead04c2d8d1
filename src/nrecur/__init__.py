"""nrecur: a laboratory for in-context probabilistic inference in small transformers.

Tasks with a known hidden rule, their exact Bayes observer, small GPTs trained
on them, and the tools to open those models up. What users call is re-exported
here; everything else may change.
"""

from nrecur.export import to_transformer_lens
from nrecur.hooks import ActivationCache, HookPoint, LogitsAndCache
from nrecur.model import GPT, GPTConfig
from nrecur.observer import (
    BayesCrossEntropy,
    HMMPosterior,
    ImpossibleSequenceError,
    Posterior,
    bayes_cross_entropy,
)
from nrecur.tasks import Batch, HMMBatch, HMMProcess, NRecurrence, mess3, rrxor

__all__ = [
    "ActivationCache",
    "GPT",
    "GPTConfig",
    "HookPoint",
    "LogitsAndCache",
    "to_transformer_lens",
    "Batch",
    "BayesCrossEntropy",
    "HMMBatch",
    "HMMPosterior",
    "HMMProcess",
    "ImpossibleSequenceError",
    "NRecurrence",
    "Posterior",
    "bayes_cross_entropy",
    "mess3",
    "rrxor",
]
__version__ = "0.1.0"
