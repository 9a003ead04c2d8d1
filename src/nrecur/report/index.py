"""The index over a folder of runs: ``RUNS_DIR/index.html``, one sortable row per run.

:func:`write_reports` is what ``nrecur report RUNS_DIR`` does: it finds every
run folder in ``RUNS_DIR`` and up to :data:`~nrecur.report.reading.RUN_DEPTH` levels
below it (a study's trials are ``studies/NAME/sweep/trials/ID``), writes each run's report
and then the index — task (with :func:`differences_among_siblings`: what sets a run apart
from the runs beside it, such as a sweep's axes and seeds, and where a fine-tuned run's
weights came from), model size, steps, training time, final KL, threshold step, status and a
small curve of the eval KL, each row linking to its run's page (relative, URL-encoded links). A run that cannot be read (a damaged
``config.json``) is named in the index and left out, and a run whose report cannot be written (a read-only
folder) keeps its row, with a warning; the others are not held up by either. Under the table, the figures of every folder
below ``RUNS_DIR`` that has figures of its own and is not a run (a sweep's ``plots/``, a
study's results, :func:`figure_folders`), one section each.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path, PurePath
from typing import Sequence

from nrecur._io import atomic_write_text, remove_stale_temporaries
from nrecur._text import seconds_text
from nrecur.report.curves import kl_sparkline
from nrecur.report.embed import Budget, Image, file_image, relative_link
from nrecur.report.page import PAGE_LIMIT, ReportResult, version, write_report
from nrecur.report.reading import RUN_DEPTH, RunRecord, find_runs, read_run
from nrecur.report.sections import figure_caption, fmt
from nrecur.report.templates import render
from nrecur.report.words import status_in_words, task_label
from nrecur.train.config import RunConfig
from nrecur.train.folder import RunFolder

__all__ = ["INDEX_FILE", "FolderReport", "IndexRow", "differences_among_siblings", "path_labels", "write_index", "write_reports"]

INDEX_FILE = "index.html"


@dataclass(frozen=True)
class IndexRow:
    """One run in the index; ``*_sort`` are the values the table sorts by (numbers, or "" when missing)."""

    name: str
    link: str | None
    task: str
    varied: tuple[str, ...]
    """``name value`` of each config field in which this run differs from the runs beside it (a sweep's axes and
    seeds; :func:`differences_among_siblings`), led by its ``init_from`` when it is fine-tuned; empty if neither."""
    parameters: str
    parameters_sort: str
    steps: str
    steps_sort: str
    seconds: str
    seconds_sort: str
    kl: str
    kl_sort: str
    threshold: str
    threshold_step: str
    threshold_step_sort: str
    status: str
    spark: str

    @classmethod
    def of(cls, record: RunRecord, name: str, link: str | None, varied: tuple[str, ...] = ()) -> "IndexRow":
        last = record.last
        parameters = record.config.model.n_params
        kl = last["eval/kl"] if last else None
        reached = record.threshold_step
        return cls(
            name=name,
            link=link,
            task=task_label(record.config.task),
            varied=varied,
            parameters=f"{parameters:,} ({record.config.model.n_layers}L, d {record.config.model.d_model})",
            parameters_sort=str(parameters),
            steps=_count_text(record.steps),
            steps_sort="" if record.steps is None else str(record.steps),
            seconds=seconds_text(record.seconds),
            seconds_sort="" if record.seconds is None or not math.isfinite(record.seconds) else f"{record.seconds:.3f}",
            kl=fmt(kl),
            kl_sort="" if kl is None else repr(float(kl)),
            threshold=f"{record.config.train.kl_threshold:g}",
            threshold_step=_count_text(reached),
            threshold_step_sort="" if reached is None else str(reached),
            status=status_in_words(record.status, record.summary) if last is not None else "not evaluated yet",
            spark=kl_sparkline(record),
        )


def _count_text(count: int | None) -> str:
    """A step count with thousands separators; a dash when there is none."""
    return "—" if count is None else f"{count:,}"


def path_labels(paths: Iterable[str]) -> dict[str, str]:
    """Short names for run folders or checkpoint files that still tell their runs apart: the fewest trailing
    parts of the run folders' paths that differ among them (``det``, or ``a/det`` and ``b/det``), a checkpoint
    file as its run's name and step (``RUN/checkpoints/step_00000040.safetensors`` → ``det step 40``)."""
    runs: dict[str, tuple[PurePath, str]] = {}
    for text in set(paths):
        path = PurePath(text)
        step = RunFolder.step_in_checkpoint_name(path)
        runs[text] = (path, "") if step is None else (path.parent.parent, f" step {step}")
    folders = {run for run, _ in runs.values()}
    keep = 1  # distinct folders differ in their whole parts, so the loop ends by the longest at the latest
    while len({folder.parts[-keep:] for folder in folders}) < len(folders):
        keep += 1
    return {text: str(PurePath(*run.parts[-keep:])) + step for text, (run, step) in runs.items()}


