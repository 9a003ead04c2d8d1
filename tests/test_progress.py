"""What a run tells while it works, where the output is not a terminal: plain lines through the ``nrecur`` logger
(no control codes), the time budget named at the start and in the summary, why it stopped and how to continue,
and the main job's queued runs shown waiting until they start."""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import pytest

import nrecur._log as nrecur_log
from nrecur.model import GPTConfig
from nrecur.tasks import NRecurrence
from nrecur.train import RunConfig, TrainConfig, train
from nrecur.train.folder import RunFolder

MODEL = GPTConfig(vocab_size=8, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
CONTROL = ("\r", "\x1b")


def config(**train) -> RunConfig:
    settings = {"steps": 40, "batch_size": 8, "eval_every": 10, "eval_size": 32, "device": "cpu", **train}
    return RunConfig(task=NRecurrence(periods=(2, 3)), model=MODEL, train=TrainConfig(**settings))


@pytest.fixture
def every_step(monkeypatch):
    """Plain lines at every step instead of every 15 s."""
    monkeypatch.setattr(nrecur_log.Ticker, "due", lambda self: True)


def messages(caplog) -> list[str]:
    return [record.getMessage() for record in caplog.records if record.name == "nrecur"]


TRAIN = (
    "import sys\nfrom nrecur.model import GPTConfig\nfrom nrecur.tasks import NRecurrence\n"
    "from nrecur.train import RunConfig, TrainConfig, train\n"
    "model = GPTConfig(vocab_size=8, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)\n"
    "settings = TrainConfig(steps={steps}, batch_size=8, eval_every=5, eval_size=32, device='cpu')\n"
    "train(RunConfig(task=NRecurrence(periods=(2, 3)), model=model, train=settings), sys.argv[1])\n"
)


def test_train_from_python_into_a_file_prints_plain_lines_and_how_it_ended(tmp_path):
    """A script whose stderr goes to a file, as a user would run it: lines, no control codes, the end."""
    code = "import nrecur._log\nnrecur._log.Ticker.due = lambda self: True\n" + TRAIN.format(steps=40)
    run = tmp_path / "run"
    with open(tmp_path / "err.txt", "w") as err:
        done = subprocess.run([sys.executable, "-c", code, str(run)], stderr=err, timeout=300)
    text = (tmp_path / "err.txt").read_text()
    assert done.returncode == 0, text
    assert not any(code in text for code in CONTROL), repr(text[:300])
    lines = text.splitlines()
    assert lines[0] == "run: training to step 40"
    assert lines[20].startswith("run: step 20/40 (50 %), loss ") and " KL " in lines[20]
    assert lines[-1].startswith("run: ran all its steps at step 40 of 40")
    assert lines[-1].endswith(f"continue it: nrecur train --resume {run} --steps N (N > 40)")  # short of its threshold


def test_a_time_budget_is_named_at_the_start_at_the_stop_and_in_the_summary(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nrecur")
    result = train(config(steps=100_000, time_budget=0.5), tmp_path / "run")
    assert result.stop_reason == "time budget"
    lines = messages(caplog)
    assert lines[0] == "run: training to step 100,000; stops at a time budget of 0.5 s of training (train.time_budget; 0: none)"
    assert lines[-1].startswith("run: stopped at its time budget of 0.5 s at step")
    assert f"continue it: nrecur train --resume {tmp_path / 'run'} --time-budget S (S > {result.seconds:.0f}, or 0 for no limit)" in lines[-1]
    assert RunFolder(tmp_path / "run").read_summary()["time_budget"] == 0.5


def test_the_logger_level_silences_it_and_progress_false_draws_nothing(tmp_path, caplog, every_step):
    log = logging.getLogger("nrecur")
    train(config(steps=10), tmp_path / "loud")
    assert len(messages(caplog)) == 12  # start, 10 steps, end
    caplog.clear()
    level = log.level
    try:
        log.setLevel(logging.WARNING)
        train(config(steps=10), tmp_path / "quiet")
    finally:
        log.setLevel(level)
    train(config(steps=10), tmp_path / "off", progress=False)
    assert messages(caplog) == []


def test_an_application_with_its_own_logging_gets_the_lines_once(tmp_path):
    code = "import logging, sys\nlogging.basicConfig(stream=sys.stdout, format='app: %(name)s %(message)s')\n" + TRAIN.format(steps=10)
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "app: nrecur run: training to step 10"
    assert done.stdout.count("run: ran all its steps") == 1 and "ran all its steps" not in done.stderr


def test_compute_from_python_says_what_it_computes_its_progress_and_when_it_is_done(tmp_path, caplog, every_step):
    from nrecur.analysis import compute
    from nrecur.runs import load_run

    train(config(steps=10), tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    compute(run, "probes", n_sequences=16, mlp_steps=2, mlp_rows=64)
    lines = messages(caplog)
    assert lines[0] == f"probes: computing on {run.path} at step 10"
    assert any(line.startswith("probes: activations") for line in lines[1:-1])  # the analysis's own progress
    assert lines[-1].startswith("probes: done in ") and lines[-1].endswith(" s")
    assert not any(code in json.dumps(lines) for code in CONTROL)
    caplog.clear()
    compute(run, "probes", progress=False, n_sequences=16, mlp_steps=2, mlp_rows=64)
    assert messages(caplog) == []


def test_the_main_job_shows_queued_runs_waiting_until_they_start(tmp_path, caplog, every_step):
    from nrecur.jobs.main import JobsProgress, WorkerJob

    folders = []
    for name in ("first", "second"):
        folder = RunFolder(tmp_path / name)
        folder.write_config(config())
        folders.append(folder)
    jobs = [WorkerJob(folders[0], analyze=True), WorkerJob(folders[1])]
    shown = JobsProgress(jobs)
    shown.started(jobs[0])
    folders[0].append_metrics({"step": 10, "seconds": 1.0, "eval/kl": 0.5, "train/loss": 1.0})
    shown.update()
    shown.update()  # nothing new since: no second line
    shown.ended(jobs[0], 0)
    shown.started(jobs[1])
    shown.ended(jobs[1], 3)
    lines = messages(caplog)
    assert lines[0] == "first: training"
    assert lines[1] == "first step 10/40 (25 %), KL 0.5000; waiting: second"
    assert lines[2].startswith("first: done in ") and lines[3] == "second: training"
    assert lines[4].startswith(f"second: failed (exit code 3; see {folders[1].train_log}) in ")
    assert not any(code in json.dumps(lines) for code in CONTROL)


def test_the_main_job_says_once_which_analysis_each_analyzing_job_computes(tmp_path, caplog):
    from nrecur.jobs.main import JobsProgress, WorkerJob

    folder = RunFolder(tmp_path / "run")
    folder.write_config(config())
    folder.train_log.write_text("analysis: old: computing (9 of 9)\n")  # an earlier job's line in the log it appends to
    job = WorkerJob(folder, train=False, analyze=True)
    shown = JobsProgress([job])
    shown.started(job)
    shown.update()
    for line in ["analysis: probes: computing (1 of 2)", "probes: 50 %", "analysis: probes (step 40, 1.0 s): r2 0.5", "analysis: writing the report"]:
        with folder.train_log.open("a") as file:
            file.write(line + "\n")
        shown.update()
        shown.update()
    shown.ended(job, 0)
    lines = messages(caplog)
    assert lines[:3] == ["run analyses: analyzing", "run analyses: analyzing probes (1 of 2)", "run analyses: analyzing the report"]
    assert lines[3].startswith("run analyses: done in ") and len(lines) == 4


def test_the_main_job_says_which_runs_stopped_short_and_how_to_continue_them():
    from types import SimpleNamespace

    from nrecur.cli.train import stopped_short

    row = dict(kl_threshold=0.01, seconds=240.2, threshold_step=None)
    rows = [
        SimpleNamespace(name="quick-det", path="runs/quick-det", stop_reason="time budget", steps=1820, **row),
        SimpleNamespace(name="quick-mess3", path="runs/quick-mess3", stop_reason="threshold", steps=900, **{**row, "threshold_step": 900}),
        SimpleNamespace(name="tiny-det", path="runs/tiny det", stop_reason="steps", steps=40, **row),
    ]
    assert stopped_short(rows) == [
        "quick-det stopped at its time budget (1820 steps) before KL reached 0.01; "
        "continue it: nrecur train --resume runs/quick-det --time-budget S (S > 240, or 0 for no limit)",
        "tiny-det ran all its steps (40 steps) before KL reached 0.01; continue it: nrecur train --resume 'runs/tiny det' --steps N (N > 40)",
    ]
