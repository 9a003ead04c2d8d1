"""A sweep folder on disk: the one place that knows its layout.

::

    spec.json            the spec of the last invocation, as loaded
    trials.json          its trials: index, id, varied values, seed (the table's rows, in order)
    trials/<id>/         each trial's run folder (config.json, metrics.jsonl, checkpoints/, …)
    records/<id>.json    each ended trial's result, written once, atomically: its presence means "done"
    attempts.jsonl       one line per start of a trial (pid, time, step it resumed from)
    locks/<id>.lock      held (flock) by the process working on the trial, while it does
    .lock                held by the sweep writing the folder, while it runs (one sweep per folder)
    results.parquet      the table: one row per trial of the spec (and results.csv, the same)
    plots/               figures of ``nrecur sweep-plot``
    ray/                 Ray Tune's own files (``--backend ray --asha``)

The table is assembled from ``trials.json`` and the records, so it is always
consistent with them: a killed sweep loses at most the trials in flight, and
those resume from their run folders. One sweep at a time writes a folder
(:meth:`SweepDir.writing`): a second is refused at once, naming the first.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from nrecur._io import append_line, atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from nrecur._lock import LOCK_NAME, folder_lock, locked
from nrecur.train.renames import renamed_record

STATUSES = ("ok", "failed", "stopped", "pending")
"""ok: trained to its end; failed: NaN loss, an error or a dead worker (see ``reason``); stopped: ended early by
ASHA (Ray backend); pending: not ended yet (only in a table read while the sweep runs or after it was killed)."""


@dataclass(frozen=True)
class TrialRecord:
    """How one trial ended: the row of the results table beyond the trial's own values."""

    trial_id: str
    status: str
    """One of :data:`STATUSES` (never ``pending`` on disk)."""
    reason: str | None = None
    """Why a trial failed or stopped (one line)."""
    steps: int | None = None
    """Optimizer steps trained."""
    seconds: float | None = None
    """Training time (summed over resumes)."""
    stop_reason: str | None = None
    """The trainer's: ``steps``, ``threshold``, ``time budget``, ``non-finite loss`` …"""
    kl_threshold: float | None = None
    steps_to_threshold: int | None = None
    """First evaluated step with eval KL <= kl_threshold (the run's ``threshold_step``), None if never."""
    seconds_to_threshold: float | None = None
    memorization_step: int | None = None
    """First evaluated step whose training-set loss came within memorization_threshold of its Bayes loss (finite mode)."""
    grok_delay: int | None = None
    """``steps_to_threshold - memorization_step`` when both happened (as :attr:`nrecur.train.Grokking.delay`)."""
    final_kl: float | None = None
    """Mean KL(observer || model) on the evaluation set at the end (nats/token)."""
    final_train_loss: float | None = None
    """Mean training loss over the last evaluation interval."""
    final_eval_ce: float | None = None
    """The model's cross-entropy on the evaluation set at the end."""
    bayes_eval_ce: float | None = None
    """The observer's cross-entropy on the same sequences (the floor)."""
    final_train_ce: float | None = None
    """The model's cross-entropy on its training set at the end (finite mode; else None)."""
    n_params: int | None = None
    note: str | None = None
    """What happened on the way, in one line: a trial trained alone because its ensemble failed says so, and why."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Every final metric of the run's summary (``eval/target_acc``, ``in_dist/kl`` …)."""
    ended: float = 0.0
    """Unix time the record was written."""

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "TrialRecord":
        data = renamed_record(json.loads(text))  # a record written under the old stop reason
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})


FIXED_COLUMNS = (
    "status", "reason", "steps", "seconds", "stop_reason", "kl_threshold", "steps_to_threshold", "seconds_to_threshold",
    "memorization_step", "grok_delay", "final_kl", "final_train_loss", "final_eval_ce", "bayes_eval_ce", "final_train_ce",
    "n_params", "note",
)  # fmt: skip
"""Columns every table has after the trial's values (``trial``, ``trial_id``, one per varied field, ``seed``);
then ``run_dir``, ``attempts`` and the spec's recorded metrics."""