def _flat(data, prefix: str = "") -> dict[str, str]:
    """A config as dotted field → value, each value as compact JSON text (lists and empty dicts are leaves)."""
    if not isinstance(data, dict) or not data:
        return {prefix: json.dumps(data, separators=(",", ":"), ensure_ascii=False)}
    flat: dict[str, str] = {}
    for key, value in data.items():
        flat.update(_flat(value, f"{prefix}.{key}" if prefix else key))
    return flat


def _value_text(raw: str, longest: int, labels: dict[str, str] | None = None) -> str:
    """A flattened config value (JSON text) as the index shows it: ``none`` for null, a string without its
    quotes, a path by its ``labels`` entry (cut from the left when long: paths differ at their end)."""
    value = json.loads(raw)
    if value is None:
        return "none"
    text = labels.get(value, value) if labels is not None else value if isinstance(value, str) else raw
    if len(text) <= longest:
        return text
    return "…" + text[-(longest - 1):] if labels is not None else text[: longest - 1] + "…"


def differences_among_siblings(runs: Sequence[tuple[Path, RunConfig]], most: int = 8, longest: int = 28) -> dict[Path, tuple[str, ...]]:
    """Per run, what sets it apart from the runs of the same task kind in its own folder (a sweep's trials, a
    study's runs, a main job's runs): the config fields whose values differ among them, and the run's values,
    as ``("d_model 64", "n_heads 4", "init_seed 1")``. A field goes by its last name unless two differing fields
    share it; ``init_from`` by :func:`path_labels` among the group's sources; a value longer than ``longest``
    characters is cut, and past ``most`` fields the rest is counted (``+3 more``; the run's page has its whole
    config).
    ``init_seed`` is left out where every sibling is fine-tuned (``init_from``), which it does not affect.
    A fine-tuned run always names its ``init_from``, first, even when its siblings share it or it is alone:
    where the weights came from is part of what a run is. Otherwise empty for a run alone in its folder or
    like every sibling."""

    def fine_tuned(flat: dict[str, str]) -> bool:
        return flat.get("init_from", "null") != "null"

    groups: dict[tuple[Path, str], list[tuple[Path, dict[str, str]]]] = {}
    for path, config in runs:
        groups.setdefault((Path(path).parent, config.task.kind), []).append((Path(path), _flat(config.model_dump(mode="json"))))
    labels: dict[Path, tuple[str, ...]] = {}
    for siblings in groups.values():
        shared = set.intersection(*(set(flat) for _, flat in siblings))
        if all(fine_tuned(flat) for _, flat in siblings):
            shared.discard("train.init_seed")  # every model's weights are loaded: its init seed has no effect
        varied = [key for key in sorted(shared) if len({flat[key] for _, flat in siblings}) > 1 and key != "init_from"]
        if any(fine_tuned(flat) for _, flat in siblings):
            varied.insert(0, "init_from")  # shared or not, where the weights came from leads
        sources = path_labels(json.loads(flat["init_from"]) for _, flat in siblings if fine_tuned(flat))
        last = [key.rsplit(".", 1)[-1] for key in varied]
        names = [short if last.count(short) == 1 else key for key, short in zip(varied, last)]
        for path, flat in siblings:
            parts = [f"{name} {_value_text(flat[key], longest, sources if key == 'init_from' else None)}" for key, name in zip(varied, names)]
            labels[path] = tuple(parts[:most] + ([f"+{len(parts) - most} more"] if len(parts) > most else []))
    return labels


