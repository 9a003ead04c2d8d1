"""A worker process: ``python -m nrecur.jobs.worker RUN_DIR [--no-train] [--analyze] [--index PATH] [--cap OPTION=N ...] [--no-progress]``.

Resumes (or starts) the run folder ``RUN_DIR`` and prints one line when it
ends; with ``--analyze`` it then runs every analysis that applies to the run
(:func:`analyze_run`), writes the run's report (linking to ``--index``) and
last ``RUN_DIR/analyzed.json``, the record of what each analysis did, which
tells a job that the run is analyzed (or which analyses to retry). On stderr
it says which analysis it computes, and when it writes the report, in lines
the job reads back to show its progress (:func:`analysis_under_way`).
``--no-train`` only analyzes and reports a run that has finished. Jobs start
workers (:func:`run_worker`, forked from the server of :mod:`nrecur._processes`
with torch already imported) so that each run has its own process, its own
thread count and ``OMP_WAIT_POLICY=PASSIVE`` (see :mod:`nrecur.jobs.main`);
analyzing in the worker that trained the run lets one run's analyses overlap
another's training.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nrecur._processes import worker_started
from nrecur._text import seconds_text
from nrecur.analysis.driver import computing_in
from nrecur.jobs.records import AnalysisRecord, write_analysis_records
from nrecur.train import resume

__all__ = ["ANALYSIS_LINE", "ANALYSIS_MLP_ROWS", "ANALYSIS_SEQUENCES", "JOB_CAPS", "WorkerOutput", "analysis_under_way", "analyze_run", "main", "run_worker"]

ANALYSIS_SEQUENCES = 1024
"""The most fresh sequences a job's analysis uses: analyses whose default asks for more get this many
(a job analyzes several runs; ``nrecur analyze`` uses each analysis's own default)."""
ANALYSIS_MLP_ROWS = 8000
"""The most positions a job's MLP probe is fitted on (``nrecur analyze``: the probes' own default). The MLP
probes are most of a job's analysis time; the report states the number of rows
(``benchmarks/bench_probes.py`` measures what fewer rows cost and change)."""


JOB_CAPS = {"n_sequences": ANALYSIS_SEQUENCES, "decode_sequences": ANALYSIS_SEQUENCES, "mlp_rows": ANALYSIS_MLP_ROWS}
"""The options a job's analyses cap where their default is larger."""


ANALYSIS_LINE = "analysis: "
"""How each line a worker logs about its analyses starts (:func:`analysis_under_way` reads them back)."""
_REPORT = "writing the report"
_TAIL_BYTES = 16384
"""How much of the end of a worker's log :func:`analysis_under_way` reads."""


def analyze_run(
    folder: str | Path, caps: dict[str, int] | None = None, progress: bool = False, log: Callable[[str], None] | None = None
) -> list[AnalysisRecord]:
    """Every registered analysis that applies to the run at ``folder`` (latest checkpoint), and over training
    where the run has saved more than one checkpoint; each result written to ``analysis/`` as soon as it is
    done. An analysis that fails is recorded and the others go on (a job should not lose every report to one).
    ``caps``: options capped further than :data:`JOB_CAPS` (the smaller cap wins); ``log``: one line per
    analysis started (with ``progress``), note and result (:func:`nrecur.analysis.analyze`)."""
    from nrecur.analysis import analyze
    from nrecur.runs import load_run

    lowest = dict(JOB_CAPS)
    for name, value in (caps or {}).items():
        lowest[name] = min(value, lowest.get(name, value))
    outcomes = analyze(load_run(folder), ["all"], over_training=True, caps=lowest, on_error="record", progress=progress, log=log)
    return [AnalysisRecord(o.name, o.status, o.detail, o.seconds) for o in outcomes]


def analysis_under_way(log: str | Path, start: int = 0) -> str | None:
    """What the worker writing ``log`` (from byte ``start`` on) analyzes now, from the last analysis line in
    its tail: e.g. ``"probes (3 of 12)"``, ``"the report"``; None before its first analysis (or without the file)."""
    try:
        with open(log, "rb") as file:
            file.seek(max(start, os.fstat(file.fileno()).st_size - _TAIL_BYTES))
            lines = file.read().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if line == ANALYSIS_LINE + _REPORT:
            return "the report"
        if line.startswith(ANALYSIS_LINE) and (computing := computing_in(line.removeprefix(ANALYSIS_LINE))):
            return computing
    return None


@dataclass(frozen=True)
class WorkerOutput:
    """Where a worker started by a job writes: its ``log`` (``append``, or a new one), stderr too unless
    ``stderr`` is False (a lone worker's progress bar stays on the terminal)."""

    log: str
    append: bool = False
    stderr: bool = True


def run_worker(argv: list[str], output: WorkerOutput, threads: int, parent: int) -> None:
    """The body of a worker process a job starts (:func:`nrecur._processes.worker_context`): its output to
    ``output``, ``threads`` threads, its end tied to the job's process ``parent``
    (:func:`~nrecur._processes.worker_started`), then :func:`main` on ``argv``; the process exits with main's code."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if output.append else os.O_TRUNC)
    log = os.open(output.log, flags, 0o644)
    os.dup2(log, 1)
    if output.stderr:
        os.dup2(log, 2)
    os.close(log)
    if not worker_started(parent, threads):
        sys.exit(1)  # the job ended before this worker started: nobody waits for it
    sys.exit(main(argv))


def _cap(text: str) -> tuple[str, int]:
    """``OPTION=N``: an integer option of a registered analysis (or of :data:`JOB_CAPS`) and N >= 1."""
    from nrecur.analysis import ANALYSES

    name, _, value = text.partition("=")
    options = [analysis.options.model_fields for analysis in ANALYSES.values()]
    allowed = sorted(set(JOB_CAPS) | {name for fields in options for name, field in fields.items() if field.annotation is int})
    if name not in allowed:
        raise argparse.ArgumentTypeError(f"{name!r} is not an integer analysis option; options: {', '.join(allowed)}")
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: the cap must be an integer >= 1")
    return name, int(value)


def main(argv: list[str]) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt as error:  # SIGINT, or SIGTERM from the job: training saved its step (nrecur.train.loop)
        done = getattr(error, "done", None)
        print(f"{argv[0]}: interrupted ({getattr(error, 'signal_name', 'SIGINT')}){f'; {done}' if done else ''}", flush=True)
        return getattr(error, "exit_code", 130)


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m nrecur.jobs.worker")
    parser.add_argument("run")
    parser.add_argument("--no-train", action="store_true", help="do not train: the run has finished")
    parser.add_argument("--analyze", action="store_true", help="run the analyses that apply, then write the report")
    parser.add_argument("--index", help="the index page the report links to")
    parser.add_argument("--cap", action="append", default=[], type=_cap, metavar="OPTION=N", help="the most an analysis option may be (beyond JOB_CAPS)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    folder = Path(args.run)
    if not args.no_train:
        result = resume(folder, progress=False if args.no_progress else folder.name)
        print(f"{folder}: {result.stop_reason} after {result.steps} steps, {seconds_text(result.seconds)} s", flush=True)
    if args.analyze:
        from nrecur.report import write_report

        start = time.perf_counter()

        def log(line: str) -> None:  # stderr: the job's log when side by side, the terminal when alone
            print(ANALYSIS_LINE + line, file=sys.stderr, flush=True)

        records = analyze_run(folder, caps=dict(args.cap), progress=not args.no_progress, log=log)
        for record in records:
            print(f"{folder.name} analysis {record.line()}", flush=True)
        log(_REPORT)
        report = write_report(folder, index=args.index)
        write_analysis_records(folder, records)  # last: a run whose report failed is analyzed again next time
        print(f"{folder}: analyses and report in {seconds_text(time.perf_counter() - start)} s: {report.path}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
