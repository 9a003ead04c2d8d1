"""One trial, start to record: train (or resume) its run folder, then write its result record.

:func:`run_trial` is what every backend calls in its worker. It is safe to
call again at any moment after a kill: a recorded trial returns its record
without training; a run folder with a finished summary is recorded without
training; an unfinished one resumes exactly from its latest checkpoint
(:func:`nrecur.train.resume`), so its metrics are never counted twice. The
trial's lock is held throughout, so two processes never train one folder.
A trial that fails (NaN loss, an exception) is recorded as ``failed`` with
its reason, and the sweep goes on.
"""

from __future__ import annotations

import dataclasses
import math
import time
import traceback
from typing import Sequence

from nrecur.sweep.expand import Trial
from nrecur.sweep.store import SweepDir, TrialRecord
from nrecur.train import Callback, NonFiniteLossError, resume, train
from nrecur.train.config import RunConfig
from nrecur.train.folder import RunFolder


def run_trial(trial: Trial, sweep: SweepDir, callbacks: Sequence[Callback] = (), note: str | None = None) -> TrialRecord:
    """Train (or resume, or just record) ``trial`` in its run folder under ``sweep``; write and return its record.
    ``note``: why it trains this way (an ensemble that failed), kept in the record it writes."""
    with sweep.lock(trial.trial_id):
        record = sweep.read_record(trial.trial_id)
        if record is not None:
            return record
        folder = RunFolder(sweep.run_dir(trial.trial_id))
        record = ended_record(trial, folder)
        if record is None:
            record = _train(trial, folder, sweep, callbacks)
        if note is not None:
            record = dataclasses.replace(record, note=note)
        sweep.write_record(record)
        return record


def ended_record(trial: Trial, folder: RunFolder) -> TrialRecord | None:
    """The record of a run whose summary says it ended (finished: ok; diverged: failed), else None."""
    try:
        summary = folder.read_summary() if folder.is_run() else None
    except ValueError:
        return None  # a torn summary: resume finishes the run again and rewrites it
    if summary is None:
        return None
    if summary.get("status") == "finished":
        return record_from_folder(trial, folder, "ok")
    if summary.get("status") == "diverged":
        return record_from_folder(trial, folder, "failed", summary.get("error"))
    return None


def _train(trial: Trial, folder: RunFolder, sweep: SweepDir, callbacks: Sequence[Callback]) -> TrialRecord:
    from_step = folder.checkpoints()[-1][0] if folder.is_run() and folder.checkpoints() else 0
    sweep.log_attempt(trial.trial_id, from_step)
    try:
        if folder.is_run():
            if folder.read_config() != trial.config:
                raise ValueError(f"{folder.path} holds a run with another config than trial {trial.trial_id}")
            resume(folder.path, progress=False, callbacks=callbacks)
        else:
            # A folder without a config holds nothing of a run (a start killed before it wrote one).
            train(trial.config, folder.path, progress=False, callbacks=callbacks, overwrite=folder.path.exists())
    except NonFiniteLossError as error:
        return record_from_folder(trial, folder, "failed", str(error))
    except Exception as error:  # noqa: BLE001 - any error of one trial is its result; the sweep goes on
        where = traceback.extract_tb(error.__traceback__)[-1]
        reason = f"{type(error).__name__}: {error} (at {where.filename.rsplit('/', 1)[-1]}:{where.lineno})"
        return record_from_folder(trial, folder, "failed", reason.replace("\n", " "))
    return record_from_folder(trial, folder, "ok")


def record_from_folder(trial: Trial, folder: RunFolder, status: str, reason: str | None = None) -> TrialRecord:
    """The record of ``trial`` from what its run folder holds (summary and metrics; what is missing stays None)."""
    try:
        summary = (folder.read_summary() if folder.is_run() else None) or {}
    except ValueError:
        summary = {}
    lines = folder.read_metrics()
    final = summary.get("final") or {}
    # A run stopped from outside (ASHA) or killed has no summary: its last evaluation stands in.
    evaluation = final.get("eval") or {k: v for k, v in (lines[-1] if lines else {}).items() if k.startswith("eval/")}
    train_set = final.get("train") or {k: v for k, v in (lines[-1] if lines else {}).items() if k.startswith("train/")}
    losses = [line["train/loss"] for line in lines if isinstance(line.get("train/loss"), (int, float))]
    memorized, reached = summary.get("memorization_step"), summary.get("threshold_step")
    reached_seconds = summary.get("threshold_seconds")
    if not summary:
        memorized, reached, reached_seconds = _milestones(lines, trial.config)
    parts = final.values() if final else [lines[-1]] if lines else []
    metrics = {name: value for part in parts for name, value in part.items() if "/" in name and _finite_number(value)}
    return TrialRecord(
        trial_id=trial.trial_id,
        status=status,
        reason=reason,
        steps=summary.get("steps", lines[-1]["step"] if lines else None),
        seconds=summary.get("seconds", lines[-1].get("seconds") if lines else None),
        stop_reason=summary.get("stop_reason"),
        kl_threshold=trial.config.train.kl_threshold,
        steps_to_threshold=reached,
        seconds_to_threshold=reached_seconds,
        memorization_step=memorized,
        grok_delay=reached - memorized if reached is not None and memorized is not None else None,
        final_kl=evaluation.get("eval/kl"),
        final_train_loss=losses[-1] if losses else None,
        final_eval_ce=evaluation.get("eval/model_ce"),
        bayes_eval_ce=evaluation.get("eval/bayes_ce"),
        final_train_ce=train_set.get("train/model_ce"),
        n_params=trial.config.model.n_params,
        metrics=metrics,
        ended=round(time.time(), 3),
    )


def _milestones(lines: list[dict], config: RunConfig) -> tuple[int | None, int | None, float | None]:
    """Memorization step, threshold step and its seconds from the metrics of a run that has no summary, by the
    Evaluator's own rules (training-set excess CE <= memorization_threshold; eval KL <= kl_threshold)."""
    train = config.train
    memorized = next((l["step"] for l in lines if l.get("train/excess_ce", math.inf) <= train.memorization_threshold), None)
    reached = next((l for l in lines if l.get("eval/kl", math.inf) <= train.kl_threshold), None)
    return memorized, reached["step"] if reached else None, reached.get("seconds") if reached else None


def _finite_number(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
