"""nrecur: a laboratory for in-context probabilistic inference in small transformers.

Tasks with a known hidden rule, their exact Bayes observer, small GPTs trained
on them, and the tools to open those models up. What users call is re-exported
here; everything else may change.
"""

# OpenMP's wait policy is left to the user (a lone process trains ~1.5x as fast with OpenMP's default as
# with PASSIVE); the workers nrecur starts side by side get PASSIVE: nrecur._threads.
from nrecur.export import to_transformer_lens
from nrecur.hooks import ActivationCache, HookPoint, LogitsAndCache
from nrecur.model import GPT, GPTConfig
from nrecur.observer import (
    BayesCrossEntropy,
    HMMPosterior,
    ImpossibleSequenceError,
    ModularPosterior,
    Posterior,
    bayes_cross_entropy,
)
from nrecur.runs import Run, load_run
from nrecur.tasks import (
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
from nrecur.tasks.modular import ModularBatch, ModularICL
from nrecur.train import (
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
from nrecur.train.checkpoint import CheckpointError
from nrecur.train.presets import PRESETS, Preset, get_preset
from nrecur.sweep import SweepSpec, load_spec, load_sweep, run_sweep

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
