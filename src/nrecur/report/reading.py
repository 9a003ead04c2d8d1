"""What a report reads from a run folder, read once and forgivingly.

:func:`read_run` gathers everything a page shows — the config, the metrics
lines, how the run ended, the analyses and their figures — into a frozen
:class:`RunRecord`. Damage that still leaves something to show is not an
error: a corrupt ``metrics.jsonl`` line is skipped, an unreadable
``summary.json`` or analysis JSON is left out, and each such problem is kept
in ``RunRecord.warnings`` (one line naming the file and, for metrics, the
line) so the page and the command line can both say it. Only a folder that is
not a run at all (no readable ``config.json``) is an error. A report never
leaves its run: a figure an analysis JSON names is resolved (links followed)
and left out with a warning unless it lies inside the run folder
(:func:`~nrecur.report.embed.inside`), so no file from elsewhere is ever inlined into a page.
"""

from __future__ import annotations

import json
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from nrecur.report.embed import inside
from nrecur.train.config import RunConfig
from nrecur.train.folder import RunFolder

__all__ = ["RUN_DEPTH", "AnalysisFile", "RunRecord", "find_runs", "read_run"]

_STEP_FOLDER = re.compile(r"^step_(\d{8,})$")
OVER_TRAINING = "_over_training"


@dataclass(frozen=True)
class AnalysisFile:
    """One ``analysis/NAME.json`` and the figure files it names."""

    name: str
    """The result's name: ``probes``, ``geometry_over_training``, …"""
    path: Path
    data: dict
    """The JSON as written by ``write_analysis`` (``headline`` first)."""
    figures: tuple[Path, ...]
    """Figure files that exist, in the order the JSON lists them (PNG and SVG of each)."""

    @property
    def analysis(self) -> str:
        """The registered analysis it belongs to (``probes`` for ``probes_over_training``)."""
        return self.name.removesuffix(OVER_TRAINING)

    @property
    def over_training(self) -> bool:
        return self.name.endswith(OVER_TRAINING)

    @property
    def headline(self) -> dict:
        headline = self.data.get("headline")
        return headline if isinstance(headline, dict) else {}

    @property
    def step(self) -> int | None:
        """The checkpoint step the analysis looked at (None for over-training results and old files)."""
        step = self.data.get("step")
        return step if isinstance(step, int) else None


