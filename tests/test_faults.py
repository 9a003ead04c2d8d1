"""The second round of fault and bad-input cases, each as a user meets it.

Integers beyond what a results table and the trainer hold, refused at
validation; a checkpoint replaced while it is read; temporaries a killed writer
left, removed by the next writer of the folder but never a live writer's; a
backend that is not installed, refused before anything is written; a run too big
for memory on the evaluation pass, refused before anything is allocated; a full
disk while appending metrics, named; the plan of a huge sweep, summarized; an
ensemble that fails, said in the trial's record and the sweep's log.
"""

from __future__ import annotations

import errno
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nrecur._io
from nrecur._io import is_stale_temporary, remove_stale_temporaries
from nrecur.cli import main
from nrecur.runs import load_run
from nrecur.sweep import BACKENDS, GROUP_RUNNERS, BackendOptions, SweepDir, TrialGroup, expand, run_sweep, spec_from_data
from nrecur.sweep.groups import run_as_ensemble
from nrecur.sweep.runner import Plan
from nrecur.train import memory as train_memory
from nrecur.train.checkpoint import CheckpointError, load_model_tensors
from nrecur.train.folder import RunFolder

TINY = [
    "--vocab-size", "6", "--periods", "2", "3", "--n-ctx", "10", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--d-head", "8", "--d-mlp", "32", "--batch-size", "8", "--eval-every", "10",
    "--eval-size", "32", "--checkpoint-every", "10", "--device", "cpu", "--no-progress",
]  # fmt: skip
checkpoint_module = importlib.import_module("nrecur.train.checkpoint")  # nrecur.train.checkpoint is also a function's name
loop_module = importlib.import_module("nrecur.train.loop")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}


