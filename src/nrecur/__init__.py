"""nrecur: a laboratory for in-context probabilistic inference in small transformers.

Tasks with a known hidden rule, their exact Bayes observer, small GPTs trained
on them, and the tools to open those models up. What users call is re-exported
here; everything else may change.
"""

# OpenMP's wait policy of a process that imports nrecur is left to it (a lone process trains faster with
# OpenMP's default than with PASSIVE); `nrecur train` chooses threads and policy from the load, and the
# workers nrecur starts side by side get PASSIVE: nrecur._threads.
#
# The names below are imported on first use (PEP 562), so that ``import nrecur.cli`` (every ``nrecur``
# command, ``--help`` included) does not pay for torch before it needs it; ``from nrecur import GPT`` and
# ``nrecur.GPT`` work as usual.
import sys
import types
from typing import TYPE_CHECKING

_EXPORTS = {
    "nrecur.export": ("to_transformer_lens",),
    "nrecur.hooks": ("ActivationCache", "HookPoint", "LogitsAndCache"),
    "nrecur.model": ("GPT", "GPTConfig"),
    "nrecur.observer": ("BayesCrossEntropy", "HMMPosterior", "ImpossibleSequenceError", "ModularPosterior", "Posterior", "bayes_cross_entropy"),
    "nrecur.runs": ("Run", "load_run"),
    "nrecur.tasks": (
        "HMM", "RRXOR", "Batch", "EvalView", "HMMBatch", "HMMProcess", "HMMTask", "Mess3", "NRecurrence", "Sequences",
        "Strata", "Task", "Truth", "mess3", "register_observer", "rrxor",
    ),
    "nrecur.tasks.modular": ("ModularBatch", "ModularICL"),
    "nrecur.train": (
        "Callback", "Evaluation", "Grokking", "NonFiniteLossError", "RunConfig", "RunFolder", "Trainer", "TrainConfig",
        "TrainingInterrupted", "TrainResult", "evaluate", "resume", "train",
    ),
    "nrecur.train.checkpoint": ("CheckpointError",),
    "nrecur.train.presets": ("PRESETS", "Preset", "get_preset"),
    "nrecur.sweep": ("SweepSpec", "load_spec", "load_sweep", "run_sweep"),
}  # fmt: skip
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nrecur' has no attribute {name!r}")
    import importlib

    importlib.import_module("nrecur.observer")  # every task kind's observer, registered before a task is used
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # once imported, a plain attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """``nrecur.train`` is the function :func:`nrecur.train.session.train`, as the public API says, not the
    subpackage of the same name, which the import system binds here when it is imported (and ``__getattr__``
    would then never be asked)."""

    @property
    def train(self):
        from nrecur.train.session import train

        return train

    @train.setter
    def train(self, value) -> None:  # the subpackage, bound by the import system: it stays in sys.modules
        pass


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
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
        TrainingInterrupted,
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
    "TrainingInterrupted",
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
