"""Real small sweeps on the local backend: the table, failures recorded, SIGKILL of the parent or a worker, resume."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from nrecur.cli import main
from nrecur.runs import load_run
from nrecur.sweep import BackendOptions, SweepDir, expand, load_sweep, run_sweep, spec_from_data
from nrecur.sweep.plots import cell_table, plot_metric
from nrecur.sweep.store import FIXED_COLUMNS

SPEC = """
name = "tiny-grid"
preset = "tiny"
seeds = 2

[base.train]
steps = 24
eval_every = 8
eval_size = 64
checkpoint_every = 8
stop_at_threshold = false
mode = "finite"
train_size = 64

[grid]
"model.d_model" = [8, 16]
"train.lr" = [0.001, 0.003]

[record]
metrics = ["eval/target_acc", "train/kl"]
"""


def write_spec(folder: Path, text: str = SPEC) -> Path:
    path = folder / "spec.toml"
    path.write_text(text)
    return path


def records(sweep: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in (sweep / "records").glob("*.json")}


@pytest.mark.slow
def test_local_sweep_table_plots_and_nothing_rerun(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)  # the tiny preset's device "auto" is the CPU
    spec_file = write_spec(tmp_path)
    out = tmp_path / "sweep"
    assert main(["sweep", str(spec_file), "--out", str(out), "--workers", "2"]) == 0
    printed = capsys.readouterr().out
    assert "8 trials (8 ok); 8 ran now" in printed
    assert "group runner auto: ensemble (on a CPU, trials of at most 6e7 multiply-adds per step" in printed  # the log says why
    frame = load_sweep(out)
    trials = expand(spec_from_data(__import__("tomllib").loads(SPEC)))
    assert list(frame["trial_id"]) == [t.trial_id for t in trials]
    expected = ["trial", "trial_id", "model.d_model", "train.lr", "seed", *FIXED_COLUMNS, "run_dir", "attempts", "eval/target_acc", "train/kl"]
    assert list(frame.columns) == expected
    assert (frame["status"] == "ok").all() and (frame["attempts"] == 1).all()
    assert set(zip(frame["model.d_model"], frame["train.lr"], frame["seed"])) == {
        (d, lr, s) for d in (8, 16) for lr in (0.001, 0.003) for s in (0, 1)
    }
    assert (frame["steps"] == 24).all()
    assert frame["n_params"].nunique() == 2 and (frame["n_params"] > 0).all()
    assert frame["final_train_ce"].notna().all()  # finite mode: the training set is evaluated
    # the table's numbers are those of the run folders
    for _, row in frame.iterrows():
        run = load_run(row["run_dir"])
        assert run.config.model.d_model == row["model.d_model"] and run.config.train.lr == row["train.lr"]
        assert run.config.train.init_seed == run.config.train.data_seed == row["seed"]
        summary = run.summary
        assert row["final_kl"] == summary["final"]["eval"]["eval/kl"]
        assert row["final_train_ce"] == summary["final"]["train"]["train/model_ce"]
        assert row["eval/target_acc"] == summary["final"]["eval"]["eval/target_acc"]
        assert same(row["steps_to_threshold"], summary["threshold_step"]) and same(row["memorization_step"], summary["memorization_step"])
    # the parquet and the CSV hold the same table
    import pandas as pd

    stored = pd.read_parquet(out / "results.parquet")
    assert list(stored["trial_id"]) == list(frame["trial_id"])
    np.testing.assert_allclose(stored["final_kl"], frame["final_kl"])
    assert len(pd.read_csv(out / "results.csv")) == 8
    # a second run reruns nothing
    before = records(out)
    assert main(["sweep", str(spec_file), "--out", str(out)]) == 0
    assert "8 of 8 trials are done already" in capsys.readouterr().out
    assert records(out) == before and len(SweepDir(out).attempts()) == 8
    # plots: median over seeds per cell, the numbers of the table
    cells = cell_table(frame, "final_kl", "model.d_model", "train.lr")
    for (_, lr, d), stats in cells.items():
        values = frame[(frame["model.d_model"] == d) & (frame["train.lr"] == lr)]["final_kl"]
        assert stats.median == pytest.approx(float(np.median(values))) and stats.n == 2
    paths = plot_metric(out, "final_kl", "model.d_model", "train.lr", facet="seed")
    assert {p.suffix for p in paths} == {".png", ".svg"} and all(p.stat().st_size > 1000 for p in paths)
    assert main(["sweep-plot", str(out), "--metric", "final_kl", "--x", "model.d_model", "--y", "model.n_heads"]) == 2
    assert "not a varied field" in capsys.readouterr().err


def same(cell, value) -> bool:
    """A table cell equals a summary value (a missing cell stands for None)."""
    import pandas as pd

    return cell is pd.NA if value is None else cell == value


@pytest.mark.slow
def test_failures_are_recorded_and_the_sweep_goes_on(tmp_path):
    spec = spec_from_data(
        {
            "preset": "tiny",
            "base": {"train": {"steps": 12, "eval_every": 6, "eval_size": 32, "grad_clip": 0.0, "warmup_steps": 0}},
            "grid": {"train.lr": [1e-3, 1e30], "init_from": [None, str(tmp_path / "no-such-run")]},
        }
    )
    result = run_sweep(spec, tmp_path / "sweep", options=BackendOptions(workers=2), report=None)
    frame = load_sweep(tmp_path / "sweep")
    assert result.status_counts == {"ok": 1, "failed": 3}
    ok = frame[frame["status"] == "ok"]
    assert list(ok["train.lr"]) == [1e-3] and ok["init_from"].isna().all()
    failed = frame[frame["status"] == "failed"].set_index(["train.lr", "init_from"], drop=False)
    nan_reason = frame[(frame["train.lr"] == 1e30) & frame["init_from"].isna()]["reason"].item()
    assert "training loss became" in nan_reason
    missing = frame[frame["init_from"].notna()]["reason"]
    assert all("cannot initialize from" in reason and "no checkpoint there" in reason for reason in missing)
    assert len(failed) == 3
    # failed trials are results: not rerun, unless asked
    again = run_sweep(spec, tmp_path / "sweep", report=None)
    assert again.ran == 0
    retried = run_sweep(spec, tmp_path / "sweep", options=BackendOptions(workers=1), retry_failed=True, report=None)
    assert retried.ran == 3 and retried.status_counts == {"ok": 1, "failed": 3}


KILLED_STEPS = 48
KILLED_SPEC = SPEC.replace("seeds = 2", "seeds = 3").replace("steps = 24", f"steps = {KILLED_STEPS}")
"""12 trials that the SIGKILL tests interrupt: evaluated and checkpointed every 8 steps."""


def _start(spec_file: Path, out: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    # one trial at a time per worker: records appear one by one, so kills land between and inside trials
    command = [sys.executable, "-m", "nrecur", "sweep", str(spec_file), "--out", str(out), "--workers", "2", "--quiet", "--group-runner", "one-by-one"]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)


def _wait(condition, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _checkpointed(out: Path, trial_id: str) -> bool:
    return any(p.name != "step_00000000.safetensors" for p in (out / "trials" / trial_id / "checkpoints").glob("step_*.safetensors"))


@pytest.mark.slow
def test_sigkill_of_the_parent_and_of_a_worker_loses_nothing_and_reruns_nothing(tmp_path, capsys):
    # trials long enough (48 steps, 7 evaluations and checkpoints) that a kill lands inside one on a fast machine too
    spec_file = write_spec(tmp_path, KILLED_SPEC)
    out = tmp_path / "sweep"
    n_trials = 12
    rng = random.Random(11)
    seen: dict[str, str] = {}
    # the parent, killed at random moments: after a random number of trials have ended, a random fraction of a trial later
    for kills, target in enumerate((1, 3, 5), start=1):
        process = _start(spec_file, out)
        _wait(lambda: len(records(out)) >= target)
        time.sleep(rng.uniform(0.0, 0.3))
        process.send_signal(signal.SIGKILL)
        process.wait()
        now = records(out)
        assert all(now[name] == text for name, text in seen.items())  # a record is never rewritten
        seen = now
    assert len(seen) < n_trials, "the kills came too late to interrupt anything"
    # a worker, killed in the middle of a trial that has written a checkpoint: it is replaced and the trial resumes
    process = _start(spec_file, out)
    known = len(SweepDir(out).attempts())
    _wait(lambda: len(SweepDir(out).attempts()) > known)
    victim = SweepDir(out).attempts()[-1]
    _wait(lambda: _checkpointed(out, victim["trial_id"]) or (out / "records" / f"{victim['trial_id']}.json").exists())
    os.kill(victim["pid"], signal.SIGKILL)
    assert process.wait(timeout=120) == 0, process.stderr.read().decode()
    kills += 1
    frame = load_sweep(out)
    assert len(frame) == n_trials and frame["trial_id"].is_unique
    assert (frame["status"] == "ok").all(), frame[["status", "reason"]]
    assert (frame["steps"] == KILLED_STEPS).all()
    assert all(records(out)[name] == text for name, text in seen.items())
    attempts = SweepDir(out).attempts()
    assert len(attempts) <= n_trials + 2 * kills  # each kill interrupts at most the 2 trials in flight
    resumed = [a for a in attempts if a["trial_id"] == victim["trial_id"]]
    assert frame.set_index("trial_id").loc[victim["trial_id"], "attempts"] == len(resumed)
    if len(resumed) > 1:  # killed before it ended (the usual case): resumed from its checkpoint, not from scratch
        assert resumed[-1]["from_step"] > 0
    # no evaluation counted twice: each run's metrics go 0, 8, …, 48 exactly once
    for row in frame.itertuples():
        steps = [json.loads(line)["step"] for line in (Path(row.run_dir) / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(0, KILLED_STEPS + 1, 8)), (row.trial_id, steps)
    # and the whole sweep, run again (in this process: nothing is killed now), starts nothing
    capsys.readouterr()
    assert main(["sweep", str(spec_file), "--out", str(out)]) == 0
    assert "0 ran now, 12 were done before" in capsys.readouterr().out
    assert SweepDir(out).attempts() == attempts


def test_the_auto_runner_trains_at_once_on_a_gpu_or_small_steps_on_a_cpu(monkeypatch):
    from nrecur.sweep.groups import CPU_ENSEMBLE_MAX_WORK, resolve_runner, step_work

    def trials(*devices, preset="quick-adamw"):
        lrs = [1e-3 * (i + 1) for i in range(len(devices))]
        return expand(spec_from_data({"preset": preset, "zip": [{"train.device": list(devices), "train.lr": lrs}]}))

    assert step_work(trials("cpu")[0]) > CPU_ENSEMBLE_MAX_WORK >= step_work(trials("cpu", preset="tiny")[0])
    assert resolve_runner("auto", trials("cpu", "cpu"))[0] == "one-by-one"
    assert resolve_runner("auto", trials("cpu", "cpu", preset="tiny"))[0] == "ensemble"
    assert resolve_runner("auto", trials("cuda", "cuda"))[0] == "ensemble"
    assert resolve_runner("auto", trials("cuda", "cuda", "cpu", "cpu"))[0] == "one-by-one"  # not all on a GPU, large steps
    assert resolve_runner("auto", []) == ("one-by-one", "")
    assert resolve_runner("ensemble", trials("cpu")) == ("ensemble", "")  # a runner asked for by name is kept
    muon = expand(spec_from_data({"preset": "tiny", "base": {"train": {"optimizer": "muon"}}, "seeds": 3}))
    chosen, why = resolve_runner("auto", muon)  # Muon trials never train together
    assert chosen == "one-by-one" and "no two trials can train at once" in why
    assert resolve_runner("auto", trials("cuda"))[0] == "one-by-one"  # one trial: nothing to group
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    chosen, why = resolve_runner("auto", trials("auto", "auto"))
    assert chosen == "ensemble" and "10× a one-by-one loop" in why
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_runner("auto", trials("auto", "auto"))[0] == "one-by-one"


def test_groups_with_the_most_work_go_first():
    from nrecur.sweep.groups import group_trials, longest_first, training_work

    spec = {"preset": "tiny", "zip": [{"model.d_model": [16, 64, 32], "train.steps": [100, 100, 300]}]}
    groups = group_trials(expand(spec_from_data(spec)))
    ordered = longest_first(groups)
    work = [sum(training_work(t) for t in group.trials) for group in ordered]
    assert work == sorted(work, reverse=True) and [g.trials[0].config.model.d_model for g in ordered] == [32, 64, 16]


@pytest.mark.slow
def test_ensemble_group_runner_gives_the_one_by_one_table(tmp_path, capsys):
    spec = spec_from_data(
        {
            "preset": "tiny",
            "seeds": 2,
            "base": {"train": {"steps": 20, "eval_every": 10, "eval_size": 64, "stop_at_threshold": False}},
            "grid": {"train.lr": [1e-3, 3e-3], "train.weight_decay": [0.0, 1.0]},
        }
    )
    result = run_sweep(spec, tmp_path / "ensemble", options=BackendOptions(workers=1, runner="ensemble"))
    assert "8 trials in 1 groups of the same shape (8)" in capsys.readouterr().out
    assert result.status_counts == {"ok": 8}
    run_sweep(spec, tmp_path / "alone", options=BackendOptions(workers=1), report=None)
    together, alone = load_sweep(tmp_path / "ensemble"), load_sweep(tmp_path / "alone")
    assert list(together["trial_id"]) == list(alone["trial_id"])
    assert (together["steps"] == 20).all() and (together["attempts"] == 1).all()
    np.testing.assert_allclose(together["final_kl"], alone["final_kl"], rtol=1e-5)
    np.testing.assert_allclose(together["final_train_loss"], alone["final_train_loss"], rtol=1e-5)


def test_groups_are_halved_to_keep_every_cpu_worker_busy(monkeypatch):
    spec = {"preset": "tiny", "seeds": 10}
    trials = expand(spec_from_data(spec))
    from nrecur.sweep.groups import group_trials

    assert [len(g.trials) for g in group_trials(trials, by_shape=True)] == [10]
    assert [len(g.trials) for g in group_trials(trials, by_shape=True, workers=2)] == [5, 5]
    assert [len(g.trials) for g in group_trials(trials, by_shape=True, workers=4)] == [2, 3, 2, 3]  # 5 halved twice
    assert sorted(len(g.trials) for g in group_trials(trials[:3], by_shape=True, workers=2)) == [3]  # too small to halve
    halves = group_trials(trials, by_shape=True, workers=3)
    assert sorted(t.trial_id for g in halves for t in g.trials) == sorted(t.trial_id for t in trials)
    # the plan halves for CPU trials on the local backend only: a GPU keeps its 16-model ensembles
    from nrecur.sweep import BackendOptions, plan_groups

    cpu = expand(spec_from_data({**spec, "base": {"train": {"device": "cpu"}}}))
    assert [len(g.trials) for g in plan_groups(cpu, "local", BackendOptions(workers=2, runner="ensemble")).groups] == [5, 5]
    gpu = expand(spec_from_data({**spec, "base": {"train": {"device": "cuda"}}}))
    assert [len(g.trials) for g in plan_groups(gpu, "local", BackendOptions(workers=2, runner="ensemble")).groups] == [10]


@pytest.mark.slow
def test_sigkill_of_an_ensemble_sweep_loses_nothing(tmp_path, capsys):
    """The ensemble runner, killed while its groups train: the rerun resumes the members alone and ends every trial once."""
    spec_file = write_spec(tmp_path, KILLED_SPEC)
    out = tmp_path / "sweep"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    command = [sys.executable, "-m", "nrecur", "sweep", str(spec_file), "--out", str(out), "--workers", "2", "--quiet", "--group-runner", "ensemble"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _wait(lambda: (out / "trials").is_dir() and any(_checkpointed(out, p.name) for p in (out / "trials").iterdir()))
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = records(out)
    assert len(before) < 12, "the kill came too late to interrupt anything"
    capsys.readouterr()
    assert main(command[3:]) == 0, capsys.readouterr().err  # the same command again, in this process
    frame = load_sweep(out)
    assert len(frame) == 12 and frame["trial_id"].is_unique
    assert (frame["status"] == "ok").all(), frame[["status", "reason"]]
    assert (frame["steps"] == KILLED_STEPS).all()
    assert all(records(out)[name] == text for name, text in before.items())  # a record is never rewritten
    for row in frame.itertuples():  # each evaluation once: a resumed member continues its own metrics
        steps = [json.loads(line)["step"] for line in (Path(row.run_dir) / "metrics.jsonl").read_text().splitlines()]
        assert steps == list(range(0, KILLED_STEPS + 1, 8)), (row.trial_id, steps)


@pytest.mark.slow
def test_a_sweep_ends_without_the_resource_trackers_leaked_semaphore_warning(tmp_path):
    """A worker leaves with multiprocessing's finalizers run: numba's pool makes a semaphore in each worker, which
    an exit without them left to the resource tracker, whose warning ended every sweep."""
    spec_file = write_spec(tmp_path, SPEC.replace("seeds = 2", "seeds = 1").replace('"train.lr" = [0.001, 0.003]', '"train.lr" = [0.001]'))
    command = [sys.executable, "-m", "nrecur", "sweep", str(spec_file), "--out", str(tmp_path / "sweep"), "--workers", "2", "--quiet"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "leaked semaphore" not in done.stderr, done.stderr
