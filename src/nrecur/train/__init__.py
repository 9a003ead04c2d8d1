"""Training small GPTs on any task, scored against its exact observer.

``train(RunConfig(...), "runs/name")`` trains into a run folder;
``resume("runs/name")`` continues an interrupted run exactly;
``train_ensemble(configs, run_dirs)`` trains many same-shape models at once. The loop
(:class:`Trainer`) does one step at a time; evaluation, checkpoints, metrics
files, the progress bar and stopping rules are callbacks.

The names below are imported on first use (PEP 562): the configs
(``nrecur.train.config``, ``nrecur.train.presets``) are read without torch.
"""

import sys
import types
from typing import TYPE_CHECKING

_EXPORTS = {
    "nrecur.train.callbacks": ("Callback", "Checkpointer", "Evaluator", "MetricsWriter", "ProgressBar", "TensorBoardWriter", "TimeBudget"),
    "nrecur.train.config": ("RunConfig", "TrainConfig"),
    "nrecur.train.ensemble": ("Eligibility", "can_ensemble", "train_ensemble"),
    "nrecur.train.evaluate": ("EvalSet", "Evaluation", "Grokking", "build_eval_sets", "evaluate"),
    "nrecur.train.folder": ("RunFolder",),
    "nrecur.train.interventions": ("Intervention",),
    "nrecur.train.loop": ("NonFiniteLossError", "StepInfo", "Trainer", "TrainResult", "TrainingInterrupted"),
    "nrecur.train.session": ("resume", "train"),
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}


def __getattr__(name: str):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'nrecur.train' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


class _Package(types.ModuleType):
    """``nrecur.train.evaluate`` is the function :func:`nrecur.train.evaluate.evaluate`, not the module of the
    same name, which the import system binds here when it is imported (``__getattr__`` would then never be asked)."""

    @property
    def evaluate(self):
        from nrecur.train.evaluate import evaluate

        return evaluate

    @evaluate.setter
    def evaluate(self, value) -> None:  # the module, bound by the import system: it stays in sys.modules
        pass


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from nrecur.train.callbacks import Callback, Checkpointer, Evaluator, MetricsWriter, ProgressBar, TensorBoardWriter, TimeBudget
    from nrecur.train.config import RunConfig, TrainConfig
    from nrecur.train.ensemble import Eligibility, can_ensemble, train_ensemble
    from nrecur.train.evaluate import EvalSet, Evaluation, Grokking, build_eval_sets, evaluate
    from nrecur.train.folder import RunFolder
    from nrecur.train.interventions import Intervention
    from nrecur.train.loop import NonFiniteLossError, StepInfo, Trainer, TrainingInterrupted, TrainResult
    from nrecur.train.session import resume, train

__all__ = [
    "Callback",
    "Checkpointer",
    "EvalSet",
    "Evaluation",
    "Evaluator",
    "Grokking",
    "Intervention",
    "MetricsWriter",
    "NonFiniteLossError",
    "ProgressBar",
    "RunConfig",
    "RunFolder",
    "StepInfo",
    "TensorBoardWriter",
    "TimeBudget",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingInterrupted",
    "build_eval_sets",
    "can_ensemble",
    "evaluate",
    "resume",
    "train",
    "train_ensemble",
]
