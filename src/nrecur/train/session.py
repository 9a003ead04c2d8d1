"""Runs on disk: train into a run folder, resume one exactly, extend a finished one.

``train(config, run_dir)`` starts a run in a folder (see
:class:`~nrecur.train.folder.RunFolder` for what it holds): only a missing or
empty folder unless ``overwrite``, and nothing is written before the run has
started (memory checked, weights loaded), so a failed start leaves no folder.
Training and resuming hold the folder's lock until they end: a second process
that would write the same run is refused at once, naming the first.
``resume(run_dir)`` continues an interrupted run from its latest intact
checkpoint and ends with the same weights an uninterrupted run would have (on
CPU). ``resume(run_dir, steps=N)`` or ``time_budget=S`` also continues a run
that has ended, or stops an unfinished one elsewhere:

* a new ``time_budget`` changes only when the run stops;
* a new ``steps`` keeps the learning-rate schedule's horizon where it was
  (``decay_steps`` is set to the old ``steps``): the cosine or linear decay
  ends where it ended, and the learning rate stays at ``min_lr_ratio * lr``
  after it. The extended run therefore ends with the same weights as a run
  trained with ``steps=N, decay_steps=OLD`` in one go (on CPU), and its
  ``config.json`` says exactly that.
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
from nrecur.train.checkpoint import Checkpoint, load_checkpoint, load_newest
from nrecur.train.config import RunConfig
from nrecur.train.folder import RunFolder
from nrecur.train.loop import NonFiniteLossError, Trainer, TrainResult, resolve_device
from nrecur.train.memory import check_training_memory


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
            "threshold_step": grokking.threshold_step if grokking else None,
            "threshold_seconds": grokking.threshold_seconds if grokking else None,
            "kl_threshold": trainer.config.train.kl_threshold,
            "time_budget": trainer.config.train.time_budget,
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
        keep = log_spaced_steps(train.steps, train.log_checkpoints)
        if train.decay_steps is not None:  # an extended run keeps the log-spaced checkpoints of its first horizon
            keep |= log_spaced_steps(train.decay_steps, train.log_checkpoints)
        callbacks.append(Checkpointer(folder, train.checkpoint_every, keep))
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

    ``callbacks`` run after the built-in ones. ``run_dir`` must be missing or empty unless
    ``overwrite`` (use :func:`resume` to continue a run). Nothing is written until the run has
    started: a run that cannot start (too big, no CUDA, a bad ``init_from``) leaves the folder as it was.
    """
    if config.init_from is not None and not os.path.isabs(config.init_from):  # made with model_copy, unvalidated
        config = config.model_copy(update={"init_from": os.path.abspath(config.init_from)})
    if run_dir is None:
        return Trainer(config, [*default_callbacks(config, None, progress), *callbacks]).fit()
    folder = RunFolder(run_dir)
    if folder.path.exists() and not folder.path.is_dir():
        folder.check_new(overwrite)  # a file: say so (the lock lives in the folder)
    # One writer: the lock is held until the run ends (a folder made for it goes again if the start fails). What
    # the folder holds is checked under it: a run another process is starting there is its, not a finished one.
    with folder.writing(refused="wait for it to end, or pick another --out"):
        folder.check_new(overwrite)
        trainer = Trainer(config, [*default_callbacks(config, folder, progress), *callbacks], run_dir=run_dir)
        try:
            if overwrite:
                folder.clear()
            folder.write_config(config)
            if trainer.init_source is not None:
                folder.write_init_source(trainer.init_source)
        except BaseException:
            # A start that failed halfway (disk full, read-only folder) leaves nothing half-made behind.
            folder.clear()
            raise
        return trainer.fit()


def extended_config(config: RunConfig, steps: int | None = None, time_budget: float | None = None) -> RunConfig:
    """``config`` with a new ``steps`` and/or ``time_budget``; a new ``steps`` keeps the schedule's horizon
    (``decay_steps``), see the module docstring."""
    update: dict = {}
    if steps is not None and steps != config.train.steps:
        update["steps"] = steps
        if config.train.decay_steps is None:
            update["decay_steps"] = config.train.steps
    if time_budget is not None and time_budget != config.train.time_budget:
        update["time_budget"] = time_budget
    if not update:
        return config
    train = type(config.train).model_validate({**config.train.model_dump(), **update})
    return config.model_copy(update={"train": train})