def one_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished tiny run: checkpoints at steps 0, 1, 4 (log-spaced) and 20."""
    folder = tmp_path_factory.mktemp("faults") / "det"
    assert main(["train", "--out", str(folder), *TINY, "--steps", "20", "--log-checkpoints", "3"]) == 0
    return folder


@pytest.fixture
def run(source, tmp_path) -> Path:
    return Path(shutil.copytree(source, tmp_path / "run"))


# ---------------------------------------------------------------------------- integers beyond int64


def test_integers_beyond_int64_are_refused_at_spec_validation_and_dry_run_answers(tmp_path, capsys):
    spec = tmp_path / "big.toml"
    spec.write_text('name = "big"\npreset = "tiny"\n[grid]\n"train.steps" = [10, 100000000000000000000000]\n')
    out = tmp_path / "sweep"
    for extra in (["--dry-run"], []):
        assert main(["sweep", str(spec), "--out", str(out), *extra]) == 2
        line = one_line(capsys)
        assert "grid['train.steps'][1] = 100000000000000000000000 is beyond the 64-bit integers" in line
        assert not out.exists()
    spec.write_text('preset = "tiny"\nseeds = [0, 18446744073709551616]\n')
    assert main(["sweep", str(spec), "--out", str(out), "--dry-run"]) == 2
    assert "seeds[1] = 18446744073709551616 is beyond the 64-bit integers" in one_line(capsys)
    assert main(["train", "--out", str(tmp_path / "run"), *TINY, "--init-seed", str(2**64)]) == 2
    assert "init_seed = 18446744073709551616 is beyond the 64-bit integers" in one_line(capsys)
    assert not (tmp_path / "run").exists()


def test_the_largest_int64_is_accepted_and_fits_the_table(tmp_path):
    trials = expand(spec_from_data({"preset": "tiny", "seeds": [2**63 - 1], "grid": {"train.steps": [2**63 - 1]}}))
    sweep = SweepDir(tmp_path / "sweep")
    sweep.prepare({"name": "big"}, [{"index": 0, "trial_id": trials[0].trial_id, "params": trials[0].params, "seed": trials[0].seed}], [])
    frame = sweep.write_table()
    assert frame["seed"][0] == 2**63 - 1 and frame["train.steps"][0] == 2**63 - 1


# ---------------------------------------------------------------------------- readers beside a writer


def test_a_checkpoint_deleted_after_it_was_listed_is_passed_over(run, monkeypatch):
    real = RunFolder.checkpoints
    listings = []

    def listed_before_a_save(self):
        found = real(self)
        listings.append(found)
        if len(listings) == 1:  # the first look saw a newer checkpoint that the training has replaced since
            return [*found, (21, self.checkpoint_path(21))]
        return found

    monkeypatch.setattr(RunFolder, "checkpoints", listed_before_a_save)
    loaded = load_run(run)
    assert loaded.step == 20


def test_every_listed_checkpoint_gone_means_list_again(run, monkeypatch):
    real = RunFolder.checkpoints
    calls = [0]

    def all_replaced_once(self):
        calls[0] += 1
        found = real(self)
        return [(step + 100, self.checkpoint_path(step + 100)) for step, _ in found] if calls[0] == 1 else found

    monkeypatch.setattr(RunFolder, "checkpoints", all_replaced_once)
    assert load_run(run).step == 20 and calls[0] >= 2


def test_a_checkpoint_replaced_while_it_is_read_is_read_again_not_called_damaged(run, monkeypatch):
    path = RunFolder(run).checkpoint_path(20)
    real = checkpoint_module._load_model_tensors
    calls = [0]

    def replaced_during_the_first_read(p):
        calls[0] += 1
        if calls[0] == 1:  # the training writes the same step again (atomically: a new file) while we read
            copy = path.with_name("copy")
            shutil.copyfile(path, copy)
            os.replace(copy, path)
            raise CheckpointError(p, "is damaged: its model tensors do not match the checksum stored with them")
        return real(p)

    monkeypatch.setattr(checkpoint_module, "_load_model_tensors", replaced_during_the_first_read)
    assert set(load_model_tensors(path)) and calls[0] == 2
    # a file damaged for good (unchanged between reads) is still refused
    calls[0] = 1
    monkeypatch.setattr(checkpoint_module, "_load_model_tensors", lambda p: (_ for _ in ()).throw(CheckpointError(p, "is damaged")))
    with pytest.raises(CheckpointError):
        load_model_tensors(path)


@pytest.mark.slow
def test_load_run_never_fails_beside_a_training_that_saves_every_step(tmp_path):
    run = tmp_path / "run"
    trainer = subprocess.Popen(
        [sys.executable, "-m", "nrecur", "train", "--out", str(run), *TINY, "--steps", "400", "--checkpoint-every", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not RunFolder(run).checkpoints():
            assert time.monotonic() < deadline and trainer.poll() is None, "the training did not start"
            time.sleep(0.05)
        loads, steps = 0, []
        while trainer.poll() is None and time.monotonic() < deadline + 300:
            steps.append(load_run(run).step)  # raises on any failure
            loads += 1
    finally:
        trainer.kill()
        trainer.wait()
    assert loads >= 20, f"only {loads} loads overlapped the training"
    assert steps == sorted(steps) and len(set(steps)) > 5  # the latest checkpoint each time, as it moved on


# ---------------------------------------------------------------------------- temporaries


def test_stale_temporaries_go_and_live_ones_stay(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        host = nrecur._io._host()
        names = {
            ".prior.png.k3j2.tmp": True,  # no owner: an older version's, stale
            f".prior.svg.{2**22 + 7}@{host}.ab_12.tmp": True,  # a process that is gone
            f".heads.png.{sleeper.pid}@{host}.cd34.tmp": False,  # a live writer's
            f".heads.svg.{os.getpid()}@{host}.ef56.tmp": False,  # this process's own
            ".probes.png.1@elsewhere.gh78.tmp": False,  # another host's, recent
        }
        for name in names:
            (tmp_path / name).write_text("x")
        old = tmp_path / ".probes.svg.1@elsewhere.ij90.tmp"
        old.write_text("x")
        os.utime(old, (time.time() - 2 * nrecur._io.FOREIGN_TEMPORARY_AGE,) * 2)
        assert is_stale_temporary(old)
        removed = {p.name for p in remove_stale_temporaries(tmp_path)}
        assert removed == {name for name, stale in names.items() if stale} | {old.name}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_atomic_writes_name_their_process(tmp_path, monkeypatch):
    seen = []
    real = nrecur._io.os.replace

    def spy(src, dst):
        seen.append(Path(src).name)
        return real(src, dst)

    monkeypatch.setattr(nrecur._io.os, "replace", spy)
    nrecur._io.atomic_write_text(tmp_path / "a.json", "{}")
    assert seen[0].startswith(f".a.json.{os.getpid()}@") and not is_stale_temporary(tmp_path / seen[0])


def test_temporaries_of_a_killed_analyze_go_with_the_next_analyze_and_report(run, capsys):
    analysis = run / "analysis"
    analysis.mkdir()
    left = [analysis / ".prior.png.a1b2c3.tmp", analysis / f".prior.svg.{2**22 + 5}@{nrecur._io._host()}.x9.tmp", run / ".report.html.q1.tmp"]
    for path in left:
        path.write_text("half")
    assert main(["report", str(run)]) == 0
    assert not any(path.exists() for path in left)
    for path in left[:2]:
        path.write_text("half")
    assert main(["analyze", str(run), "--what", "heads"]) == 0
    assert not any(path.exists() for path in left[:2]) and (analysis / "heads.json").exists()


# ---------------------------------------------------------------------------- backends


def test_a_backend_that_is_not_installed_is_refused_before_anything_is_written(tmp_path, monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a))
    spec = Path(__file__).parents[1] / "examples" / "sweeps" / "tiny.toml"
    out = tmp_path / "sweep"
    for extra in (["--dry-run"], []):
        assert main(["sweep", str(spec), "--out", str(out), "--backend", "ray", *extra]) == 2
        assert one_line(capsys) == "nrecur sweep: error: --backend ray needs ray, which is not installed: pip install 'nrecur[ray]'"
        assert not out.exists()


# ---------------------------------------------------------------------------- memory


def test_a_run_too_big_for_its_evaluation_pass_is_refused_before_allocating(tmp_path, monkeypatch, capsys):
    """``--preset tiny --d-model 1000000``: its training step fits in 24 GB, its evaluation pass does not."""
    monkeypatch.setattr(train_memory, "available_memory", lambda: 24_000_000_000)

    def allocating(*args, **kwargs):
        raise AssertionError("the model was allocated before the estimate refused the run")

    monkeypatch.setattr(loop_module, "build_model", allocating)
    out = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--d-model", "1000000", "--out", str(out), "--no-progress"]) == 2
    line = one_line(capsys)
    assert "this run needs about 37.0 GB of memory" in line and "(an evaluation pass)" in line and "only 24.0 GB is available" in line
    assert not out.exists()


MEASURE = """
from pathlib import Path
from nrecur.model import GPTConfig
from nrecur.train.callbacks import Evaluator
from nrecur.train.loop import Trainer
from nrecur.train.memory import estimate_training_memory
from nrecur.train.presets import get_preset

