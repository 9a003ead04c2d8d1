"""nrecur: a laboratory for in-context probabilistic inference in small transformers.

Tasks with a known hidden rule, their exact Bayes observer, small GPTs trained
on them, and the tools to open those models up. What users call is re-exported
here; everything else may change.
"""

import os as _os

# Several torch processes on a small CPU must not spin-wait on each other (OpenMP reads this
# when torch loads, so it is set before anything imports torch; an explicit setting wins).
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from nrecur.export import to_transformer_lens  # noqa: E402
from nrecur.hooks import ActivationCache, HookPoint, LogitsAndCache  # noqa: E402
from nrecur.model import GPT, GPTConfig  # noqa: E402
from nrecur.observer import (  # noqa: E402
    BayesCrossEntropy,
    HMMPosterior,
    ImpossibleSequenceError,
    Posterior,
    bayes_cross_entropy,
)
from nrecur.runs import Run, load_run  # noqa: E402
from nrecur.tasks import (  # noqa: E402
    HMM,
    RRXOR,
    AnyTask,
    Batch,
    HMMBatch,
    HMMProcess,
    Mess3,
    NRecurrence,
    Sequences,
    Task,
    mess3,
    rrxor,
)
from nrecur.tasks.modular import ModularBatch, ModularICL  # noqa: E402
from nrecur.train import (  # noqa: E402
    Evaluation,
    Grokking,
    RunConfig,
    RunFolder,
    Trainer,
    TrainConfig,
    TrainResult,
    evaluate,
    resume,
    train,
)

__all__ = [
    "ActivationCache",
    "GPT",
    "GPTConfig",
    "HookPoint",
    "LogitsAndCache",
    "to_transformer_lens",
    "Evaluation",
    "Grokking",
    "Run",
    "RunConfig",
    "RunFolder",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate",
    "load_run",
    "resume",
    "train",
    "AnyTask",
    "Batch",
    "BayesCrossEntropy",
    "HMM",
    "HMMBatch",
    "HMMPosterior",
    "HMMProcess",
    "ImpossibleSequenceError",
    "Mess3",
    "ModularBatch",
    "ModularICL",
    "NRecurrence",
    "Posterior",
    "RRXOR",
    "Sequences",
    "Task",
    "bayes_cross_entropy",
    "mess3",
    "rrxor",
]
__version__ = "0.1.0"
