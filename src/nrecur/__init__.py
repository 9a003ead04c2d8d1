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
    ModularPosterior,
    Posterior,
    bayes_cross_entropy,
)
from nrecur.runs import Run, load_run  # noqa: E402
from nrecur.tasks import (  # noqa: E402
    HMM,
    RRXOR,
    Batch,
    EvalView,
    HMMBatch,
    HMMProcess,
    HMMTask,
    Mess3,
    NRecurrence,
    Sequences,
    Strata,
    Task,
    Truth,
    mess3,
    register_observer,
    rrxor,
)
from nrecur.tasks.modular import ModularBatch, ModularICL  # noqa: E402
from nrecur.train import (  # noqa: E402
    Callback,
    Evaluation,
    Grokking,
    NonFiniteLossError,
    RunConfig,
    RunFolder,
    Trainer,
    TrainConfig,
    TrainResult,
    evaluate,
    resume,
    train,
)
from nrecur.train.checkpoint import CheckpointError  # noqa: E402
from nrecur.train.presets import PRESETS, Preset, get_preset  # noqa: E402
from nrecur.sweep import SweepSpec, load_spec, load_sweep, run_sweep  # noqa: E402

__all__ = [
    # model
    "ActivationCache",
    "GPT",
    "GPTConfig",
    "HookPoint",
    "LogitsAndCache",
    "to_transformer_lens",
    # tasks (every kind) and their observers
    "Batch",
    "BayesCrossEntropy",
    "EvalView",
    "HMM",
    "HMMBatch",
    "HMMPosterior",
    "HMMProcess",
    "HMMTask",
    "ImpossibleSequenceError",
    "Mess3",
    "ModularBatch",
    "ModularICL",
    "ModularPosterior",
    "NRecurrence",
    "Posterior",
    "RRXOR",
    "Sequences",
    "Strata",
    "Task",
    "Truth",
    "bayes_cross_entropy",
    "mess3",
    "register_observer",
    "rrxor",
    # training and runs
    "Callback",
    "CheckpointError",
    "Evaluation",
    "Grokking",
    "NonFiniteLossError",
    "PRESETS",
    "Preset",
    "Run",
    "RunConfig",
    "RunFolder",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "evaluate",
    "get_preset",
    "load_run",
    "resume",
    "train",
    # sweeps
    "SweepSpec",
    "load_spec",
    "load_sweep",
    "run_sweep",
]
__version__ = "0.1.0"
