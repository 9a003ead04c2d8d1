"""What a job's analyses of a run did: one :class:`AnalysisRecord` per analysis, kept in ``RUN/analyzed.json``.

The worker (:mod:`nrecur.jobs.worker`) writes the file last, after the run's report; the main job
(:mod:`nrecur.jobs.main`) reads it to tell which runs still need analyzing (none yet, or a failure to retry)
and to report the failures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal, get_args

from nrecur._io import atomic_write_text
from nrecur._text import seconds_text
from nrecur.train.folder import RunFolder

__all__ = ["AnalysisRecord", "read_analysis_records", "write_analysis_records"]

Outcome = Literal["wrote", "skipped", "failed"]
OUTCOMES: tuple[str, ...] = get_args(Outcome)


@dataclass(frozen=True)
class AnalysisRecord:
    """What one analysis did in a worker: written, skipped (why) or failed (the error)."""

    name: str
    """The analysis (``NAME_over_training`` for one over the saved checkpoints)."""
    outcome: Outcome
    detail: str
    """How many files it wrote, why it does not apply, or the error."""
    seconds: float

    def line(self) -> str:
        return f"{self.name}: {self.outcome} ({self.detail}, {seconds_text(self.seconds)} s)" if self.outcome == "wrote" else f"{self.name}: {self.outcome}: {self.detail}"


def write_analysis_records(folder: str | Path, records: list[AnalysisRecord]) -> Path:
    """Write ``records`` to the run's ``analyzed.json`` (atomically)."""
    path = RunFolder(folder).analyzed_file
    atomic_write_text(path, json.dumps([asdict(record) for record in records], indent=1) + "\n")
    return path


def read_analysis_records(folder: str | Path) -> list[AnalysisRecord] | None:
    """The records of the last job that analyzed the run at ``folder``; None when none did (or its file is
    unreadable or holds an unknown outcome, which counts as not analyzed)."""
    path = RunFolder(folder).analyzed_file
    try:
        records = [AnalysisRecord(**entry) for entry in json.loads(path.read_text())]
    except (OSError, ValueError, TypeError):
        return None
    return records if all(record.outcome in OUTCOMES for record in records) else None
