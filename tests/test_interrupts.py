"""Ctrl-C (SIGINT) and SIGTERM, sent for real to ``nrecur`` processes: training writes a checkpoint of the step
it reached and the command printed continues it to the weights of an uninterrupted run; the analyses computed
are written whole and the command printed runs the rest; a sweep ends its workers the same way and the same
command finishes it.
"""

from __future__ import annotations

import os
import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pytest

from nrecur.train.checkpoint import checkpoint_step, load_checkpoint
from nrecur.train.folder import RunFolder
from test_train_resume import assert_bitwise_equal, metrics_without_time

NRECUR = [sys.executable, "-m", "nrecur"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}


def as_at_a_terminal() -> None:
    """In the child before it starts: SIGINT's default disposition, as for a command typed at a terminal (a suite
    started from a script's background job would pass SIGINT on ignored, POSIX, and the Ctrl-C never arrive)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
OPTIONS = [
    "--vocab-size", "8", "--n-ctx", "12", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-head", "8",
    "--d-mlp", "32", "--steps", "400", "--batch-size", "16", "--eval-every", "5", "--eval-size", "32",
    "--checkpoint-every", "1000", "--grokfast-lambda", "1.0", "--device", "cpu", "--no-progress",
]  # fmt: skip


def wait_for(condition, timeout: float = 120.0, process: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        assert process is None or process.poll() is None, "the process ended before the signal could be sent"
        time.sleep(0.02)


def steps_logged(run: Path) -> list[int]:
    """Steps of the evaluations in ``metrics.jsonl`` (a torn last line left out)."""
    return [line["step"] for line in RunFolder(run).read_metrics()]


def continue_command(stderr: str) -> list[str]:
    """The printed ``continue it: nrecur …`` line, as an argument list for this interpreter."""
    line = next(line for line in stderr.splitlines() if line.startswith("continue it: "))
    words = shlex.split(line.removeprefix("continue it: "))
    assert words[0] == "nrecur", line
    return [*NRECUR, *words[1:]]


class Ran(NamedTuple):
    code: int
    out: str
    err: str


def run_here(command: list[str], capsys) -> Ran:
    """``command`` (``python -m nrecur …``) run by :func:`nrecur.cli.main` in this process: the same arguments, without
    starting and importing a second interpreter for a command that is not interrupted."""
    from nrecur.cli import main

    assert command[: len(NRECUR)] == NRECUR, command
    capsys.readouterr()
    code = main(command[len(NRECUR) :])
    out, err = capsys.readouterr()
    return Ran(code, out, err)


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The same run, never interrupted."""
    run = tmp_path_factory.mktemp("whole") / "run"
    done = subprocess.run([*NRECUR, "train", "--out", str(run), *OPTIONS], env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return run


@pytest.mark.slow
@pytest.mark.parametrize("signal_number", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_at_a_random_moment_of_training_then_the_printed_command_ends_as_an_uninterrupted_run(whole, tmp_path, signal_number):
    run = tmp_path / "run"
    process = subprocess.Popen([*NRECUR, "train", "--out", str(run), *OPTIONS], env=ENV, preexec_fn=as_at_a_terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: len(steps_logged(run)) >= 2, process=process)  # training has started: step 5 is evaluated
    delay = random.uniform(0.0, 1.0)
    time.sleep(delay)
    reached = steps_logged(run)[-1]  # the step training had reached at least when the signal came
    process.send_signal(signal_number)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 128 + signal_number, (delay, err)
    assert f"nrecur train: interrupted ({signal.Signals(signal_number).name}); training stopped after step" in err, err
    checkpoints = RunFolder(run).checkpoints()
    assert len(checkpoints) == 1, checkpoints  # the checkpoint of the interrupt (checkpoint_every is 1,000)
    step = checkpoints[0][0]
    assert reached <= step < 400, (delay, reached, step)  # no older than the interrupt
    assert f"checkpoint {checkpoints[0][1]}" in err
    command = continue_command(err)
    assert command[-2:] == ["--resume", str(run)]
    again = subprocess.run(command, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    final = RunFolder(run).latest_checkpoint()
    assert checkpoint_step(final) == 400
    assert_bitwise_equal(load_checkpoint(RunFolder(whole).latest_checkpoint()).model, load_checkpoint(final).model)
    assert metrics_without_time(whole) == metrics_without_time(run)


@pytest.mark.slow
def test_ctrl_c_during_analyses_writes_those_computed_and_prints_the_command_for_the_rest(whole, tmp_path):
    run = tmp_path / "run"
    subprocess.run(["cp", "-r", str(whole), str(run)], check=True)
    # MLP probes of a few steps: the test is of the interrupt, not of what they read
    command = [*NRECUR, "analyze", str(run), "--what", "probes", "geometry", "--sequences", "64", "--set", "probes.mlp_steps=20", "--set", "probes.mlp_rows=256"]
    process = subprocess.Popen(command, env=ENV, preexec_fn=as_at_a_terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stdout:  # the driver names each analysis as it starts it
        lines.append(line)
        if line.startswith("geometry: computing (2 of 2)"):
            process.send_signal(signal.SIGINT)
            break
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, "".join(lines) + out + err
    assert "nrecur analyze: interrupted (SIGINT); wrote probes" in err, err
    assert (run / "analysis" / "probes.json").is_file() and not (run / "analysis" / "geometry.json").exists()
    rest = continue_command(err)
    assert rest == [*NRECUR, "analyze", str(run), "--sequences", "64", "--what", "geometry"]  # the probes' options left out
    assert subprocess.run(rest, env=ENV, capture_output=True, text=True).returncode == 0
    assert (run / "analysis" / "geometry.json").is_file()


SPEC = """
name = "interrupted"
preset = "tiny"
seeds = 1

[base.train]
steps = 1000
eval_every = 10
eval_size = 32
checkpoint_every = 100000
stop_at_threshold = false
device = "cpu"

[grid]
"model.d_model" = [8, 16]
"""


@pytest.mark.slow
def test_ctrl_c_of_a_sweep_checkpoints_its_trials_and_the_same_command_finishes_it(tmp_path, capsys):
    spec = tmp_path / "spec.toml"
    spec.write_text(SPEC)
    out = tmp_path / "sweep"
    command = [*NRECUR, "sweep", str(spec), "--out", str(out), "--workers", "1", "--group-runner", "one-by-one", "--quiet"]
    process = subprocess.Popen(command, env=ENV, preexec_fn=as_at_a_terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trials = lambda: [p for p in (out / "trials").iterdir()] if (out / "trials").is_dir() else []  # noqa: E731
    wait_for(lambda: any(len(steps_logged(t)) >= 3 for t in trials()), process=process)
    process.send_signal(signal.SIGINT)  # the parent alone: it ends its workers with SIGTERM
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert continue_command(err) == command
    (trial,) = [t for t in trials() if RunFolder(t).checkpoints()[-1:] and RunFolder(t).checkpoints()[-1][0] > 0]
    assert RunFolder(trial).checkpoints()[-1][0] >= steps_logged(trial)[-1] > 0  # the step the worker had reached
    done = run_here(continue_command(err), capsys)
    assert done.code == 0, done.err
    assert "2 trials (2 ok)" in done.out


@pytest.mark.slow
def test_ctrl_c_of_the_main_job_checkpoints_its_runs_and_the_same_command_finishes_it(tmp_path, capsys):
    """Ctrl-C at a terminal reaches the whole process group: the job and its workers."""
    out = tmp_path / "runs"
    command = [*NRECUR, "run", "--preset", "tiny", "--out", str(out), "--no-analyze", "--no-progress"]
    process = subprocess.Popen(command, env=ENV, preexec_fn=as_at_a_terminal, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    det = out / "tiny-det"
    wait_for(lambda: len(steps_logged(det)) >= 2, process=process)
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert "nrecur run: interrupted (SIGINT)" in err and continue_command(err) == command
    (step, _), = RunFolder(det).checkpoints()[-1:]
    assert step >= steps_logged(det)[-1] > 0  # the step the worker had reached, saved
    done = run_here(continue_command(err), capsys)
    assert done.code == 0, done.err
    assert all(RunFolder(out / f"tiny-{kind}").is_finished() for kind in ("det", "stoch-scratch", "stoch-finetune", "mess3"))


@pytest.mark.slow
def test_a_signal_right_after_an_analysis_is_announced_still_writes_what_was_computed(analyzed_runs, tmp_path):
    """The announcement of the next analysis is inside the guard: a Ctrl-C there (a reader acting on the line)
    writes the results computed before it and names the rest, instead of losing them."""
    import shutil

    from nrecur.analysis.driver import AnalysisInterrupted, analyze
    from nrecur.runs import load_run

    run = tmp_path / "run"
    shutil.copytree(analyzed_runs / "tiny", run)
    shutil.rmtree(run / "analysis")

    def log(line: str) -> None:
        if line.startswith("heads: computing"):
            raise KeyboardInterrupt

    try:
        analyze(load_run(run), ["geometry", "heads"], {"n_sequences": 32}, progress=True, log=log)
    except KeyboardInterrupt as error:  # caught here: a bare one would end the test session
        interrupted = error
    else:
        interrupted = None
    assert isinstance(interrupted, AnalysisInterrupted), interrupted
    assert interrupted.written == ["geometry"] and interrupted.remaining == ["heads"]
    assert (run / "analysis" / "geometry.json").is_file() and not (run / "analysis" / "heads.json").exists()
