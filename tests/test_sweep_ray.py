"""The Ray backend on a local Ray instance: the same table as the local backend; ASHA stops trials early."""

from __future__ import annotations

import numpy as np
import pytest

from nrecur.sweep import BackendOptions, load_sweep, run_sweep, spec_from_data

ray = pytest.importorskip("ray")

SPEC = {
    "name": "ray-check",
    "preset": "tiny",
    "seeds": 2,
    "base": {"train": {"steps": 16, "eval_every": 4, "eval_size": 64, "stop_at_threshold": False}},
    "grid": {"model.d_model": [8, 16]},
}


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.mark.slow
def test_ray_gives_the_local_table_and_asha_stops_trials(tmp_path, local_ray):
    spec = spec_from_data(SPEC)
    run_sweep(spec, tmp_path / "local", "local", BackendOptions(workers=1), report=None)
    result = run_sweep(spec, tmp_path / "ray", "ray", report=None)
    assert result.status_counts == {"ok": 4}
    here, there = load_sweep(tmp_path / "local"), load_sweep(tmp_path / "ray")
    assert list(here.columns) == list(there.columns)
    assert list(here["trial_id"]) == list(there["trial_id"])
    for column in ("model.d_model", "seed", "status", "steps", "n_params", "steps_to_threshold"):
        assert list(here[column]) == list(there[column]), column
    for column in ("final_kl", "final_train_loss", "final_eval_ce", "bayes_eval_ce"):
        np.testing.assert_allclose(there[column], here[column], rtol=1e-5, err_msg=column)

    # ASHA with a grace period of one evaluation: the worse half at each rung stops; the rest finish
    # good trials first: they set the bar at each rung, and the low-lr ones that come after fall below it
    spec = spec_from_data({**SPEC, "grid": {"train.lr": [3e-3, 1e-5]}})
    result = run_sweep(spec, tmp_path / "asha", "ray", BackendOptions(asha_grace=1), report=None)
    frame = load_sweep(tmp_path / "asha")
    assert set(frame["status"]) <= {"ok", "stopped"} and (frame["status"] == "ok").any()
    stopped = frame[frame["status"] == "stopped"]
    assert len(stopped) >= 1
    assert all(reason.startswith("stopped early by ASHA at step") for reason in stopped["reason"])
    assert (stopped["steps"] < 16).all() and (frame[frame["status"] == "ok"]["steps"] == 16).all()
    # a stopped trial is a result: the sweep run again starts nothing
    assert run_sweep(spec, tmp_path / "asha", "ray", BackendOptions(asha_grace=1), report=None).ran == 0
