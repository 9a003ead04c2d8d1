"""``nrecur report PATH``: a run's self-contained HTML report, or every run's and an index over them."""

from __future__ import annotations

import argparse
from pathlib import Path

from nrecur.cli import UsageError, existing_path


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="a self-contained HTML page per run (curves, evaluation, analyses) and an index over runs",
        description="PATH a run folder: write PATH/report.html — the run in words, training curves against the Bayes "
        "floor, evaluation tables and one section per analysis in PATH/analysis/ (nrecur analyze writes them). PATH a "
        "folder of runs (such as nrecur run's --out, a sweep's or a study's folder; runs up to 5 levels below it): write "
        "every run's report and PATH/index.html, one sortable row per run, with the figures of the sweeps and studies "
        "below PATH under the table. Pages open offline: every figure, style and script is inside them.",
    )
    parser.add_argument("path", metavar="PATH", type=existing_path, help="a run folder, or a folder of run folders")
    parser.set_defaults(handler=report_command, command="report")


def report_command(args: argparse.Namespace) -> int:
    from nrecur.report import find_runs, write_report, write_reports
    from nrecur.report.reading import RUN_DEPTH
    from nrecur.report.words import counted
    from nrecur.train.folder import RunFolder

    path = Path(args.path)
    if not path.exists():
        raise UsageError(f"{path} does not exist; give a run folder or a folder of runs")
    if not path.is_dir():
        raise UsageError(f"{path} is a file; give a run folder (with {RunFolder.CONFIG_FILE}) or a folder of runs")
    if RunFolder(path).is_run():
        index = path.parent / "index.html"
        result = write_report(path, index=index if index.exists() else None)
        _print(result)
        return 0
    if not find_runs(path):
        raise UsageError(f"{path} is not a run folder (no {RunFolder.CONFIG_FILE}) and holds no run folders (up to {RUN_DEPTH} levels below)")
    folder = write_reports(path)
    for result in folder.reports:
        _print(result)
    print(f"index of {counted(len(folder.reports), 'run')}{f' ({len(folder.skipped)} left out)' if folder.skipped else ''}: {folder.index}")
    return 0


def _print(result) -> None:
    left = f", {result.left_out} figures left out to stay under 5 MB" if result.left_out else ""
    print(f"wrote {result.path} ({result.size / 1e6:.1f} MB, {result.figures} figures{left})")
