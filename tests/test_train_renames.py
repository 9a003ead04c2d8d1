"""Old names of the KL-threshold fields (``nrecur.train.renames``): run folders, checkpoints, sweep records and
specs written with ``stop_when_grokked``, ``grok_step``, ``grok_seconds`` and the stop reason ``"grokked"``
load and resume under the new names, with one FutureWarning that names the new ones."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pydantic
import pytest
from safetensors import safe_open
from safetensors.torch import save_file

from nrecur.model import GPTConfig
from nrecur.studies.spec import load_study
from nrecur.sweep.expand import expand
from nrecur.sweep.spec import load_spec, spec_from_data
from nrecur.sweep.store import SweepDir, TrialRecord
from nrecur.train import RunConfig, TrainConfig, resume, train
from nrecur.train.folder import RunFolder
from nrecur.train import renames
from nrecur.train.renames import OLD_NAMES_MESSAGE
from nrecur.train.session import read_config, read_summary

MODEL = GPTConfig(vocab_size=8, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
NRECUR = [sys.executable, "-c", "import sys; from nrecur.cli import main; sys.exit(main(sys.argv[1:]))"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(autouse=True)
def fresh_process(monkeypatch):
    """Each test reads old names as a fresh process would: the one warning not issued yet."""
    monkeypatch.setattr(renames, "_WARNED", set())


def rename_keys(data: dict, names: dict[str, str]) -> dict:
    return {names.get(key, key): value for key, value in data.items()}


def write_old_checkpoint(path: Path, stop_reason: str | None) -> None:
    """Rewrite a checkpoint's trainer state as it was written under the old names (checksums kept valid)."""
    with safe_open(path, "pt") as handle:
        metadata = handle.metadata()
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    state = json.loads(metadata["state"])
    evaluator = state["callbacks"]["Evaluator"]
    state["callbacks"]["Evaluator"] = rename_keys(evaluator, {"threshold_step": "grok_step", "threshold_seconds": "grok_seconds"})
    state["stop_reason"] = stop_reason
    metadata["state"] = json.dumps(state)
    checksums = json.loads(metadata["checksums"])
    checksums["metadata"] = "sha256:" + hashlib.sha256(f"{metadata['step']}\0{metadata['state']}".encode()).hexdigest()
    metadata["checksums"] = json.dumps(checksums)
    save_file(tensors, path, metadata=metadata)


def old_run(folder: Path, stop_reason: str) -> Path:
    """A run of 20 steps that reached its (loose) KL threshold at step 0, its folder rewritten with the old
    names: ``stop_when_grokked: true`` in config.json, ``grok_step``/``grok_seconds`` and ``stop_reason`` in
    summary.json and in every checkpoint's state."""
    config = RunConfig(model=MODEL, train=TrainConfig(steps=20, eval_every=10, eval_size=32, checkpoint_every=10, kl_threshold=10.0, device="cpu"))
    train(config, folder, progress=False)
    run = RunFolder(folder)
    data = json.loads(run.config_file.read_text())
    data["train"] = rename_keys(data["train"], {"stop_at_threshold": "stop_when_grokked"})
    data["train"]["stop_when_grokked"] = True
    run.config_file.write_text(json.dumps(data, indent=2))
    summary = rename_keys(json.loads(run.summary_file.read_text()), {"threshold_step": "grok_step", "threshold_seconds": "grok_seconds"})
    run.summary_file.write_text(json.dumps({**summary, "stop_reason": stop_reason}, indent=2))
    for _, path in run.checkpoints():
        write_old_checkpoint(path, stop_reason)
    return folder


def test_an_old_run_folder_loads_and_resumes_under_the_new_names(tmp_path):
    run = old_run(tmp_path / "old", "steps")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert read_config(run).train.stop_at_threshold
        summary = read_summary(run)
        assert summary["threshold_step"] == 0 and summary["threshold_seconds"] is not None and "grok_step" not in summary
        result = resume(run, steps=30, progress=False)
    # The old config's stop_when_grokked and the checkpoint's grok_step carried over: the evaluation at
    # step 30 finds the threshold reached (at step 0) and stops with the new reason.
    assert result.steps == 30 and result.stop_reason == "threshold" and result.grokking.threshold_step == 0
    written = json.loads(RunFolder(run).summary_file.read_text())
    assert written["threshold_step"] == 0 and written["stop_reason"] == "threshold" and "grok_step" not in written
    # Config, summary and checkpoint all held old names, each read more than once: one warning, naming both.
    mine = [w for w in caught if issubclass(w.category, FutureWarning)]
    assert len(mine) == 1 and str(mine[0].message) == OLD_NAMES_MESSAGE
    assert "stop_when_grokked is stop_at_threshold" in OLD_NAMES_MESSAGE and "grok_step is threshold_step" in OLD_NAMES_MESSAGE