def status(name):
    return next(int(l.split()[1]) * 1024 for l in Path("/proc/self/status").read_text().splitlines() if l.startswith(name))

def train(d_model):
    config = get_preset("tiny").run
    config = config.model_copy(update={"model": GPTConfig.model_validate({**config.model.model_dump(), "d_model": d_model})})
    trainer = Trainer(config, [Evaluator()])
    trainer.callbacks[0].on_start(trainer)  # the evaluation at step 0
    for _ in range(2):
        trainer.train_step()
    return config

train(16)  # the fixed costs first (the observer's compiled kernels, the libraries' buffers)
Path("/proc/self/clear_refs").write_text("5")  # the peak starts again from here
before = status("VmRSS")
config = train(12000)
print(status("VmHWM") - before, estimate_training_memory(config).total)
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads the peak memory from /proc")
def test_the_memory_estimate_covers_a_measured_run():
    result = subprocess.run([sys.executable, "-c", MEASURE], capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr
    used, estimate = map(int, result.stdout.split())
    # An accepted run fits, its evaluation pass included (up to the allocator's overheads, which are not counted),
    # and the estimate does not refuse runs several times too small.
    assert used <= 1.15 * estimate and estimate < 3 * used, (used, estimate)


# ---------------------------------------------------------------------------- disk full, huge plans


def test_disk_full_while_appending_metrics_names_the_file(tmp_path, monkeypatch, capsys):
    real = os.write

    def full_for_metrics(fd, data):
        if os.readlink(f"/proc/self/fd/{fd}").endswith("metrics.jsonl"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd, data)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell the metrics file apart")
    monkeypatch.setattr(nrecur._io.os, "write", full_for_metrics)
    run = tmp_path / "run"
    assert main(["train", "--out", str(run), *TINY, "--steps", "20"]) == 2
    assert one_line(capsys) == f"nrecur train: error: No space left on device: {run / 'metrics.jsonl'}"


def test_the_plan_of_a_huge_sweep_is_summarized(monkeypatch):
    trial = expand(spec_from_data({"preset": "tiny"}))[0]
    groups = tuple(TrialGroup((trial,) * 16) for _ in range(6250))
    lines = Plan("ensemble", "", groups).describe()
    assert lines == ["100000 trials in 6250 groups of the same shape (6,250 of 16), each trained at once (ensemble)"]
    mixed = Plan("ensemble", "", groups[:20] + (TrialGroup((trial,) * 3),)).describe()
    assert mixed == ["323 trials in 21 groups of the same shape (20 of 16, 1 of 3), each trained at once (ensemble)"]
    assert Plan("ensemble", "", groups[:3]).describe() == ["48 trials in 3 groups of the same shape (16, 16, 16), each trained at once (ensemble)"]


# ---------------------------------------------------------------------------- an ensemble that fails


def in_process(groups, sweep, on_done, options) -> None:
    for group in groups:
        for record in GROUP_RUNNERS[options.runner](group, sweep):
            on_done(record)


def test_a_failed_ensemble_is_said_in_each_record_and_the_sweeps_log(tmp_path, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise ValueError("a systematic bug")

    monkeypatch.setattr(importlib.import_module("nrecur.train.ensemble"), "train_ensemble", broken)
    monkeypatch.setitem(BACKENDS, "local", in_process)
    spec = spec_from_data({"preset": "tiny", "seeds": 2, "base": {"train": {"steps": 10, "eval_every": 5, "eval_size": 32, "device": "cpu"}}})
    result = run_sweep(spec, tmp_path / "sweep", options=BackendOptions(workers=1, runner="ensemble"))
    printed = capsys.readouterr().out
    note = "trained alone: the ensemble of 2 failed (ValueError: a systematic bug (at test_faults.py:"
    assert result.status_counts == {"ok": 2} and result.ran == 2
    records = [SweepDir(tmp_path / "sweep").read_record(trial.trial_id) for trial in expand(spec)]
    assert all(record.status == "ok" and record.note.startswith(note) for record in records)
    assert sum(note in line for line in printed.splitlines() if line.startswith("[")) == 2  # each trial's line
    assert f"2 trials: {note}" in result.describe()  # and the closing summary
    table = SweepDir(tmp_path / "sweep").table()
    assert all(cell.startswith(note) for cell in table["note"])
    # a group whose ensemble trains well has no note
    monkeypatch.undo()
    other = SweepDir(tmp_path / "other")
    other.path.mkdir()
    records = run_as_ensemble(TrialGroup(tuple(expand(spec_from_data({**spec.model_dump(), "seeds": [5, 6]})))), other)
    assert all(record.status == "ok" and record.note is None for record in records)
