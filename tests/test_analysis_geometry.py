"""Belief geometry and the ``nrecur analyze`` command: known answers, a trained Mess3 model, bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from nrecur import Mess3, ModularICL, NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, compute, read_result
from nrecur.analysis.figures.geometry import simplex_xy
from nrecur.analysis.geometry import beliefs_of, components_for
from nrecur.cli import main
from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig


def test_principal_components_of_low_rank_data():
    rng = np.random.default_rng(0)
    data = rng.normal(size=(2000, 2)) @ rng.normal(size=(2, 16))  # rank 2 in 16 dimensions
    assert max(components_for(data)) <= 2 and components_for(rng.normal(size=(2000, 16)))[-1] > 8


def test_simplex_corners_are_distinct_and_the_centre_is_the_origin():
    corners = simplex_xy(np.eye(3))
    assert len({tuple(np.round(c, 6)) for c in corners}) == 3
    np.testing.assert_allclose(simplex_xy(np.full((1, 3), 1 / 3)), 0.0, atol=1e-12)


def test_the_n_recurrence_simplex_is_the_posterior_over_three_chosen_periods_renormalized():
    task = NRecurrence(vocab_size=4, periods=(2, 3, 4, 5))
    post = task.posterior(task.sample(8, 12, seed=0).tokens)
    beliefs, vertices = beliefs_of(task, post, periods=(5, 2, 4))
    assert vertices == ("n=5", "n=2", "n=4")
    chosen = np.asarray(post.period)[..., [3, 0, 2]]
    total = chosen.sum(-1)
    assert (total == 0).any() and (total > 0).any()  # the data rule out all three periods somewhere
    np.testing.assert_allclose(beliefs[total > 0], chosen[total > 0] / total[total > 0][:, None])
    np.testing.assert_allclose(beliefs[total == 0], 1 / 3)  # nothing left to tell them apart: the centre
    with pytest.raises(ValueError, match="three different periods of the task"):
        beliefs_of(task, post, periods=(2, 2, 3))


def tiny(task, folder, steps, log_checkpoints=0):
    model = GPTConfig(vocab_size=task.vocab_size, n_ctx=10, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(steps=steps, batch_size=64, eval_every=steps, eval_size=128, device="cpu", log_checkpoints=log_checkpoints)
    config = RunConfig(task=task, model=model.model_copy(update={"n_ctx": min(10, task.max_length - 1 if task.max_length else 10)}), train=settings)
    train(config, folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def mess3_run(tmp_path_factory):
    return tiny(Mess3(), tmp_path_factory.mktemp("geometry") / "mess3", steps=300, log_checkpoints=3)


@pytest.mark.slow
def test_a_trained_mess3_model_holds_the_belief_simplex_beyond_its_initialization(mess3_run):
    run = load_run(mess3_run)
    result = compute(run, "geometry", n_sequences=512)
    head = result.headline
    # A fresh transformer already decodes much of Mess3's simplex linearly (its residual stream holds the
    # recent tokens), so R² alone cannot tell training from none: the test is the gain over the initialization.
    assert head["r2_random_init"] > 0.8
    assert head["r2"] > head["r2_random_init"] + 0.02 and result.trained.r2["embed"] < head["r2"]
    assert head["mean_distance"] < head["mean_distance_random_init"] / 1.3
    assert len(result.points_true) == len(result.points_mapped[result.trained.best_hook])


def test_a_model_trained_for_one_step_sits_at_its_control(tmp_path):
    """The headline a 1-step model reaches is what the initialization gives: R² and distance at their controls."""
    run = load_run(tiny(Mess3(), tmp_path / "one", steps=1))
    head = compute(run, "geometry", n_sequences=128).headline
    assert head["r2"] == pytest.approx(head["r2_random_init"], abs=0.01)
    assert head["mean_distance"] == pytest.approx(head["mean_distance_random_init"], rel=0.05)


def test_the_control_is_the_runs_own_initialization(tmp_path):
    """At step 0 the model is its initialization: every figure equals its control exactly."""
    run = load_run(tiny(Mess3(), tmp_path / "zero", steps=1, log_checkpoints=1), step=0)
    head = compute(run, "geometry", n_sequences=64).headline
    for name in ("r2", "mean_distance", "r2_concat", "components_90"):
        assert head[name] == head[f"{name}_random_init"]


@pytest.mark.slow
def test_analyze_writes_json_and_figures_and_refuses_bad_input(mess3_run, tmp_path, capsys):
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--sequences", "256"]) == 0
    data = json.loads((mess3_run / "analysis" / "geometry.json").read_text())
    assert set(data["headline"]) >= {"r2", "r2_random_init", "mean_distance", "mean_distance_random_init"}
    assert "geometry.png" in data["figures"] and data["options"]["n_sequences"] == 256
    assert (mess3_run / "analysis" / "geometry.svg").exists()
    again = read_result(mess3_run / "analysis" / "geometry.json")  # the result again from its file alone
    assert again.headline == pytest.approx(data["headline"]) and again.trained.best_hook == data["trained"]["best_hook"]
    capsys.readouterr()
    before = sorted(p.name for p in (mess3_run / "analysis").iterdir())
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--step", "7"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint at step 7" in err and err.count("\n") == 1
    assert main(["analyze", str(mess3_run), "--what", "telepathy"]) == 2
    err = capsys.readouterr().err
    assert "unknown analysis telepathy; choose from probes, geometry" in err and err.count("\n") == 1
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--set", "geometry.colour=3"]) == 2
    err = capsys.readouterr().err
    assert "geometry takes no option colour; it takes seed, n_sequences, held_out, points, periods" in err and err.count("\n") == 1
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--set", "held_out=1.5"]) == 2
    assert "geometry option held_out" in capsys.readouterr().err
    assert sorted(p.name for p in (mess3_run / "analysis").iterdir()) == before


@pytest.mark.slow
def test_geometry_over_training_sharpens_and_draws_a_strip(mess3_run, capsys):
    steps = load_run(mess3_run).checkpoint_steps
    assert len(steps) >= 4  # log-spaced checkpoints and the last
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--checkpoints", "all", "--sequences", "256"]) == 0
    data = json.loads((mess3_run / "analysis" / "geometry_over_training.json").read_text())
    series = data["series"]
    assert data["steps"] == list(steps) and len(data["snapshots"]) == len(steps)
    # Step 0 is the initialization: there the figure equals its control exactly. Training sharpens the
    # geometry: the decoded beliefs come more than 1.5 times closer to the true ones than at initialization.
    assert steps[0] == 0 and series["r2"][0] == series["r2_random_init"][0]
    assert series["r2"][-1] > series["r2"][0]
    assert series["mean_distance"][-1] < series["mean_distance_random_init"][-1] / 1.5
    assert data["headline"]["r2"] == pytest.approx(series["r2"][-1])
    assert (mess3_run / "analysis" / "geometry_over_training.png").exists()
    assert (mess3_run / "analysis" / "geometry_over_training_headline.png").exists()


@pytest.mark.slow
def test_an_analysis_interrupted_while_writing_leaves_the_old_json_whole(mess3_run, monkeypatch, capsys):
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--sequences", "64", "--seed", "1"]) == 0
    path = mess3_run / "analysis" / "geometry.json"
    before = path.read_bytes()
    real_replace = os.replace

    def interrupted(source, target):  # the process dies between writing the new JSON and renaming it
        if Path(target).name == "geometry.json":
            raise KeyboardInterrupt
        real_replace(source, target)

    monkeypatch.setattr("nrecur._io.os.replace", interrupted)
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--sequences", "64", "--seed", "2"]) == 130
    assert "interrupted" in capsys.readouterr().err
    assert path.read_bytes() == before and json.loads(before)["options"]["n_sequences"] == 64
    assert not list(path.parent.glob(".*.tmp"))


@pytest.mark.slow
def test_an_earlier_step_writes_beside_the_latest_results_never_over_them(mess3_run, capsys, monkeypatch):
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--sequences", "64"]) == 0
    latest = (mess3_run / "analysis" / "geometry.json").read_bytes()
    earlier = load_run(mess3_run).checkpoint_steps[1]
    assert main(["analyze", str(mess3_run), "--what", "geometry", "--sequences", "64", "--step", str(earlier)]) == 0
    assert f"geometry (step {earlier}," in capsys.readouterr().out
    assert (mess3_run / "analysis" / "geometry.json").read_bytes() == latest
    data = json.loads((mess3_run / "analysis" / f"step_{earlier:08d}" / "geometry.json").read_text())
    assert data["step"] == earlier and json.loads(latest)["step"] == load_run(mess3_run).step
    # --what all names what does not apply to the run instead of leaving it out silently (the probes that apply run
    # without their MLP and softmax fits, and draw no figures, nor do the heads: what they read and draw is
    # checked in their own tests).
    no_fits = ["--set", "probes.mlp=false", "--set", "probes.softmax=false"]
    for name in ("probes", "heads"):
        monkeypatch.setattr(f"nrecur.analysis.figures.{name}.draw", lambda result, folder: [])
    assert main(["analyze", str(mess3_run), "--what", "all", "--sequences", "64", "--step", str(earlier), *no_fits]) == 0
    out = capsys.readouterr().out
    assert "skipped updates: needs an n-recurrence task, not mess3" in out
    assert {"probes.json", "geometry.json", "heads.json"} <= {p.name for p in (mess3_run / "analysis" / f"step_{earlier:08d}").iterdir()}


def test_an_analysis_that_does_not_apply_is_one_line_and_writes_nothing(tmp_path, capsys):
    folder = tiny(ModularICL(p=3, n_examples=4, n_tasks=4), tmp_path / "modular", steps=2)
    assert ANALYSES["geometry"].applies(load_run(folder)) is not None
    assert main(["analyze", str(folder), "--what", "geometry"]) == 2
    err = capsys.readouterr().err
    assert "does not apply" in err and "no belief simplex" in err and err.count("\n") == 1
    assert not (folder / "analysis").exists()


def test_geometry_does_not_apply_to_n_recurrence_with_two_periods(tmp_path):
    """The simplex's vertices are three periods; a two-period task is skipped (in jobs too), not an error."""
    folder = tiny(NRecurrence(vocab_size=4, periods=(2, 3)), tmp_path / "two", steps=2)
    assert "needs three" in ANALYSES["geometry"].applies(load_run(folder))


def test_a_run_without_checkpoints_is_one_line_and_writes_nothing(tmp_path, capsys):
    folder = tiny(Mess3(), tmp_path / "m", steps=2)
    for checkpoint in (folder / "checkpoints").iterdir():
        checkpoint.unlink()
    assert main(["analyze", str(folder), "--what", "all"]) == 2
    err = capsys.readouterr().err
    assert "no checkpoint" in err and err.count("\n") == 1
    assert not (folder / "analysis").exists()


def test_too_few_sequences_is_one_line(tmp_path, capsys):
    folder = tiny(Mess3(), tmp_path / "m", steps=2)
    assert main(["analyze", str(folder), "--what", "geometry", "--sequences", "3"]) == 2
    err = capsys.readouterr().err
    assert "--sequences must be an integer >= 8" in err and err.count("\n") == 1
    assert not (folder / "analysis").exists()
