"""One writer per folder (``nrecur._lock``), tried with real processes.

The lock itself: a second writer is refused at once naming the holder's pid, a
killed holder's lock never blocks, the lock is re-entrant within a process (a
sweep's ensemble runner that falls back to one-by-one while it holds its trials'
locks used to wait on itself forever). Then the commands, two at a time on one
folder, as a user starts them: two trainings, two resumes, two main jobs, two
sweeps (started together and 4 s apart, with both group runners). In every case
exactly one process writes, the other is refused with one line and exit 2 (or
finds the work done), nothing hangs (every wait is bounded), and every metrics
line, attempt and trial is there once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from nrecur._lock import LOCK_NAME, FolderBusyError, folder_lock
from nrecur.cli import main
from nrecur.runs import load_run
from nrecur.sweep import SweepDir, load_sweep
from nrecur.train.folder import RunFolder

NRECUR = [sys.executable, "-m", "nrecur"]
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
TINY = [
    "--vocab-size", "6", "--periods", "2", "3", "--n-ctx", "10", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--d-head", "8", "--d-mlp", "32", "--batch-size", "8", "--eval-every", "10",
    "--eval-size", "32", "--checkpoint-every", "10", "--device", "cpu", "--no-progress",
]  # fmt: skip
BUSY = "is in use by"


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen([*NRECUR, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)


def finish(process: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    """Wait (bounded: a hang fails the test) and return the exit code, stdout and stderr."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
        pytest.fail(f"{process.args} did not end in {timeout} s: {err[-2000:]}")
    return process.returncode, out, err