@dataclass(frozen=True)
class SweepDir:
    """Paths and files of the sweep folder ``path``."""

    path: Path

    def __init__(self, path: str | os.PathLike) -> None:
        object.__setattr__(self, "path", Path(path))

    spec_file = property(lambda self: self.path / "spec.json")
    trials_file = property(lambda self: self.path / "trials.json")
    records_dir = property(lambda self: self.path / "records")
    locks_dir = property(lambda self: self.path / "locks")
    attempts_file = property(lambda self: self.path / "attempts.jsonl")
    parquet_file = property(lambda self: self.path / "results.parquet")
    csv_file = property(lambda self: self.path / "results.csv")
    plots_dir = property(lambda self: self.path / "plots")

    def run_dir(self, trial_id: str) -> Path:
        return self.path / "trials" / trial_id

    def record_file(self, trial_id: str) -> Path:
        return self.records_dir / f"{trial_id}.json"

    # --- checks and set-up

    def check_usable(self) -> None:
        """Refuse a file, or a non-empty folder that is not a sweep (a sweep would mix with what is there)."""
        if self.path.exists() and not self.path.is_dir():
            raise FileExistsError(f"{self.path} is a file, not a folder; pick another --out")
        if self.path.is_dir() and any(p.name != LOCK_NAME for p in self.path.iterdir()) and not self.trials_file.exists():
            raise FileExistsError(f"{self.path} is not empty and holds no sweep; pick a new or empty --out")

    def writing(self) -> contextlib.AbstractContextManager[Path]:
        """Hold the sweep folder's lock while the block runs (made if missing, and removed again if nothing was
        written): one sweep at a time writes a folder; a second raises :class:`~nrecur._lock.FolderBusyError` at once."""
        return folder_lock(self.path, doing="a sweep", refused="wait for it to end (it runs every trial of the spec), or give another --out")

    def prepare(self, spec_json: dict, trials: list[dict], record_metrics: list[str]) -> None:
        """Write the spec and the trials (replacing an earlier invocation's) and clear what a kill left behind."""
        self.path.mkdir(parents=True, exist_ok=True)
        self.records_dir.mkdir(exist_ok=True)
        self.locks_dir.mkdir(exist_ok=True)
        remove_stale_temporaries(self.path, recursive=False)
        remove_stale_temporaries(self.records_dir, recursive=False)
        atomic_write_text(self.spec_file, json.dumps(spec_json, indent=1) + "\n")
        table = {"name": spec_json.get("name"), "record_metrics": record_metrics, "trials": trials}
        atomic_write_text(self.trials_file, json.dumps(table, indent=1) + "\n")

    # --- records

    def read_record(self, trial_id: str) -> TrialRecord | None:
        path = self.record_file(trial_id)
        if not path.exists():
            return None
        try:
            return TrialRecord.from_json(path.read_text())
        except (json.JSONDecodeError, TypeError, UnicodeDecodeError) as error:
            raise ValueError(f"{path} is not a valid trial record ({error}); delete it to run the trial again") from None

    def write_record(self, record: TrialRecord) -> None:
        atomic_write_text(self.record_file(record.trial_id), record.to_json())

    def remove_record(self, trial_id: str) -> None:
        self.record_file(trial_id).unlink(missing_ok=True)

    @contextlib.contextmanager
    def lock(self, trial_id: str) -> Iterator[None]:
        """Hold the trial's lock, waiting for it: a process that outlived a killed sweep finishes before another
        takes the trial. Re-entrant within a process (:mod:`nrecur._lock`): a runner that holds it may call one
        that takes it again."""
        self.locks_dir.mkdir(parents=True, exist_ok=True)
        with locked(self.locks_dir / f"{trial_id}.lock", doing=f"trial {trial_id}", wait=True):
            yield

    def log_attempt(self, trial_id: str, from_step: int) -> None:
        """Append one line per start of a trial (a single short O_APPEND write: whole or not at all)."""
        line = json.dumps({"trial_id": trial_id, "pid": os.getpid(), "time": round(time.time(), 3), "from_step": from_step})
        append_line(self.attempts_file, line)

    def attempts(self) -> list[dict]:
        """The lines of ``attempts.jsonl`` (a torn last line is skipped)."""
        if not self.attempts_file.exists():
            return []
        found = []
        for text in self.attempts_file.read_text(errors="replace").splitlines():
            try:
                found.append(json.loads(text))
            except json.JSONDecodeError:
                continue
        return found

    # --- the table

    def read_trials(self) -> dict:
        if not self.trials_file.exists():
            raise FileNotFoundError(f"{self.path} is not a sweep folder (no {self.trials_file.name}); run nrecur sweep SPEC --out {self.path}")
        return json.loads(self.trials_file.read_text())

    def table(self, absolute_paths: bool = False):
        """The results table as a pandas DataFrame, one row per trial of the spec (``pending`` where not ended)."""
        import pandas as pd

        stored = self.read_trials()
        counts: dict[str, int] = {}
        for line in self.attempts():
            counts[line.get("trial_id")] = counts.get(line.get("trial_id"), 0) + 1
        extra = list(stored.get("record_metrics", []))
        rows = []
        for trial in stored["trials"]:
            record = self.read_record(trial["trial_id"]) or TrialRecord(trial_id=trial["trial_id"], status="pending")
            row: dict[str, Any] = {"trial": trial["index"], "trial_id": trial["trial_id"]}
            row.update({path: _cell(value) for path, value in trial["params"].items()})
            row["seed"] = trial["seed"]
            row.update({name: getattr(record, name) for name in FIXED_COLUMNS})
            run_dir = self.run_dir(trial["trial_id"])
            row["run_dir"] = str(run_dir.absolute() if absolute_paths else run_dir.relative_to(self.path))
            row["attempts"] = counts.get(trial["trial_id"], 0)
            row.update({name: record.metrics.get(name, math.nan) for name in extra})
            rows.append(row)
        frame = pd.DataFrame(rows)
        for path in {path for trial in stored["trials"] for path in trial["params"]}:
            values = [trial["params"].get(path) for trial in stored["trials"]]
            kinds = {type(value) for value in values if value is not None}
            if len(kinds) > 1 and not kinds <= {int, float}:  # e.g. p_noise 0.1 and "0.2/n": one type per column
                frame[path] = [None if value is None else str(_cell(value)) for value in values]
        for name in ("steps", "steps_to_threshold", "memorization_step", "grok_delay", "n_params"):
            if name in frame:
                frame[name] = frame[name].astype("Int64")  # integers with missing values, not floats
        for name in ("seconds", "kl_threshold", "seconds_to_threshold", "final_kl", "final_train_loss", "final_eval_ce", "bayes_eval_ce", "final_train_ce"):
            if name in frame:
                frame[name] = frame[name].astype("float64")
        return frame

    def write_table(self):
        """Write ``results.parquet`` and ``results.csv`` (atomically); returns the table."""
        frame = self.table()
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        atomic_write_bytes(self.parquet_file, buffer.getvalue())
        atomic_write_text(self.csv_file, frame.to_csv(index=False))
        return frame


def _cell(value: Any) -> Any:
    """Table cells are scalars: a list or table value (``train.betas``) is stored as its JSON text."""
    return json.dumps(value) if isinstance(value, (list, tuple, dict)) else value


def load_sweep(path: str | os.PathLike):
    """The results table of the sweep folder ``path`` as a pandas DataFrame (``run_dir`` absolute, so that
    ``load_run(frame.run_dir[i])`` opens a trial). Rows of trials still running or killed say ``pending``."""
    return SweepDir(path).table(absolute_paths=True)
