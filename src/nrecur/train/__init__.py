"""Training small GPTs on any task, scored against its exact observer.

``train(RunConfig(...), "runs/name")`` trains into a run folder;
``resume("runs/name")`` continues an interrupted run exactly;
``train_ensemble(configs, run_dirs)`` trains many same-shape models at once. The loop
(:class:`Trainer`) does one step at a time; evaluation, checkpoints, metrics
files, the progress bar and stopping rules are callbacks.
"""

from nrecur.train.callbacks import (
    Callback,
    Checkpointer,
    Evaluator,
    MetricsWriter,
    ProgressBar,
    TensorBoardWriter,
    TimeBudget,
)
from nrecur.train.config import RunConfig, TrainConfig
from nrecur.train.ensemble import Eligibility, can_ensemble, train_ensemble
from nrecur.train.evaluate import EvalSet, Evaluation, Grokking, build_eval_sets, evaluate
from nrecur.train.folder import RunFolder
from nrecur.train.interventions import Intervention
from nrecur.train.loop import NonFiniteLossError, StepInfo, Trainer, TrainResult
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
    "build_eval_sets",
    "can_ensemble",
    "evaluate",
    "resume",
    "train",
    "train_ensemble",
]