def test_an_old_stop_reason_reads_as_the_new_one(tmp_path):
    run = old_run(tmp_path / "old", "grokked")
    with pytest.warns(FutureWarning, match="'grokked' is 'threshold'"):
        assert read_summary(run)["stop_reason"] == "threshold"
        with pytest.raises(ValueError, match=r"stop reason: threshold\); it reached its KL threshold with stop_at_threshold"):
            resume(run, progress=False)


@pytest.mark.slow
def test_the_cli_warns_once_about_an_old_run(tmp_path):
    run = old_run(tmp_path / "old", "steps")
    done = subprocess.run([*NRECUR, "train", "--resume", str(run), "--steps", "30", "--no-progress"], env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # config.json, summary.json and the checkpoint each hold old names: one warning, in the CLI's one-line form.
    assert done.stderr.count("warning: read old names") == 1, done.stderr
    assert f"nrecur: warning: {OLD_NAMES_MESSAGE}" in done.stderr and "reached the KL threshold" in done.stdout


def test_old_sweep_records_read_with_one_warning(tmp_path):
    sweep = SweepDir(tmp_path / "sweep")
    trials = [{"index": i, "trial_id": f"t{i}", "params": {}, "seed": i} for i in range(3)]
    sweep.prepare({"name": "old"}, trials, [])
    for trial in trials:
        record = json.loads(TrialRecord(trial_id=trial["trial_id"], status="ok", stop_reason="grokked", steps=10).to_json())
        sweep.record_file(trial["trial_id"]).write_text(json.dumps(record))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")  # Python's own filter, as on the command line
        table = sweep.table()
    assert list(table["stop_reason"]) == ["threshold"] * 3
    assert [str(w.message) for w in caught] == [OLD_NAMES_MESSAGE] and caught[0].category is FutureWarning


BASE = {"preset": "tiny", "base": {"train": {"steps": 20}}}


def test_an_old_sweep_spec_runs_the_same_trials(tmp_path):
    new = expand(spec_from_data({**BASE, "base": {"train": {"steps": 20, "stop_at_threshold": False}}}))
    with pytest.warns(FutureWarning, match="stop_at_threshold"):
        old = expand(spec_from_data({**BASE, "base": {"train": {"steps": 20, "stop_when_grokked": False}}}))
    assert [t.trial_id for t in old] == [t.trial_id for t in new] and not old[0].config.train.stop_at_threshold


def test_an_old_spec_file_varies_the_renamed_field(tmp_path):
    spec = tmp_path / "old.yaml"
    spec.write_text("preset: tiny\nbase:\n  train.steps: 20\ngrid:\n  train.stop_when_grokked: [true, false]\n")
    with pytest.warns(FutureWarning, match="stop_at_threshold"):
        trials = expand(load_spec(spec))
    assert [t.params for t in trials] == [{"train.stop_at_threshold": True}, {"train.stop_at_threshold": False}]
    assert [t.config.train.stop_at_threshold for t in trials] == [True, False]


def test_an_old_study_spec_loads_with_a_warning(tmp_path):
    spec = tmp_path / "study.toml"
    spec.write_text('study = "grokking"\nsizes = [64]\ntrain = { steps = 50, stop_when_grokked = false }\n')
    with pytest.warns(FutureWarning, match="stop_at_threshold"):
        name, options = load_study(spec)
    assert name == "grokking" and options["train"] == {"steps": 50, "stop_at_threshold": False}


def test_a_config_with_both_names_must_agree():
    with pytest.warns(FutureWarning):
        assert TrainConfig(stop_when_grokked=True, stop_at_threshold=True).stop_at_threshold
    with pytest.raises(pydantic.ValidationError, match="stop_when_grokked is the old name of stop_at_threshold"):
        TrainConfig(stop_when_grokked=True, stop_at_threshold=False)
    assert "stop_when_grokked" not in TrainConfig().model_dump() and "stop_at_threshold" in TrainConfig().model_dump()
