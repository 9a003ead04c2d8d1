"""The main job's workers: what an analysis that fails does, the record that says a run is analyzed, and a
job whose worker fails."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nrecur import NRecurrence, train
from nrecur.analysis import ANALYSES, Analysis, Options, Result
from nrecur.cli import main
from nrecur.jobs import main as job
from nrecur.jobs.records import AnalysisRecord, read_analysis_records, write_analysis_records
from nrecur.jobs.worker import JOB_CAPS, analyze_run
from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig
from nrecur.train.folder import RunFolder
from nrecur.train.presets import get_preset


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("worker") / "run"
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
    settings = TrainConfig(steps=20, batch_size=16, eval_every=10, eval_size=32, device="cpu")
    train(RunConfig(task=task, model=model, train=settings), folder, progress=False)
    return folder


def _boom(run, options):
    raise RuntimeError("boom")


class _Unplottable(Result):
    """A result that computes but whose figure cannot be drawn: a plotting error."""

    name = "unplottable"
    headline: dict = {}


def _cannot_draw(result, folder):
    return result.figure_that_is_not_there


class _Fine(Result):
    """A result that computes and draws at once."""

    name = "fine"
    headline: dict = {}


def _draws_nothing(result, folder):
    return []


#: An analysis that computes and draws at once: the one that goes on beside those that fail.
FINE = Analysis("fine", "computes", Options, _Fine, lambda run, options: _Fine(), lambda run: None, f"{__name__}:_draws_nothing")


def _registry_with_failures(monkeypatch) -> None:
    """One analysis that computes (``fine``) and three that fail or do not apply, in place of the registry."""
    always = lambda run: None  # noqa: E731
    for name in list(ANALYSES):
        monkeypatch.delitem(ANALYSES, name)
    monkeypatch.setitem(ANALYSES, FINE.name, FINE)
    for analysis in (
        Analysis("boom", "fails", Options, _Unplottable, _boom, always, f"{__name__}:_cannot_draw"),
        Analysis("unplottable", "cannot be drawn", Options, _Unplottable, lambda run, options: _Unplottable(), always, f"{__name__}:_cannot_draw"),
        Analysis("never", "does not apply", Options, _Unplottable, _boom, lambda run: "not for this run", f"{__name__}:_cannot_draw"),
    ):
        monkeypatch.setitem(ANALYSES, analysis.name, analysis)


def test_a_failing_analysis_or_figure_is_recorded_and_the_others_go_on(trained, tmp_path, monkeypatch, capsys):
    _registry_with_failures(monkeypatch)  # a real analysis through the worker: the next test
    records = {record.name: record for record in analyze_run(trained, caps={"n_sequences": 32})}
    assert records["fine"].outcome == "wrote" and (trained / "analysis" / "fine.json").is_file()
    assert records["boom"].outcome == "failed" and records["boom"].detail == "RuntimeError: boom"
    assert records["unplottable"].outcome == "failed" and "AttributeError" in records["unplottable"].detail
    assert records["never"].outcome == "skipped" and records["never"].detail == "not for this run"
    assert "Traceback" in capsys.readouterr().err  # the worker's log keeps the tracebacks


@pytest.mark.slow
def test_a_real_analysis_runs_through_the_worker_with_its_caps(trained, monkeypatch):
    for name in [name for name in ANALYSES if name != "probes"]:
        monkeypatch.delitem(ANALYSES, name)
    # A preset's caps lower an option further; one above the job's own cap does not raise it.
    (record,) = analyze_run(trained, caps={"n_sequences": 32, "mlp_steps": 5, "mlp_rows": 10 * JOB_CAPS["mlp_rows"]})
    assert (record.name, record.outcome) == ("probes", "wrote")
    written = json.loads((trained / "analysis" / "probes.json").read_text())["options"]
    assert written["n_sequences"] == 32 and written["mlp_steps"] == 5 and written["mlp_rows"] <= JOB_CAPS["mlp_rows"]


def test_the_worker_writes_the_report_then_the_record_of_its_analyses(trained, tmp_path, monkeypatch, capsys):
    from nrecur.jobs.worker import main as worker

    _registry_with_failures(monkeypatch)
    folder = RunFolder(trained)
    folder.analyzed_file.unlink(missing_ok=True)
    assert worker([str(trained), "--no-train", "--analyze", "--cap=n_sequences=32", "--no-progress"]) == 0
    assert folder.report_file.stat().st_size > 0
    outcomes = {record.name: record.outcome for record in read_analysis_records(trained)}
    assert outcomes == {"fine": "wrote", "boom": "failed", "unplottable": "failed", "never": "skipped"}
    assert "analysis boom: failed: RuntimeError: boom" in capsys.readouterr().out


def test_the_worker_says_which_analysis_it_computes_in_lines_the_job_reads_back(trained, tmp_path, monkeypatch, capsys):
    from nrecur.jobs.worker import analysis_under_way
    from nrecur.jobs.worker import main as worker

    _registry_with_failures(monkeypatch)
    assert worker([str(trained), "--no-train", "--analyze", "--cap=n_sequences=32"]) == 0
    lines = capsys.readouterr().err.splitlines()
    computing = [line for line in lines if "computing" in line]
    assert computing == ["analysis: fine: computing (1 of 3)", "analysis: boom: computing (2 of 3)", "analysis: unplottable: computing (3 of 3)"]
    log = tmp_path / "train.log"
    assert analysis_under_way(log) is None  # no log yet
    log.write_text("training lines\n")
    assert analysis_under_way(log) is None
    for line in lines:  # as the job reads the log while the worker writes it
        with log.open("a") as file:
            file.write(line + "\n")
        if line == computing[1]:
            assert analysis_under_way(log) == "boom (2 of 3)"
            assert analysis_under_way(log, start=log.stat().st_size) is None  # lines before start are not this worker's
    assert analysis_under_way(log) == "the report"


def test_a_run_whose_report_failed_has_no_record_and_is_analyzed_again(trained, monkeypatch):
    import nrecur.report
    from nrecur.jobs.worker import main as worker

    def broken_report(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(nrecur.report, "write_report", broken_report)
    for name in list(ANALYSES):  # one analysis that computes is enough: the report after it fails
        monkeypatch.delitem(ANALYSES, name)
    monkeypatch.setitem(ANALYSES, FINE.name, FINE)
    folder = RunFolder(trained)
    folder.analyzed_file.unlink(missing_ok=True)
    with pytest.raises(OSError, match="disk full"):
        worker([str(trained), "--no-train", "--analyze", "--cap=n_sequences=32", "--no-progress"])
    assert not folder.analyzed_file.exists() and job.needs_analysis(folder)


def test_a_record_with_an_unknown_outcome_counts_as_not_analyzed(tmp_path):
    write_analysis_records(tmp_path, [AnalysisRecord("probes", "wrote", "2 files", 1.0)])
    assert read_analysis_records(tmp_path) == [AnalysisRecord("probes", "wrote", "2 files", 1.0)]
    write_analysis_records(tmp_path, [AnalysisRecord("probes", "fail", "?", 1.0)])
    assert read_analysis_records(tmp_path) is None


def test_a_run_needs_analysis_until_a_job_analyzed_it_without_failures(trained):
    folder = RunFolder(trained)
    folder.analyzed_file.unlink(missing_ok=True)
    assert job.needs_analysis(folder)  # never analyzed (a report written by `nrecur report` does not count)
    write_analysis_records(trained, [AnalysisRecord("probes", "wrote", "4 files", 1.0), AnalysisRecord("boom", "failed", "RuntimeError: boom", 0.1)])
    assert job.needs_analysis(folder)  # retried
    write_analysis_records(trained, [AnalysisRecord("probes", "wrote", "4 files", 1.0), AnalysisRecord("heads", "skipped", "why", 0.0)])
    assert not job.needs_analysis(folder)
    folder.analyzed_file.write_text("{not json")
    assert read_analysis_records(trained) is None and job.needs_analysis(folder)
    folder.analyzed_file.write_text(json.dumps({"probes": "wrote"}))
    assert read_analysis_records(trained) is None


def test_nrecur_run_exits_1_when_an_analysis_failed(tmp_path, monkeypatch, capsys):
    note = "tiny-det analysis boom: failed: RuntimeError: boom (traceback in tiny-det/train.log)"
    result = job.MainJobResult(preset="tiny", rows=(), seconds=1.0, index=tmp_path / "index.html", notes=(note,))
    monkeypatch.setattr(job, "run_main_job", lambda *args, **kwargs: result)
    assert main(["run", "--preset", "tiny", "--out", str(tmp_path), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert f"reports: {tmp_path / 'index.html'}" in captured.out
    assert f"nrecur run: error: {note}" in captured.err and "running the job again retries them" in captured.err


@pytest.mark.slow
def test_a_failed_worker_leaves_the_summary_of_the_other_runs_then_fails(tmp_path, monkeypatch, capsys):
    """The Mess3 worker "fails" (it is never started); the other three train for real."""
    real = job.run_in_workers

    def mess3_fails(jobs, *args, **kwargs):
        failed = [(item, 1) for item in jobs if item.folder.path.name == "tiny-mess3"]
        return failed + real([item for item in jobs if item.folder.path.name != "tiny-mess3"], *args, **kwargs)

    monkeypatch.setattr(job, "run_in_workers", mess3_fails)
    assert main(["run", "--preset", "tiny", "--out", str(tmp_path), "--no-progress", "--no-analyze"]) == 1
    error = capsys.readouterr().err
    assert f"the worker training {tmp_path / 'tiny-mess3'} exited with 1" in error
    rows = json.loads((tmp_path / "tiny-summary.json").read_text())["rows"]
    assert [row["name"] for row in rows] == ["tiny-det", "tiny-stoch-scratch", "tiny-stoch-finetune"]


def test_the_error_names_a_failed_worker_and_the_analyses_that_failed_in_the_jobs_that_ran(tmp_path, monkeypatch):
    """Nothing trains: the fake workers leave analysis records. The Mess3 worker fails, so the failed record in
    its folder is taken for an earlier job's and left out; the scratch run's failed analysis is in the error."""

    def workers(jobs, *args, **kwargs):
        for item in jobs:
            name = item.folder.path.name
            if name in ("tiny-stoch-scratch", "tiny-mess3"):
                write_analysis_records(item.folder.path, [AnalysisRecord("probes", "failed", f"RuntimeError: {name}", 0.1)])
        return [(item, 1) for item in jobs if item.folder.path.name == "tiny-mess3"]

    monkeypatch.setattr(job, "run_in_workers", workers)
    with pytest.raises(RuntimeError) as raised:
        job.run_main_job(get_preset("tiny"), tmp_path, progress=False)
    message = str(raised.value)
    mess3 = tmp_path / "tiny-mess3"
    assert message.startswith(f"the worker training and analyzing {mess3} exited with 1 (see {mess3 / 'train.log'}); ")
    assert "tiny-stoch-scratch analysis probes: failed: RuntimeError: tiny-stoch-scratch" in message
    assert "RuntimeError: tiny-mess3" not in message
    assert (tmp_path / "index.html").is_file() and (tmp_path / "tiny-summary.json").is_file()


def test_a_job_whose_run_failed_leaves_its_dependents_unstarted(tmp_path):
    """The first worker fails for real (its folder holds no run); the job after it never starts; one that
    does not depend on it still runs (and fails the same way, with its own exit code)."""
    folders = [RunFolder(tmp_path / name) for name in ("a", "b", "c")]
    for folder in folders:
        folder.path.mkdir()
    first = job.WorkerJob(folders[0])
    second = job.WorkerJob(folders[1], after=first)
    third = job.WorkerJob(folders[2])
    failed = dict((item.folder.path.name, code) for item, code in job.run_in_workers([first, second, third], 2, 1, progress=False))
    assert failed["a"] not in (0, None) and failed["b"] is None and failed["c"] not in (0, None)
    message = job._failures([(second, None)])
    assert message == f"the worker training {folders[1].path} did not start: the worker training {folders[0].path} failed"
    with pytest.raises(ValueError, match="waits for a job that is not in the queue"):
        job.run_in_workers([second], 1, 1, progress=False)


def test_a_jobs_analyses_cap_the_sequences_and_the_mlp_probe_rows():
    """The main job's worker asks for at most its caps, never for more than an analysis's default."""
    from nrecur.analysis import ANALYSES
    from nrecur.analysis.driver import resolve_options
    from nrecur.jobs.worker import JOB_CAPS

    probes = ANALYSES["probes"]
    assert JOB_CAPS["mlp_rows"] < probes.options.model_fields["mlp_rows"].default
    resolved, _ = resolve_options([probes], caps=JOB_CAPS)
    assert resolved["probes"].n_sequences == JOB_CAPS["n_sequences"] and resolved["probes"].mlp_rows == JOB_CAPS["mlp_rows"]
    resolved, _ = resolve_options([probes], caps={**JOB_CAPS, "n_sequences": 4096})
    assert resolved["probes"].n_sequences == probes.options.model_fields["n_sequences"].default  # below the cap: kept


def test_the_worker_refuses_a_cap_no_analysis_has_and_one_below_one(tmp_path, capsys):
    from nrecur.jobs.worker import main as worker

    errors = {}
    for cap in ("--cap=nope=3", "--cap=mlp=1", "--cap=n_sequences=0", "--cap=n_sequences=x"):
        with pytest.raises(SystemExit) as raised:
            worker([str(tmp_path), "--no-train", "--analyze", cap])
        assert raised.value.code == 2
        errors[cap] = capsys.readouterr().err.splitlines()[-1]  # argparse's usage, then the one line of the error
    assert "argument --cap: 'nope' is not an integer analysis option; options: " in errors["--cap=nope=3"]
    assert "mlp_steps, " in errors["--cap=nope=3"] and "n_sequences" in errors["--cap=nope=3"]  # the allowed ones named
    assert "'mlp' is not an integer analysis option" in errors["--cap=mlp=1"]  # a switch, not a size
    assert "the cap must be an integer >= 1" in errors["--cap=n_sequences=0"] and "must be an integer" in errors["--cap=n_sequences=x"]


def test_a_job_worker_writes_into_its_log_appending_or_anew_and_exits_with_mains_code(tmp_path):
    """run_worker as a job starts it: forked from the server, fd 1 (and 2) onto the run's log."""
    import os

    from nrecur._processes import worker_context
    from nrecur.jobs.worker import WorkerOutput, run_worker

    context = worker_context(preload=("nrecur.jobs.worker",))
    log = tmp_path / "train.log"
    log.write_text("before\n")
    bad = [str(tmp_path), "--no-train", "--cap=nope=1"]  # argparse's error, on stderr, exit code 2
    for output, expected in ((WorkerOutput(str(log), append=True), "before\n"), (WorkerOutput(str(log), stderr=False), "")):
        process = context.Process(target=run_worker, args=(bad, output, 1, os.getpid()))
        process.start()
        process.join(timeout=60)
        assert process.exitcode == 2
        text = log.read_text()
        assert text.startswith(expected)
        assert ("is not an integer analysis option" in text) == output.stderr, text
