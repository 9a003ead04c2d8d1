"""Runs on disk: train into a run folder, resume one exactly.

``train(config, run_dir)`` starts a run in a folder (see
:class:`~nrecur.train.folder.RunFolder` for what it holds), ``resume(run_dir)``
continues an interrupted one from its latest checkpoint and ends with the same
weights an uninterrupted run would have (on CPU).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from nrecur.train.callbacks import (
    Callback,
    Checkpointer,
    Evaluator,
    MetricsWriter,
    ProgressBar,
    TensorBoardWriter,
    TimeBudget,
    log_spaced_steps,
)
from nrecur.train.checkpoint import load_checkpoint
from nrecur.train.config import RunConfig
from nrecur.train.folder import RunFolder
from nrecur.train.loop import NonFiniteLossError, Trainer, TrainResult


class RunSummary(Callback):
    """Writes ``summary.json`` when the run ends or fails."""

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder

    def on_end(self, trainer: Trainer) -> None:
        write_summary(self.folder, trainer, status="finished")

    def on_abort(self, trainer: Trainer, error: NonFiniteLossError) -> None:
        write_summary(self.folder, trainer, status="diverged", error=str(error))


def write_summary(folder: RunFolder, trainer: Trainer, status: str, error: str | None = None) -> None:
    grokking = trainer.grokking
    checkpoint = trainer.last_checkpoint
    folder.write_summary(
        {
            "status": status,
            "steps": trainer.step,
            "seconds": round(trainer.elapsed(), 3),
            "stop_reason": trainer.stop_reason,
            "error": error,
            "memorization_step": grokking.memorization_step if grokking else None,
            "grok_step": grokking.grok_step if grokking else None,
            "grok_seconds": grokking.grok_seconds if grokking else None,
            "kl_threshold": trainer.config.train.kl_threshold,
            "held_out_rules": sorted(list(rule) if isinstance(rule, tuple) else rule for rule in trainer.held_out),
            "checkpoint": str(checkpoint.relative_to(folder.path)) if checkpoint else None,
            "accuracy_name": trainer.evaluations["eval"].accuracy_name if "eval" in trainer.evaluations else None,
            "final": {name: evaluation.metrics() for name, evaluation in trainer.evaluations.items()},
        }
    )


def default_callbacks(config: RunConfig, folder: RunFolder | None, progress: bool | str = True) -> list[Callback]:
    """Evaluator, time budget, then (with a folder) metrics, TensorBoard, checkpoints, summary, then the bar."""
    train = config.train
    callbacks: list[Callback] = [Evaluator()]
    if train.time_budget > 0:
        callbacks.append(TimeBudget(train.time_budget))
    if folder is not None:
        callbacks.append(MetricsWriter(folder))
        if TensorBoardWriter.available():
            callbacks.append(TensorBoardWriter(folder.tensorboard_dir))
        callbacks.append(Checkpointer(folder, train.checkpoint_every, log_spaced_steps(train.steps, train.log_checkpoints)))
        callbacks.append(RunSummary(folder))
    if progress:
        callbacks.append(ProgressBar(progress if isinstance(progress, str) else (folder.path.name if folder else "train")))
    return callbacks


def train(
    config: RunConfig,
    run_dir: str | os.PathLike | None = None,
    *,
    progress: bool | str = True,
    callbacks: Sequence[Callback] = (),
    overwrite: bool = False,
) -> TrainResult:
    """Train a model as ``config`` says; with ``run_dir``, write a run folder there.

    ``callbacks`` run after the built-in ones. An existing run folder is an
    error unless ``overwrite`` (use :func:`resume` to continue one).
    """
    folder = RunFolder(run_dir) if run_dir is not None else None
    created = False
    if folder is not None:
        if folder.is_run() and not overwrite:
            raise FileExistsError(f"{folder.path} already holds a run; resume it with --resume {folder.path} or pick another --out")
        if overwrite and folder.path.exists():
            folder.clear()
        created = not folder.path.exists()
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.write_config(config)
    try:
        trainer = Trainer(config, [*default_callbacks(config, folder, progress), *callbacks], run_dir=run_dir)
    except BaseException:
        # A run that could not start (no CUDA, a bad --init-from, …) leaves no half-made folder behind.
        if folder is not None:
            folder.clear()
            if created and not any(folder.path.iterdir()):
                folder.path.rmdir()
        raise
    return trainer.fit()


def resume(run_dir: str | os.PathLike, *, progress: bool | str = True, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Continue the run in ``run_dir`` from its latest checkpoint (or from the start if it has none)."""
    folder = RunFolder(run_dir)
    config = folder.read_config()
    folder.remove_stale_temporaries()  # a run killed mid-write leaves its temporary file behind
    path = folder.latest_checkpoint()
    trainer = Trainer(
        config, [*default_callbacks(config, folder, progress), *callbacks], run_dir=run_dir, load_init_from=path is None
    )
    if path is not None:
        checkpoint = load_checkpoint(path)
        trainer.restore(checkpoint)
        summary = folder.read_summary()
        if summary is not None and summary.get("status") == "finished" and summary.get("steps") == checkpoint.step:
            raise ValueError(
                f"{folder.path} has already finished at step {checkpoint.step} (stop reason: {summary.get('stop_reason')}); "
                "--resume continues interrupted runs"
            )
    return trainer.fit()


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    """The ``RunConfig`` of a run folder."""
    return RunFolder(run_dir).read_config()


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    """``summary.json`` of a run folder (None while the run has not ended)."""
    return RunFolder(Path(run_dir)).read_summary()