@dataclass(frozen=True)
class RunRecord:
    """A run folder as the report sees it."""

    path: Path
    config: RunConfig
    metrics: tuple[dict, ...]
    """One dict per evaluation (``metrics.jsonl``), corrupt lines skipped."""
    summary: dict | None
    """``summary.json`` (None while the run has not ended, or when it is unreadable)."""
    analyses: tuple[AnalysisFile, ...]
    """``analysis/*.json`` of the latest checkpoint, in the order the analyses are registered."""
    earlier: dict[int, tuple[AnalysisFile, ...]] = field(default_factory=dict)
    """step → the analyses of an earlier checkpoint (``analysis/step_NNNNNNNN/``)."""
    checkpoint_steps: tuple[int, ...] = ()
    warnings: tuple[str, ...] = ()
    """Problems met while reading, one line each (already issued as Python warnings)."""

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def evaluations(self) -> tuple[dict, ...]:
        """The metrics lines that hold an evaluation (``eval/kl``)."""
        return tuple(line for line in self.metrics if isinstance(line.get("eval/kl"), (int, float)))

    @property
    def last(self) -> dict | None:
        """The latest evaluation line (None before the first evaluation)."""
        evaluations = self.evaluations
        return evaluations[-1] if evaluations else None

    @property
    def status(self) -> str:
        """``finished``, ``failed``, … from ``summary.json``; ``running or interrupted`` without one."""
        if self.summary is None:
            return "running or interrupted"
        return str(self.summary.get("status", "unknown"))

    def curve(self, name: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of a scalar metric over training (lines without it skipped)."""
        rows = [(line["step"], float(line[name])) for line in self.metrics if isinstance(line.get(name), (int, float))]
        return [s for s, _ in rows], [v for _, v in rows]

    @property
    def threshold_step(self) -> int | None:
        """The first evaluation with KL ≤ the run's threshold: ``summary.json``'s record, or, while the run
        has no summary, the first such line of its metrics."""
        if self.summary is not None:
            return self.summary.get("threshold_step")
        threshold = self.config.train.kl_threshold
        return next((line["step"] for line in self.evaluations if line["eval/kl"] <= threshold), None)

    @property
    def memorization_step(self) -> int | None:
        """When the training-set loss came within the memorization threshold of its Bayes loss (finite mode)."""
        if self.summary is not None:
            return self.summary.get("memorization_step")
        limit = self.config.train.memorization_threshold
        return next(
            (line["step"] for line in self.metrics if isinstance(line.get("train/excess_ce"), (int, float)) and line["train/excess_ce"] <= limit),
            None,
        )

    @property
    def seconds(self) -> float | None:
        """Training time: the summary's, else the last metrics line's."""
        if self.summary is not None and isinstance(self.summary.get("seconds"), (int, float)):
            return float(self.summary["seconds"])
        return float(self.metrics[-1]["seconds"]) if self.metrics and "seconds" in self.metrics[-1] else None

    @property
    def steps(self) -> int | None:
        """Steps trained: the summary's, else the last metrics line's step."""
        if self.summary is not None and isinstance(self.summary.get("steps"), int):
            return self.summary["steps"]
        return self.metrics[-1]["step"] if self.metrics else None


def read_run(path: str | Path) -> RunRecord:
    """Read run folder ``path`` for a report; raises ``FileNotFoundError``/``ValueError`` when it is not a run."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise FileNotFoundError(f"{folder.path} is not a folder")
    config = folder.read_config()  # the one thing a report cannot do without
    problems: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = folder.read_metrics()
    problems += [str(w.message) for w in caught]
    try:
        summary = folder.read_summary()
    except ValueError as error:
        problems.append(f"{error}; how the run ended is left out")
        summary = None
    analyses = _read_analyses(folder.analysis_dir, problems, folder.path)
    earlier = {}
    if folder.analysis_dir.is_dir():
        for sub in sorted(folder.analysis_dir.iterdir()):
            match = _STEP_FOLDER.match(sub.name)
            if match and sub.is_dir():
                found = _read_analyses(sub, problems, folder.path)
                if found:
                    earlier[int(match.group(1))] = found
    for problem in problems:
        warnings.warn(problem, stacklevel=2)
    return RunRecord(
        path=folder.path,
        config=config,
        metrics=tuple(metrics),
        summary=summary,
        analyses=analyses,
        earlier=earlier,
        checkpoint_steps=tuple(step for step, _ in folder.checkpoints()),
        warnings=tuple(problems),
    )


def _read_analyses(folder: Path, problems: list[str], root: Path) -> tuple[AnalysisFile, ...]:
    """The analysis JSONs in ``folder`` with their figures, every figure inside the run folder ``root``."""
    if not folder.is_dir():
        return ()
    found = []
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problems.append(f"{path} is not valid JSON ({error}); its section is left out")
            continue
        if not isinstance(data, dict) or not isinstance(data.get("headline", {}), dict):
            problems.append(f"{path} does not hold an analysis result (no headline); its section is left out")
            continue
        names = data.get("figures") if isinstance(data.get("figures"), list) else []
        figures = []
        for name in (name for name in names if isinstance(name, str)):
            if not inside(folder / name, root):
                problems.append(f"{path} names a figure outside the run folder ({name!r}); left out")
            elif (folder / name).is_file():
                figures.append(folder / name)
        figures = tuple(figures)
        found.append(AnalysisFile(name=str(data.get("name", path.stem)), path=path, data=data, figures=figures))
    return tuple(sorted(found, key=_registry_order))


def _registry_order(item: AnalysisFile) -> tuple[int, bool, str]:
    from nrecur.analysis import ANALYSES

    order = list(ANALYSES)
    return (order.index(item.analysis) if item.analysis in order else len(order), item.over_training, item.name)


RUN_DEPTH = 5
"""How deep below a folder runs are looked for: a study's trials, ``runs/studies/NAME/sweep/trials/ID``, are
found from ``runs`` (a sweep's, ``SWEEP/trials/ID``, from the sweep's parent)."""


def find_runs(folder: str | Path, depth: int = RUN_DEPTH) -> list[Path]:
    """Run folders (with a ``config.json``) in ``folder`` and below it, ``depth`` levels deep, sorted."""
    folder = Path(folder)
    if RunFolder(folder).is_run():
        return [folder]
    if depth == 0 or not folder.is_dir():
        return []
    found: list[Path] = []
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
        found += find_runs(sub, depth - 1)
    return found
