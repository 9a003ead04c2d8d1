"""Runs on disk: train into a run folder, resume one exactly.

A run folder holds::

    config.json          the full RunConfig (enough to reproduce the run)
    metrics.jsonl        one JSON line per evaluation
    tensorboard/         TensorBoard events (when tensorboard is installed)
    checkpoints/         step_XXXXXXXX.safetensors (model, optimizer, RNG state)
    summary.json         how the run ended (written at the end)

``train(config, run_dir)`` starts a run, ``resume(run_dir)`` continues an
interrupted one from its latest checkpoint and ends with the same weights an
uninterrupted run would have (on CPU).
"""

from __future__ import annotations

import json
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
from nrecur.train.checkpoint import atomic_write_text, latest_checkpoint, load_checkpoint, remove_stale_temporaries
from nrecur.train.config import RunConfig
from nrecur.train.loop import NonFiniteLossError, Trainer, TrainResult

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"


class RunSummary(Callback):
    """Writes ``summary.json`` when the run ends or fails."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir

    def on_end(self, trainer: Trainer) -> None:
        write_summary(self.run_dir, trainer, status="finished")

    def on_abort(self, trainer: Trainer, error: NonFiniteLossError) -> None:
        write_summary(self.run_dir, trainer, status="diverged", error=str(error))


def write_summary(run_dir: Path, trainer: Trainer, status: str, error: str | None = None) -> None:
    grokking = trainer.grokking
    evaluations = trainer.evaluations
    summary = {
        "status": status,
        "steps": trainer.step,
        "seconds": round(trainer.elapsed(), 3),
        "stop_reason": trainer.stop_reason,
        "error": error,
        "memorization_step": grokking.memorization_step if grokking else None,
        "grok_step": grokking.grok_step if grokking else None,
        "grok_seconds": grokking.grok_seconds if grokking else None,
        "kl_threshold": trainer.config.train.kl_threshold,
        "held_out_rules": sorted(list(rule) for rule in trainer.held_out),
        "checkpoint": str(trainer.last_checkpoint.relative_to(run_dir)) if trainer.last_checkpoint else None,
        "final": {name: evaluation.metrics() for name, evaluation in evaluations.items()},
    }
    atomic_write_text(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def default_callbacks(config: RunConfig, run_dir: Path | None, progress: bool | str = True) -> list[Callback]:
    """Evaluator, time budget, then (with a folder) metrics, TensorBoard, checkpoints, summary, then the bar."""
    train = config.train
    callbacks: list[Callback] = [Evaluator()]
    if train.time_budget > 0:
        callbacks.append(TimeBudget(train.time_budget))
    if run_dir is not None:
        callbacks.append(MetricsWriter(run_dir / METRICS_FILE))
        if TensorBoardWriter.available():
            callbacks.append(TensorBoardWriter(run_dir / "tensorboard"))
        callbacks.append(Checkpointer(run_dir, train.checkpoint_every, log_spaced_steps(train.steps, train.log_checkpoints)))
        callbacks.append(RunSummary(run_dir))
    if progress:
        callbacks.append(ProgressBar(progress if isinstance(progress, str) else (run_dir.name if run_dir else "train")))
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
    folder = Path(run_dir) if run_dir is not None else None
    created = False
    if folder is not None:
        if (folder / CONFIG_FILE).exists() and not overwrite:
            raise FileExistsError(f"{folder} already holds a run; resume it with --resume {folder} or pick another --out")
        if overwrite and folder.exists():
            clear_run(folder)
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / CONFIG_FILE, json.dumps(config.model_dump(mode="json"), indent=2) + "\n")
    try:
        trainer = Trainer(config, [*default_callbacks(config, folder, progress), *callbacks], run_dir=folder)
    except BaseException:
        # A run that could not start (no CUDA, a bad --init-from, …) leaves no half-made folder behind.
        if folder is not None:
            clear_run(folder)
            if created and not any(folder.iterdir()):
                folder.rmdir()
        raise
    return trainer.fit()


def resume(run_dir: str | os.PathLike, *, progress: bool | str = True, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Continue the run in ``run_dir`` from its latest checkpoint (or from the start if it has none)."""
    folder = Path(run_dir)
    config = read_config(folder)
    remove_stale_temporaries(folder)  # a run killed mid-write leaves its temporary file behind
    path = latest_checkpoint(folder)
    trainer = Trainer(
        config, [*default_callbacks(config, folder, progress), *callbacks], run_dir=folder, load_init_from=path is None
    )
    if path is not None:
        checkpoint = load_checkpoint(path)
        trainer.restore(checkpoint)
        summary = read_summary(folder)
        if summary is not None and summary.get("status") == "finished" and summary.get("steps") == checkpoint.step:
            raise ValueError(
                f"{folder} has already finished at step {checkpoint.step} (stop reason: {summary.get('stop_reason')}); "
                "--resume continues interrupted runs"
            )
    return trainer.fit()


def read_config(run_dir: str | os.PathLike) -> RunConfig:
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_FILE})")
    return RunConfig.model_validate_json(path.read_text())


def read_summary(run_dir: str | os.PathLike) -> dict | None:
    path = Path(run_dir) / SUMMARY_FILE
    return json.loads(path.read_text()) if path.exists() else None


def clear_run(folder: Path) -> None:
    """Remove what a run wrote in ``folder`` (config, metrics, summary, checkpoints, events)."""
    import shutil

    for name in (CONFIG_FILE, METRICS_FILE, SUMMARY_FILE):
        (folder / name).unlink(missing_ok=True)
    for name in ("checkpoints", "tensorboard"):
        shutil.rmtree(folder / name, ignore_errors=True)
