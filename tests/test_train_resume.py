"""Exact resumption: interrupted runs (even SIGKILLed ones) end with bitwise identical weights."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from nrecur.model import GPTConfig
from nrecur.tasks import NRecurrence
from nrecur.train import Callback, RunConfig, TrainConfig, resume, train
from nrecur.train.checkpoint import load_checkpoint
from nrecur.train.folder import RunFolder
from nrecur.train.session import read_summary


def latest_checkpoint(run_dir):
    return RunFolder(run_dir).latest_checkpoint()

MODEL = GPTConfig(vocab_size=8, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)


class Interrupt(Exception):
    pass


class InterruptAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer, info) -> None:
        if trainer.step == self.step:
            raise Interrupt


def final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(latest_checkpoint(run_dir)).model


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), f"{name} differs"


def metrics_without_time(run_dir: Path) -> list[dict]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "seconds"} for line in lines]


@pytest.mark.parametrize(
    "task, train_config",
    [
        (NRecurrence(), TrainConfig(steps=60, grokfast_lambda=2.0, grad_clip=0.5)),
        (NRecurrence(p_noise=0.1), TrainConfig(steps=60, mode="finite", train_size=40, batch_size=16, held_out_fraction=0.2)),
        (NRecurrence(), TrainConfig(steps=60, optimizer="muon")),
    ],
    ids=["online-grokfast", "finite-heldout", "online-muon"],
)
def test_interrupted_run_resumes_to_identical_weights_and_metrics(tmp_path, task, train_config):
    train_config = train_config.model_copy(
        update={"eval_every": 10, "eval_size": 32, "checkpoint_every": 20, "device": "cpu", "batch_size": min(train_config.batch_size, 16)}
    )
    config = RunConfig(task=task, model=MODEL, train=train_config)
    train(config, tmp_path / "whole", progress=False)
    with pytest.raises(Interrupt):
        train(config, tmp_path / "cut", progress=False, callbacks=[InterruptAt(47)])
    assert [step for step, _ in RunFolder(tmp_path / "cut").checkpoints()] == [40]
    result = resume(tmp_path / "cut", progress=False)
    assert result.steps == 60
    assert_bitwise_equal(final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut"))
    whole, cut = load_checkpoint(latest_checkpoint(tmp_path / "whole")), load_checkpoint(latest_checkpoint(tmp_path / "cut"))
    assert_bitwise_equal(whole.optimizer, cut.optimizer)
    assert_bitwise_equal(whole.grokfast, cut.grokfast)
    assert metrics_without_time(tmp_path / "whole") == metrics_without_time(tmp_path / "cut")
    with pytest.raises(ValueError, match="already finished"):
        resume(tmp_path / "cut", progress=False)


def test_stop_at_threshold_is_kept_across_a_resume(tmp_path):
    config = RunConfig(
        model=MODEL,
        train=TrainConfig(steps=100, eval_every=10, eval_size=32, checkpoint_every=10, kl_threshold=10.0, stop_at_threshold=True, device="cpu"),
    )
    result = train(config, tmp_path / "run", progress=False)
    assert result.stop_reason == "threshold" and result.steps == 0 and result.grokking.threshold_step == 0


NRECUR = [sys.executable, "-c", "import sys; from nrecur.cli import main; sys.exit(main(sys.argv[1:]))"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.slow
def test_sigkilled_run_resumes_to_bitwise_identical_weights(tmp_path):
    """A real process killed with SIGKILL at a random moment, then ``nrecur train --resume``."""
    options = [
        "--vocab-size", "8", "--n-ctx", "12", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-head", "8",
        "--d-mlp", "32", "--steps", "240", "--batch-size", "16", "--eval-every", "40", "--eval-size", "64",
        "--checkpoint-every", "20", "--grokfast-lambda", "1.0", "--device", "cpu", "--no-progress",
    ]  # fmt: skip
    whole = subprocess.run([*NRECUR, "train", "--out", str(tmp_path / "whole"), *options], env=ENV, capture_output=True, text=True)
    assert whole.returncode == 0, whole.stderr

    rng = random.Random(os.getpid())
    cut = tmp_path / "cut"
    kills = 0
    for attempt in range(3):  # kill it up to three times, each time at a random moment after some progress
        command = [*NRECUR, "train", *(["--resume", str(cut), "--no-progress"] if attempt else ["--out", str(cut), *options])]
        process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        before = latest_checkpoint(cut) if cut.exists() else None
        while time.monotonic() < deadline and process.poll() is None:
            now = latest_checkpoint(cut) if cut.exists() else None
            if now is not None and now != before:
                break
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 0.5))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
            kills += 1
        process.wait()
        if process.returncode == 0:  # this attempt ran to the end before the kill came
            break
    assert kills >= 1, "the run finished before it could be killed"
    summary = read_summary(cut)
    if not (summary and summary.get("status") == "finished"):  # a kill can land after the run finished
        done = subprocess.run([*NRECUR, "train", "--resume", str(cut), "--no-progress"], env=ENV, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert_bitwise_equal(final_weights(tmp_path / "whole"), final_weights(cut))
    assert metrics_without_time(tmp_path / "whole") == metrics_without_time(cut)
    assert not [p for p in (cut / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_resume_removes_temporaries_of_a_killed_write(tmp_path):
    config = RunConfig(model=MODEL, train=TrainConfig(steps=20, eval_every=10, eval_size=16, checkpoint_every=10, device="cpu"))
    with pytest.raises(Interrupt):
        train(config, tmp_path / "run", progress=False, callbacks=[InterruptAt(15)])
    stale = tmp_path / "run" / "checkpoints" / ".step_00000020.safetensors.abc123.tmp"
    stale.write_bytes(b"half a checkpoint")
    resume(tmp_path / "run", progress=False)
    assert not stale.exists()


def test_a_run_that_cannot_start_leaves_no_folder_behind(tmp_path):
    config = RunConfig(model=MODEL, init_from=str(tmp_path / "no-such-run"), train=TrainConfig(steps=5, device="cpu"))
    with pytest.raises(FileNotFoundError):
        train(config, tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()
    # The same folder can then be used for a run that does start.
    train(config.model_copy(update={"init_from": None}), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "config.json").exists()


# ---------------------------------------------------------------------------- extending a run (issue 7, case 4)


def test_more_steps_on_resume_equal_one_run_with_the_old_decay_horizon(tmp_path):
    """``resume(steps=60)`` of a finished 30-step run ends bit for bit as a 60-step run whose schedule decays
    over 30 steps (``decay_steps=30``), which is what its config.json then says."""
    base = TrainConfig(steps=30, warmup_steps=5, min_lr_ratio=0.02, eval_every=10, eval_size=32, checkpoint_every=10, batch_size=8, grokfast_lambda=1.0, device="cpu")
    config = RunConfig(model=MODEL, train=base)
    train(config, tmp_path / "extended", progress=False)
    with pytest.raises(ValueError, match=r"already finished at step 30 \(stop reason: steps\); continue it with --steps N"):
        resume(tmp_path / "extended", progress=False)
    result = resume(tmp_path / "extended", steps=60, progress=False)
    assert result.steps == 60 and result.stop_reason == "steps"
    stored = RunFolder(tmp_path / "extended").read_config()
    assert stored.train.steps == 60 and stored.train.decay_steps == 30
    assert stored == RunConfig(model=MODEL, train=base.model_copy(update={"steps": 60, "decay_steps": 30}))

    train(stored, tmp_path / "one-go", progress=False)
    extended, one_go = load_checkpoint(latest_checkpoint(tmp_path / "extended")), load_checkpoint(latest_checkpoint(tmp_path / "one-go"))
    assert extended.step == one_go.step == 60
    assert_bitwise_equal(extended.model, one_go.model)
    assert_bitwise_equal(extended.optimizer, one_go.optimizer)
    assert_bitwise_equal(extended.grokfast, one_go.grokfast)
    assert metrics_without_time(tmp_path / "extended") == metrics_without_time(tmp_path / "one-go")

    # The horizon matters: decaying over all 60 steps ends elsewhere.
    train(config.model_copy(update={"train": base.model_copy(update={"steps": 60})}), tmp_path / "plain", progress=False)
    plain = load_checkpoint(latest_checkpoint(tmp_path / "plain")).model
    assert any(not torch.equal(plain[name], one_go.model[name]) for name in plain)
    with pytest.raises(ValueError, match="is at step 60 already; --steps must be larger"):
        resume(tmp_path / "extended", steps=50, progress=False)


class StopAt(Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step(self, trainer, info) -> None:
        if trainer.step == self.step:
            trainer.stop("reference")


def test_a_run_stopped_by_its_time_budget_continues_with_a_larger_one(tmp_path, capsys):
    from nrecur.cli import main

    base = TrainConfig(steps=100_000, time_budget=0.3, eval_every=25, eval_size=32, checkpoint_every=50, batch_size=8, device="cpu")
    config = RunConfig(model=MODEL, train=base)
    first = train(config, tmp_path / "run", progress=False)
    assert first.stop_reason == "time budget"
    assert main(["train", "--resume", str(tmp_path / "run"), "--no-progress"]) == 2
    assert "continue it with --time-budget S" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--time-budget", "0.1", "--no-progress"]) == 2
    assert "--time-budget must be larger" in capsys.readouterr().err
    assert main(["train", "--resume", str(tmp_path / "run"), "--time-budget", "0.8", "--lr", "0.1", "--no-progress"]) == 2
    assert "only --steps and --time-budget may change); drop --lr" in capsys.readouterr().err

    assert main(["train", "--resume", str(tmp_path / "run"), "--time-budget", "0.8", "--no-progress"]) == 0
    second = read_summary(tmp_path / "run")
    assert second["stop_reason"] == "time budget" and second["steps"] > first.steps and second["seconds"] >= 0.8
    assert RunFolder(tmp_path / "run").read_config().train.time_budget == 0.8

    # The same run without a time budget, stopped at the same step, has the same weights.
    reference = config.model_copy(update={"train": base.model_copy(update={"time_budget": 0.0})})
    train(reference, tmp_path / "reference", progress=False, callbacks=[StopAt(second["steps"])])
    assert_bitwise_equal(final_weights(tmp_path / "reference"), final_weights(tmp_path / "run"))


# ---------------------------------------------------------------------------- fine-tunes (issue 7, case 1)


def _two_runs_called_det(tmp_path: Path) -> None:
    for folder, seed in (("here", 0), ("elsewhere", 5)):
        (tmp_path / folder).mkdir()
        source = RunConfig(model=MODEL, train=TrainConfig(steps=10, eval_every=10, eval_size=16, init_seed=seed, batch_size=8, device="cpu"))
        train(source, tmp_path / folder / "det", progress=False)


FINETUNE = TrainConfig(steps=30, eval_every=10, eval_size=16, checkpoint_every=100, batch_size=8, device="cpu")


def test_a_fine_tune_killed_before_its_first_checkpoint_resumes_from_the_same_weights_anywhere(tmp_path, monkeypatch):
    _two_runs_called_det(tmp_path)
    monkeypatch.chdir(tmp_path / "here")
    config = RunConfig(model=MODEL, train=FINETUNE, init_from="det")
    assert config.init_from == str(tmp_path / "here" / "det")  # resolved when the config is made
    train(config, tmp_path / "whole", progress=False)
    with pytest.raises(Interrupt):
        train(config, tmp_path / "cut", progress=False, callbacks=[InterruptAt(5)])
    folder = RunFolder(tmp_path / "cut")
    assert folder.checkpoints() == [] and json.loads(folder.config_file.read_text())["init_from"] == str(tmp_path / "here" / "det")
    record = folder.read_init_source()
    assert record.checkpoint == str(tmp_path / "here" / "det" / "checkpoints" / "step_00000010.safetensors") and record.step == 10
    assert record.fingerprint.startswith("sha256:")

    monkeypatch.chdir(tmp_path / "elsewhere")  # where "det" is another run
    resume(tmp_path / "cut", progress=False)
    assert_bitwise_equal(final_weights(tmp_path / "whole"), final_weights(tmp_path / "cut"))


def test_a_fine_tune_whose_source_changed_refuses_to_resume(tmp_path):
    _two_runs_called_det(tmp_path)
    source = tmp_path / "here" / "det"
    config = RunConfig(model=MODEL, train=FINETUNE, init_from=str(source))
    with pytest.raises(Interrupt):
        train(config, tmp_path / "cut", progress=False, callbacks=[InterruptAt(5)])
    before = {p.name: p.read_bytes() for p in (tmp_path / "cut").iterdir() if p.is_file()}
    retrained = RunFolder(source).read_config().model_copy(update={"train": TrainConfig(steps=10, eval_every=10, eval_size=16, init_seed=7, batch_size=8, device="cpu")})
    train(retrained, source, progress=False, overwrite=True)  # same path, other weights
    with pytest.raises(ValueError, match=r"cannot initialize from .*det: this run started from .*step_00000010.safetensors \(step 10, weights sha256:.*now holds other weights"):
        resume(tmp_path / "cut", progress=False)
    assert {p.name: p.read_bytes() for p in (tmp_path / "cut").iterdir() if p.is_file()} == before


def test_the_main_job_stores_an_absolute_init_from(tmp_path, monkeypatch):
    from nrecur.jobs.main import main_job_configs
    from nrecur.train.presets import get_preset

    monkeypatch.chdir(tmp_path)
    configs = main_job_configs(get_preset("tiny"), Path("runs"))
    assert configs["stoch-finetune"].init_from == str(tmp_path / "runs" / "tiny-det")


def test_a_run_killed_after_its_last_checkpoint_but_before_its_summary_finishes_on_resume(tmp_path):
    config = RunConfig(model=MODEL, train=TrainConfig(steps=20, eval_every=10, eval_size=16, checkpoint_every=10, batch_size=8, device="cpu"))
    train(config, tmp_path / "run", progress=False)
    weights = final_weights(tmp_path / "run")
    (tmp_path / "run" / "summary.json").unlink()
    result = resume(tmp_path / "run", progress=False)
    assert result.steps == 20 and result.stop_reason == "steps"
    assert read_summary(tmp_path / "run")["status"] == "finished"
    assert_bitwise_equal(weights, final_weights(tmp_path / "run"))
    with pytest.raises(ValueError, match="already finished"):
        resume(tmp_path / "run", progress=False)
