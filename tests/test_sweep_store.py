"""The sweep folder: the table is assembled from trials.json and the records (no training here)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from nrecur.sweep import SweepDir, TrialRecord, load_sweep


def make(tmp_path) -> SweepDir:
    sweep = SweepDir(tmp_path / "sweep")
    trials = [
        {"index": 0, "trial_id": "aaa", "params": {"task.p_noise": 0.1, "train.betas": [0.9, 0.98]}, "seed": 0},
        {"index": 1, "trial_id": "bbb", "params": {"task.p_noise": "0.2/n", "train.betas": [0.9, 0.99]}, "seed": 0},
        {"index": 2, "trial_id": "ccc", "params": {"task.p_noise": 0.1, "train.betas": [0.9, 0.98]}, "seed": 1},
    ]
    sweep.prepare({"name": "store"}, trials, ["eval/target_acc"])
    return sweep


def test_table_rows_follow_the_spec_with_pending_failed_and_attempts(tmp_path):
    sweep = make(tmp_path)
    sweep.write_record(TrialRecord(trial_id="aaa", status="ok", steps=10, final_kl=0.25, n_params=100, metrics={"eval/target_acc": 0.5}))
    sweep.write_record(TrialRecord(trial_id="bbb", status="failed", reason="training loss became nan at step 3", steps=2))
    sweep.write_record(TrialRecord(trial_id="zzz", status="ok"))  # a trial of an earlier spec: not in the table
    for trial_id in ("aaa", "bbb", "aaa", "ccc"):
        sweep.log_attempt(trial_id, 0)
    frame = sweep.write_table()
    assert list(frame["trial_id"]) == ["aaa", "bbb", "ccc"]
    assert list(frame["status"]) == ["ok", "failed", "pending"]
    assert list(frame["attempts"]) == [2, 1, 1]
    assert frame["steps"].dtype == "Int64" and frame["steps"].iloc[2] is pd.NA
    assert frame["reason"].iloc[1].startswith("training loss became nan")
    assert frame["eval/target_acc"].iloc[0] == 0.5 and math.isnan(frame["eval/target_acc"].iloc[1])
    # one type per column: mixed numbers and text become text; lists are JSON text
    assert list(frame["task.p_noise"]) == ["0.1", "0.2/n", "0.1"]
    assert list(frame["train.betas"]) == ["[0.9, 0.98]", "[0.9, 0.99]", "[0.9, 0.98]"]
    stored = pd.read_parquet(sweep.parquet_file)
    pd.testing.assert_frame_equal(stored, frame, check_dtype=False)
    assert len(pd.read_csv(sweep.csv_file)) == 3
    loaded = load_sweep(sweep.path)
    assert loaded["run_dir"].iloc[0] == str((sweep.path / "trials" / "aaa").absolute())
    assert frame["run_dir"].iloc[0] == "trials/aaa"


def test_a_torn_attempt_line_is_skipped_and_a_corrupt_record_is_named(tmp_path):
    sweep = make(tmp_path)
    sweep.log_attempt("aaa", 0)
    with open(sweep.attempts_file, "a") as handle:
        handle.write('{"trial_id": "bb')  # a write cut by a kill
    assert [line["trial_id"] for line in sweep.attempts()] == ["aaa"]
    sweep.record_file("ccc").write_text("{not json")
    with pytest.raises(ValueError, match="ccc.json is not a valid trial record"):
        sweep.table()


def test_not_a_sweep_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a sweep folder"):
        load_sweep(tmp_path)