@dataclass(frozen=True)
class FigureFolder:
    """A folder below the index, not a run, with figures of its own (a sweep's plots, a study's results)."""

    name: str
    figures: tuple[Image, ...]


@dataclass(frozen=True)
class FolderReport:
    """What :func:`write_reports` wrote."""

    index: Path
    reports: tuple[ReportResult, ...]
    skipped: tuple[str, ...]
    """Run folders that could not be read, with the reason (one line each)."""
    unwritten: tuple[str, ...] = ()
    """Runs in the index whose report could not be written (a read-only folder), with the reason."""


FIGURE_SUFFIXES = (".png", ".svg")


def figure_folders(folder: str | os.PathLike, depth: int = RUN_DEPTH + 1) -> list[Path]:
    """Folders in and below ``folder`` (``depth`` levels deep: one more than runs, for a study's sweep's
    ``plots/``) holding figure files of their own, never a run folder or anything in one (their figures are
    on the run's page), sorted."""
    folder = Path(folder)
    if RunFolder(folder).is_run() or not folder.is_dir():
        return []
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    found = [folder] if any(p.suffix in FIGURE_SUFFIXES and p.is_file() for p in entries) else []
    for sub in (p for p in entries if p.is_dir()) if depth > 0 else ():
        found += figure_folders(sub, depth - 1)
    return found


def write_index(folder: str | os.PathLike, records: list[RunRecord], skipped: list[str] = ()) -> Path:
    """Write ``folder/index.html`` over ``records`` (runs in or below ``folder``); ``skipped`` lines are shown."""
    folder = Path(folder)
    index = folder / INDEX_FILE
    remove_stale_temporaries(folder, recursive=False)
    rows = []
    varied = differences_among_siblings([(record.path, record.config) for record in records])
    for record in records:
        name = os.path.relpath(record.path, folder)
        report = record.folder.report_file
        link = relative_link(report, folder) if report.exists() else None
        rows.append(IndexRow.of(record, name, link, varied[record.path]))
    budget = Budget(PAGE_LIMIT)
    figure_sections = []
    for sub in figure_folders(folder):
        stems = sorted({p.with_suffix("") for p in sub.iterdir() if p.suffix in FIGURE_SUFFIXES and p.is_file()})
        name = folder.resolve().name if sub == folder else os.path.relpath(sub, folder)
        figure_sections.append(FigureFolder(name, tuple(file_image(stem, budget, folder, title=figure_caption(stem)) for stem in stems)))
    text = render(
        "index.html",
        title=f"nrecur runs in {folder.resolve().name}",
        path=str(folder),
        runs=rows,
        figure_folders=figure_sections,
        warnings=list(skipped),
        version=f"{version()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    )
    atomic_write_text(index, text)
    return index


def write_reports(folder: str | os.PathLike) -> FolderReport:
    """Every run's report in ``folder`` (and up to ``RUN_DEPTH`` levels below), then ``folder/index.html``."""
    folder = Path(folder)
    paths = find_runs(folder)
    if not paths:
        raise FileNotFoundError(f"{folder} holds no run folders (folders with a {RunFolder.CONFIG_FILE}), in it or up to {RUN_DEPTH} levels below")
    records, results, skipped, unwritten = [], [], [], []
    for path in paths:
        try:
            record = read_run(path)
        except (OSError, ValueError) as error:
            skipped.append(f"{path}: {error}")
            warnings.warn(f"{path} left out of the index: {error}", stacklevel=2)
            continue
        records.append(record)
        try:
            results.append(write_report(record, index=folder / INDEX_FILE))
        except OSError as error:  # a read-only run: the index still lists it
            reason = f"{error.strerror}: {error.filename}" if error.strerror and error.filename else str(error)
            unwritten.append(f"{path}: its report could not be written ({reason})")
            warnings.warn(f"{path}: its report could not be written ({reason}); the index lists the run without a new page", stacklevel=2)
    index = write_index(folder, records, [*skipped, *unwritten])
    return FolderReport(index=index, reports=tuple(results), skipped=tuple(skipped), unwritten=tuple(unwritten))
