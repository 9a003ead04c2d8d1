"""Reports: one self-contained HTML page per run and an index over a folder of runs.

``write_report(RUN)`` writes ``RUN/report.html``: the run in words, its training
curves against the Bayes floor, its evaluation tables and one section per
analysis found in ``RUN/analysis/``. ``write_reports(RUNS_DIR)`` writes the
report of every run in a folder and ``RUNS_DIR/index.html`` over them. A page
opens offline: every figure, style and script is inside it, and it makes no
request of any kind. ``nrecur report PATH`` is the command line for both.
"""

from nrecur.report.index import FolderReport, write_index, write_reports
from nrecur.report.page import PAGE_LIMIT, ReportResult, write_report
from nrecur.report.reading import RunRecord, find_runs, read_run

__all__ = ["PAGE_LIMIT", "FolderReport", "ReportResult", "RunRecord", "find_runs", "read_run", "write_index", "write_report", "write_reports"]