def resume(
    run_dir: str | os.PathLike,
    *,
    steps: int | None = None,
    time_budget: float | None = None,
    progress: bool | str = True,
    callbacks: Sequence[Callback] = (),
) -> TrainResult:
    """Continue the run in ``run_dir`` from its latest intact checkpoint (or from the start if it has none).

    ``steps`` / ``time_budget``: train to a new length or time budget (also a run that has ended); see the
    module docstring for what a new ``steps`` does to the learning-rate schedule. A damaged latest
    checkpoint is renamed ``*.damaged`` with a warning and the previous one is used; a fine-tune killed
    before its first checkpoint restarts from the weights it started from, or refuses if they changed.
    """
    folder = RunFolder(run_dir)
    folder.read_config()  # not a run: say so before anything is made there
    with folder.writing(refused="wait for it to end (then resume it, if it has not finished)"):
        stored = folder.read_config()
        config = extended_config(stored, steps, time_budget)
        check_training_memory(config, resolve_device(config.train.device))  # before the checkpoint is read
        checkpoint: Checkpoint | None = None
        found = [path for _, path in folder.checkpoints()]
        if found:
            _, checkpoint = load_newest(found, load_checkpoint, then=" (renamed to *.damaged)")
        init_source = folder.read_init_source() if config.init_from is not None else None
        trainer = Trainer(
            config, [*default_callbacks(config, folder, progress), *callbacks], run_dir=run_dir,
            load_init_from=checkpoint is None, expected_init=init_source,
        )  # fmt: skip
        if checkpoint is not None:
            trainer.restore(checkpoint)
            _continue_or_refuse(trainer, folder, steps, time_budget)
        # From here on the folder changes: the run is going ahead.
        folder.remove_stale_temporaries()  # a run killed mid-write leaves its temporary file behind
        for step, path in folder.checkpoints():
            if checkpoint is not None and step > checkpoint.step:
                folder.set_aside(path)
        if config != stored:
            folder.write_config(config)
        if trainer.init_source is not None and init_source is None:
            folder.write_init_source(trainer.init_source)  # the first start (the main job), or an older run
        return trainer.fit()


def _continue_or_refuse(trainer: Trainer, folder: RunFolder, steps: int | None, time_budget: float | None) -> None:
    """A restored run that had stopped continues only if its (possibly extended) config lets it."""
    train, step, elapsed = trainer.config.train, trainer.step, trainer.seconds
    if steps is not None and steps <= step:
        raise ValueError(f"{folder.path} is at step {step} already; --steps must be larger to continue it (got {steps})")
    if time_budget is not None and 0 < time_budget <= elapsed:
        raise ValueError(
            f"{folder.path} has trained for {elapsed:.1f} s already; --time-budget must be larger to continue it "
            f"(or 0 for no limit), got {time_budget:g}"
        )
    reason = trainer.stop_reason
    if reason == "steps" and step < train.steps:
        reason = None
    elif reason == "time budget" and (train.time_budget == 0 or elapsed < train.time_budget):
        reason = None
    trainer.stop_reason = reason
    if reason is None or not _summary_says_finished(folder, step):
        return  # (with a reason: killed while ending; fit() runs no step and writes the evaluation and summary)
    how = {
        "steps": f"continue it with --steps N (N > {step})",
        "time budget": f"continue it with --time-budget S (S > {elapsed:.0f}, or 0 for no limit)",
        "threshold": "it reached its KL threshold with stop_at_threshold, so a longer run would stop again at once",
    }.get(reason, "it cannot be continued")
    raise ValueError(f"{folder.path} has already finished at step {step} (stop reason: {reason}); {how}")


def _summary_says_finished(folder: RunFolder, step: int) -> bool:
    return folder.is_finished() and folder.read_summary().get("steps") == step  # a corrupt summary: not finished


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    """The ``RunConfig`` of a run folder."""
    return RunFolder(run_dir).read_config()


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    """``summary.json`` of a run folder (None while the run has not ended)."""
    return RunFolder(Path(run_dir)).read_summary()
