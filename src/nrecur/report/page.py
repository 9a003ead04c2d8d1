"""One run's report: ``RUN/report.html``, a single self-contained page.

The page holds, in this order: the run in words (task with its parameters,
model size, training settings, interventions applied during training, how it
ended; the full config folded away), the training curves against the Bayes
floor, the evaluation tables of the latest evaluation, one section per
analysis found in ``RUN/analysis/`` and, folded away, the analyses of earlier
checkpoints. It is written atomically; a run with no evaluation yet still gets
a page that says so.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

from nrecur._io import atomic_write_text, remove_stale_temporaries
from nrecur.report.curves import training_figures
from nrecur.report.embed import Budget, relative_link
from nrecur.report.reading import RunRecord, read_run
from nrecur.report.sections import analysis_sections, evaluation_tables, fmt
from nrecur.report.templates import render
from nrecur.report.words import ending_in_words, interventions_in_words, model_in_words, task_in_words, task_label, training_in_words

__all__ = ["PAGE_LIMIT", "ReportResult", "write_report"]

PAGE_LIMIT = 5_000_000
"""Bytes a report page may take; figures that would pass it are left out (with a link to their file)."""
TEXT_RESERVE = 400_000
"""Bytes kept for the page's text, tables, style and script out of :data:`PAGE_LIMIT`."""


@dataclass(frozen=True)
class ReportResult:
    """What :func:`write_report` wrote."""

    path: Path
    size: int
    """Bytes of the page."""
    figures: int
    """Figures inlined."""
    left_out: int
    """Figures left out to keep the page under its limit."""
    warnings: tuple[str, ...]
    """Problems met reading the run (also on the page)."""


def version() -> str:
    try:
        return metadata.version("nrecur")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "(source)"


def _facts(record: RunRecord) -> list[tuple[str, str]]:
    config = record.config
    evaluated = record.last is not None
    facts = [
        ("task", task_in_words(config.task)),
        ("model", model_in_words(config, config.model.n_params)),
        ("training", training_in_words(config)),
        ("ended", ending_in_words(record.status, record.summary, evaluated)),
    ]
    if evaluated:
        last = record.last
        facts.append(("latest evaluation", f"step {last['step']}: KL {fmt(last['eval/kl'])} nats/token, model CE {fmt(last.get('eval/model_ce'))} "
                      f"vs Bayes CE {fmt(last.get('eval/bayes_ce'))}"))  # fmt: skip
    threshold = config.train.kl_threshold
    facts.append(("KL ≤ threshold", f"step {record.threshold_step} (threshold {threshold:g})" if record.threshold_step is not None else f"not reached (threshold {threshold:g})"))
    if config.train.mode == "finite":
        step = record.memorization_step
        facts.append(("memorized", f"step {step}" if step is not None else "not reached (training-set loss never came within "
                      f"{config.train.memorization_threshold:g} of its Bayes loss)"))  # fmt: skip
    interventions = interventions_in_words(config)
    facts.append(("interventions during training", "; ".join(interventions) if interventions else "none"))
    facts.append(("checkpoints", ", ".join(map(str, record.checkpoint_steps)) if record.checkpoint_steps else "none yet"))
    return facts


def write_report(run: str | os.PathLike | RunRecord, index: str | os.PathLike | None = None, limit: int = PAGE_LIMIT) -> ReportResult:
    """Write ``RUN/report.html`` for run folder ``run`` (or a record already read); ``index``: an index page to link."""
    record = run if isinstance(run, RunRecord) else read_run(run)
    page = record.folder.report_file
    remove_stale_temporaries(record.path)  # what a killed analyze or report left (never a live writer's)
    budget = Budget(limit - TEXT_RESERVE)
    curves, curves_note = training_figures(record, budget)
    sections = analysis_sections(record.analyses, budget, record.path)
    earlier = [(step, analysis_sections(found, budget, record.path)) for step, found in sorted(record.earlier.items())]
    images = [*curves]
    for section in sections + [s for _, secs in earlier for s in secs]:
        for part in section.parts:
            images += list(part.figures) + ([*part.slider.frames, *([part.slider.fixed] if part.slider.fixed else [])] if part.slider else [])
    text = render(
        "run.html",
        title=f"{record.name} — nrecur report",
        name=record.name,
        path=str(record.path),
        task_label=task_label(record.config.task),
        facts=_facts(record),
        config_json=json.dumps(record.config.model_dump(mode="json"), indent=2),
        warnings=list(record.warnings),
        curves=curves,
        curves_note=curves_note,
        tables=evaluation_tables(record),
        sections=sections,
        earlier=earlier,
        analysis_dir=str(record.folder.analysis_dir),
        index_link=relative_link(index, record.path) if index is not None else None,
        version=f"{version()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC",
    )
    atomic_write_text(page, text)
    return ReportResult(
        path=page,
        size=len(text.encode()),
        figures=sum(1 for image in images if image.uri),
        left_out=sum(1 for image in images if not image.uri and image.link),
        warnings=record.warnings,
    )