def hold_in_child(folder: Path, doing: str = "a test holder") -> subprocess.Popen:
    """A process that takes ``folder``'s lock, says so on stdout, and keeps it until killed."""
    code = textwrap.dedent(
        f"""
        import sys, time
        from nrecur._lock import folder_lock
        with folder_lock({str(folder)!r}, doing={doing!r}):
            print("held", flush=True)
            time.sleep(600)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert process.stdout.readline().strip() == "held"
    return process


def said(results: list[tuple[int, str, str]]) -> str:
    """Exit codes and output of processes, whole, for a failure's message."""
    return "\n".join(f"--- exit {code}\nstdout:\n{out}\nstderr:\n{err}" for code, out, err in results)


def metric_steps(run: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- the lock


def test_a_second_writer_is_refused_at_once_naming_the_holder(tmp_path):
    folder = tmp_path / "run"
    holder = hold_in_child(folder)
    try:
        began = time.perf_counter()
        with pytest.raises(FolderBusyError) as refused:
            with folder_lock(folder, doing="a training", refused="wait for it to end"):
                pytest.fail("the lock was taken twice")
        assert time.perf_counter() - began < 1.0
        assert str(refused.value) == f"{folder} is in use by a test holder (pid {holder.pid}); wait for it to end"
    finally:
        holder.kill()
        holder.wait()


def test_the_lock_of_a_killed_process_never_blocks(tmp_path):
    folder = tmp_path / "run"
    holder = hold_in_child(folder)
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    assert (folder / LOCK_NAME).exists()  # a kill leaves the file; the kernel has dropped the lock
    with folder_lock(folder, doing="a training"):
        assert (folder / LOCK_NAME).read_text().split()[0] == str(os.getpid())
    assert not (folder / LOCK_NAME).exists()


def test_a_folder_made_for_the_lock_goes_again_when_nothing_was_written(tmp_path):
    with folder_lock(tmp_path / "a" / "b", doing="a training"):
        assert (tmp_path / "a" / "b" / LOCK_NAME).is_file()
    assert list(tmp_path.iterdir()) == []
    with folder_lock(tmp_path / "a" / "b", doing="a training"):
        (tmp_path / "a" / "b" / "config.json").write_text("{}")
    assert sorted(p.name for p in (tmp_path / "a" / "b").iterdir()) == ["config.json"]


REENTRANT = """
import sys
from nrecur.sweep import SweepDir
sweep = SweepDir(sys.argv[1])
with sweep.lock("abc"):
    with sweep.lock("abc"):  # the same process again: a second open file description would wait on the first
        print("inner", flush=True)
print("done", flush=True)
"""


def test_the_trial_lock_is_reentrant_within_a_process(tmp_path):
    result = subprocess.run([sys.executable, "-c", REENTRANT, str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=60)
    assert result.returncode == 0 and result.stdout.split() == ["inner", "done"], result.stderr


GOT_THERE_FIRST = """
import sys
from nrecur.sweep import SweepDir, expand, spec_from_data
from nrecur.sweep.groups import TrialGroup, run_as_ensemble
from nrecur.sweep.store import TrialRecord

sweep = SweepDir(sys.argv[1])
trials = expand(spec_from_data({"preset": "tiny", "seeds": 2}))
# Another process ends both trials between this runner's look and its locks: their records exist, but the
# first look (one read per trial) saw none.
for trial in trials:
    sweep.write_record(TrialRecord(trial_id=trial.trial_id, status="ok", steps=7))
looks = [0]
real = SweepDir.read_record
def first_look_sees_nothing(self, trial_id):
    looks[0] += 1
    return None if looks[0] <= len(trials) else real(self, trial_id)
SweepDir.read_record = first_look_sees_nothing
records = run_as_ensemble(TrialGroup(tuple(trials)), sweep)
print(" ".join(f"{r.status}:{r.steps}" for r in records), flush=True)
"""


def test_an_ensemble_that_finds_its_trials_taken_falls_back_without_waiting_on_itself(tmp_path):
    """The fallback to one by one runs after the trials' locks are let go (and a lock held is re-entrant): a second
    open file description of a lock this process holds would wait on the first forever."""
    result = subprocess.run([sys.executable, "-c", GOT_THERE_FIRST, str(tmp_path)], capture_output=True, text=True, env=ENV, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["ok:7", "ok:7"]  # the other process's records, nothing trained again
    assert not (tmp_path / "trials").exists() and SweepDir(tmp_path).attempts() == []


# ---------------------------------------------------------------------------- two commands on one folder


def one_refused(results: list[tuple[int, str, str]], pids: list[int], doing: str) -> int:
    """Of two processes, the index of the one that ran; the other exited 2 with one line naming the first's pid."""
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 2], said(results)
    winner = codes.index(0)
    line = results[1 - winner][2].strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in line, line
    assert f"{BUSY} {doing} (pid {pids[winner]})" in line, line
    return winner


@pytest.mark.slow
def test_two_trainings_into_one_folder_one_writes_the_other_is_refused(tmp_path):
    run = tmp_path / "run"
    processes = [start("train", "--out", run, *TINY, "--steps", "120", "--init-seed", str(seed)) for seed in (0, 7)]
    results = [finish(p) for p in processes]
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 2], said(results)
    winner = codes.index(0)
    line = results[1 - winner][2].strip()
    # Refused while the first trains, or (on a machine fast enough to end it first) because the run is there.
    assert f"{BUSY} a training (pid {processes[winner].pid})" in line or "already holds a run" in line, line
    seed = (0, 7)[winner]
    loaded = load_run(run)
    assert loaded.config.train.init_seed == seed and loaded.summary["status"] == "finished" and loaded.step == 120
    assert metric_steps(run) == list(range(0, 121, 10))  # every evaluation once, one run's
    assert not (run / LOCK_NAME).exists()


@pytest.mark.slow
def test_two_resumes_of_one_run_one_writes(tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--steps", "20"]) == 0
    processes = [start("train", "--resume", run, "--steps", "150", "--no-progress") for _ in range(2)]
    results = [finish(p) for p in processes]
    codes = [code for code, _, _ in results]
    assert sorted(codes) == [0, 2], said(results)
    winner = codes.index(0)
    line = results[1 - winner][2].strip()
    assert f"{BUSY} a training (pid {processes[winner].pid})" in line or "already finished at step 150" in line, line
    assert metric_steps(run) == list(range(0, 151, 10))
    assert load_run(run).step == 150 and RunFolder(run).is_finished()


@pytest.mark.slow
def test_two_main_jobs_in_one_folder_one_writes(tmp_path, capsys):
    out = tmp_path / "runs"
    args = ("run", "--preset", "tiny", "--out", out, "--no-analyze", "--no-progress", "--jobs", "1")
    first = start(*args)
    deadline = time.monotonic() + 120
    while not (out / LOCK_NAME).exists():  # the first holds the folder
        assert time.monotonic() < deadline and first.poll() is None, first.stderr.read() if first.poll() is not None else "timed out"
        time.sleep(0.05)
    began = time.perf_counter()
    capsys.readouterr()
    code = main(list(map(str, args)))  # the second job: this process, another than the first's
    err = capsys.readouterr().err
    assert code == 2 and err.strip() == (
        f"nrecur run: error: {out} {BUSY} a main job (nrecur run) (pid {first.pid}); wait for it to end, or give another --out"
    )
    assert time.perf_counter() - began < 60  # at once: refused before any training
    code, printed, err = finish(first, timeout=600)
    assert code == 0, err
    for kind in ("det", "stoch-scratch", "stoch-finetune", "mess3"):
        steps = metric_steps(out / f"tiny-{kind}")
        assert steps == sorted(set(steps)) and steps[0] == 0, (kind, steps)  # each evaluation once, in order
    assert not list(out.rglob(LOCK_NAME))


SWEEP_CASES = [(runner, gap) for runner in ("one-by-one", "ensemble") for gap in (0.0, 4.0)]


@pytest.mark.slow
@pytest.mark.parametrize("runner, gap", SWEEP_CASES, ids=[f"{r}-{g:g}s" for r, g in SWEEP_CASES])
def test_two_sweeps_over_one_folder_one_writes_every_trial_once(tmp_path, runner, gap):
    spec = Path(__file__).parents[1] / "examples" / "sweeps" / "tiny.toml"
    out = tmp_path / "sweep"
    args = ("sweep", spec, "--out", out, "--workers", "1", "--group-runner", runner)
    processes = [start(*args)]
    time.sleep(gap)
    processes.append(start(*args))
    results = [finish(p) for p in processes]
    codes = [code for code, _, _ in results]
    if gap and codes == [0, 0]:  # the first had ended before the second began: the second found it all done
        assert "0 ran now, 8 were done before" in results[1][1]
        winner = 0
    else:
        winner = one_refused(results, [p.pid for p in processes], "a sweep")
        assert results[1 - winner][1] == ""  # the refused one ran nothing and said nothing else
    assert "8 trials (8 ok); 8 ran now, 0 were done before" in results[winner][1]
    frame = load_sweep(out)
    assert len(frame) == 8 and frame["trial_id"].is_unique and (frame["status"] == "ok").all()
    assert (frame["attempts"] == 1).all()  # every trial started once, by one process
    attempts = SweepDir(out).attempts()
    assert sorted(a["trial_id"] for a in attempts) == sorted(frame["trial_id"])
    for row in frame.itertuples():
        assert metric_steps(Path(row.run_dir)) == [0, 20, 40, 60], row.trial_id  # no line twice, none mixed
    assert not list(out.rglob(LOCK_NAME))
