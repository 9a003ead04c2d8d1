"""Probes (SPEC §5): the probes against known answers, the stacked fit against one probe at a time, splits by
sequence, and every headline beside its controls — at them on a model that has learned nothing, above them on
a trained one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, analyze, compute, read_result, write_result
from nrecur.analysis.probe_models import FitRecipe, MLPProbe, RidgeProbe, batch_rows, fit_stacked, kl_rows, r2_score
from nrecur.analysis.probes import ProbeTable, _headline, choose_probe, read_at, ridge_r2_table, split_sequences
from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig

KINDS = ("r2_linear", "r2_linear_concat", "r2_mlp", "kl_softmax")


def test_a_probe_recovers_beliefs_from_an_exact_linear_map_of_them():
    rng = np.random.default_rng(0)
    beliefs = rng.dirichlet(np.ones(3), size=5000)  # [n, state]
    residual = beliefs @ rng.normal(size=(3, 32)) + rng.normal(size=32)  # [n, d_model]
    probe = RidgeProbe.fit(residual[:4000], beliefs[:4000])
    assert r2_score(beliefs[4000:], probe.predict(residual[4000:])) > 0.999


def test_shuffled_targets_give_r2_near_zero():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6000, 16))
    y = x[:, :2] @ np.array([[1.0], [-2.0]])
    shuffled = RidgeProbe.fit(x[:5000], y[:5000][rng.permutation(5000)])
    assert abs(r2_score(y[5000:], shuffled.predict(x[5000:]))) < 0.02
    assert r2_score(y[5000:], RidgeProbe.fit(x[:5000], y[:5000]).predict(x[5000:])) > 0.999


def test_held_out_split_never_shares_a_sequence():
    train_seq, test_seq = split_sequences(100, 0.2, seed=3)
    assert len(train_seq) == 80 and len(test_seq) == 20
    assert set(train_seq).isdisjoint(test_seq) and set(train_seq) | set(test_seq) == set(range(100))
    assert np.array_equal(split_sequences(100, 0.2, seed=3)[1], test_seq)


def test_minibatches_cover_every_row_once_per_epoch():
    rows = batch_rows(10, FitRecipe(steps=7, batch=3), seed=0)
    assert len(rows) == 7 and all(len(r) == 3 for r in rows)
    for epoch in (rows[0:3], rows[3:6]):  # 3 batches of 3 per epoch of 10 rows (the last row left for the next)
        assert len(set(np.concatenate(epoch))) == 9
    assert all(np.array_equal(r, np.arange(4)) for r in batch_rows(4, FitRecipe(steps=3, batch=8), seed=0))


@pytest.mark.parametrize("hidden", [8, 0], ids=["mlp", "softmax"])
def test_the_stacked_fit_is_one_probe_at_a_time(hidden):
    """Every probe of the stack — different inputs, distributions of different widths and a single value, not
    every (input, target) pair — predicts what the same probe fitted alone predicts (float64: to rounding)."""
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 300, 5))  # [input, row, d]
    y = [rng.dirichlet(np.ones(4), size=300), x[1, :, :1] ** 2, rng.dirichlet(np.ones(2), size=300)]
    pairs = [(0, 0), (0, 1), (1, 1), (1, 2), (2, 0), (2, 2)]
    recipe = FitRecipe(steps=40, batch=64, lr=1e-2)
    stack = fit_stacked(x, y, pairs, seed=3, hidden=hidden, recipe=recipe, dtype=torch.float64)
    held_out = rng.normal(size=(3, 50, 5))
    predicted = stack.predict(held_out)
    for (i, t), ours in zip(pairs, predicted):
        alone = MLPProbe.fit(x[i], y[t], distribution=y[t].shape[1] > 1, seed=3, hidden=hidden, recipe=recipe, dtype=torch.float64)
        reference = alone.predict(held_out[i])
        assert ours.shape == reference.shape == (50, y[t].shape[1])
        np.testing.assert_allclose(ours, reference, atol=1e-10)
    assert not np.allclose(predicted[0], predicted[4])  # the same target from another input: another probe


def test_the_best_probe_is_chosen_by_held_out_r2_and_an_mlp_reads_a_nonlinear_code():
    rng = np.random.default_rng(4)
    beliefs = rng.dirichlet(np.ones(3) * 0.5, size=(200, 12))  # [batch, pos, state]
    mixing = rng.normal(size=(3, 16))
    acts = {
        "noise": rng.normal(size=(200, 12, 16)),
        "linear": beliefs @ mixing,
        "folded": ((beliefs - 1 / 3) @ mixing) ** 2,  # the beliefs are (mostly) there, but not linearly
    }
    train_seq, test_seq = split_sequences(200, 0.2, seed=0)
    chosen = choose_probe(acts, beliefs, train_seq, test_seq, mlp=False)
    assert chosen.hook == "linear" and chosen.kind == "linear" and chosen.r2 > 0.999
    np.testing.assert_allclose(chosen.predict(acts)[test_seq], beliefs[test_seq], atol=1e-3)
    del acts["linear"]
    folded = choose_probe(acts, beliefs, train_seq, test_seq, mlp=True)
    assert folded.hook == "folded" and folded.kind == "mlp"
    linear_only = choose_probe(acts, beliefs, train_seq, test_seq, mlp=False)
    assert folded.r2 > linear_only.r2 + 0.1


def test_the_ridge_table_equals_one_probe_per_quantity_and_hook():
    rng = np.random.default_rng(5)
    acts = {"a": rng.normal(size=(50, 6, 8)), "b": rng.normal(size=(50, 6, 5))}
    targets = {"one": rng.normal(size=(50, 6, 1)), "three": rng.dirichlet(np.ones(3), size=(50, 6))}
    targets["one"] += acts["a"][..., :1]
    train_seq, test_seq = split_sequences(50, 0.2, seed=1)
    shuffle = rng.permutation(len(train_seq) * 6)
    table = ridge_r2_table(acts, targets, train_seq, test_seq)
    shuffled = ridge_r2_table(acts, targets, train_seq, test_seq, shuffle)
    for quantity, y in targets.items():
        for hook, x in acts.items():
            x_train, y_train = x[train_seq].reshape(-1, x.shape[-1]), y[train_seq].reshape(-1, y.shape[-1])
            x_test, y_test = x[test_seq].reshape(-1, x.shape[-1]), y[test_seq].reshape(-1, y.shape[-1])
            expected = r2_score(y_test, RidgeProbe.fit(x_train, y_train).predict(x_test))
            assert table[quantity][hook] == pytest.approx(expected, abs=1e-10)
            expected = r2_score(y_test, RidgeProbe.fit(x_train, y_train[shuffle]).predict(x_test))
            assert shuffled[quantity][hook] == pytest.approx(expected, abs=1e-10)
    assert table["one"]["a"] > 0.3 and shuffled["one"]["a"] < 0.1


def test_kl_of_a_distribution_with_itself_is_zero():
    p = np.random.default_rng(2).dirichlet(np.ones(4), size=10)
    assert kl_rows(p, p) == pytest.approx(0.0, abs=1e-12) and kl_rows(p, np.full_like(p, 0.25)) > 0


def tiny(folder, steps: int, log_checkpoints: int = 0):
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=10, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(steps=steps, batch_size=64, eval_every=steps, eval_size=128, device="cpu", log_checkpoints=log_checkpoints)
    train(RunConfig(task=task, model=model, train=settings), folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return load_run(tiny(tmp_path_factory.mktemp("probes") / "run", steps=600, log_checkpoints=2))


def test_each_headline_figure_is_read_at_its_models_own_best_hook():
    """The initialization is read at its own best hook, shuffled targets at the trained model's, the concatenated
    figure at the concatenation: the figures read these typed values, the headline names them."""
    table = ProbeTable(
        trained={"period": {"a": 0.1, "b": 0.9, "concat": 0.95}},
        random_init={"period": {"a": 0.3, "b": 0.2, "concat": 0.25}},
        shuffled={"period": {"a": -0.1, "b": 0.01, "concat": 0.0}},
    )
    best = {"trained": {"period": "b"}, "random_init": {"period": "a"}}
    assert [read_at(table, column, best)["period"] for column in ("trained", "random_init", "shuffled")] == [0.9, 0.3, 0.01]
    assert [read_at(table, column, best, "concat")["period"] for column in ("trained", "random_init", "shuffled")] == [0.95, 0.25, 0.0]
    assert read_at(None, "trained", best) == {}
    headline = _headline(["period"], best, table, None, None)
    assert headline == {
        "r2_linear/period": 0.9, "r2_linear_random_init/period": 0.3, "r2_linear_shuffled/period": 0.01,
        "r2_linear_concat/period": 0.95, "r2_linear_concat_random_init/period": 0.25, "r2_linear_concat_shuffled/period": 0.0,
    }  # fmt: skip


def test_at_step_zero_every_figure_is_its_initialization_control(tmp_path):
    """The step-0 checkpoint is the run's initialization: every probe there is its control, exactly."""
    run = load_run(tiny(tmp_path / "zero", steps=1, log_checkpoints=1), step=0)
    result = compute(run, "probes", n_sequences=48, mlp_rows=200, mlp_steps=10)
    for kind in KINDS:
        for quantity in result.quantities if kind != "kl_softmax" else result.distributions:
            assert result.headline[f"{kind}/{quantity}"] == result.headline[f"{kind}_random_init/{quantity}"]
    assert result.r2_mlp.trained == result.r2_mlp.random_init and result.kl_softmax.trained == result.kl_softmax.random_init
    suffixes = {"trained": "", "random_init": "_random_init", "shuffled": "_shuffled"}
    read = {f"{kind}{suffixes[column]}/{q}": value for kind in KINDS for column in suffixes for q, value in result.at_read_hook(kind, column).items()}
    assert read == result.headline  # what the figures read is what the headline says, name for name


def test_a_model_trained_for_one_step_sits_at_its_controls(tmp_path):
    """One step (at the warm-up's learning rate, lr / 100) moves each weight by about 3e-5 against an init
    scale of 0.02: the activations change by ~0.1 %, so every probe's gain over the initialization is within
    0.02 in R² (0.01 nats in KL) — the fits' own sensitivity — while training moves them by 0.3 and more
    (the trained test below). Shuffled targets give ≈ 0 or below."""
    run = load_run(tiny(tmp_path / "one", steps=1))
    result = compute(run, "probes", n_sequences=96, mlp_rows=600, mlp_steps=40)
    head = result.headline
    for quantity in result.quantities:
        for kind in ("r2_linear", "r2_linear_concat", "r2_mlp"):
            assert head[f"{kind}/{quantity}"] == pytest.approx(head[f"{kind}_random_init/{quantity}"], abs=0.02), (kind, quantity)
            assert head[f"{kind}_shuffled/{quantity}"] < 0.03, (kind, quantity)
    for quantity in result.distributions:
        assert head[f"kl_softmax/{quantity}"] == pytest.approx(head[f"kl_softmax_random_init/{quantity}"], abs=0.01), quantity


@pytest.mark.slow
def test_a_trained_model_beats_its_initialization_and_shuffled_targets_with_every_probe(trained, tmp_path):
    result = compute(trained, "probes", n_sequences=512)
    head = result.headline
    # A short run (KL ~0.1): far from perfect probes, but far above what its initialization gives. The MLP reads
    # the period and the target well above the initialization; this run holds the period only non-linearly
    # (its ridge and softmax probes read no more of it than the initialization's), so the linear figures are
    # checked on what it does hold linearly.
    for quantity in ("period", "target", "next_is_target", "predictive"):
        assert head[f"r2_mlp/{quantity}"] > head[f"r2_mlp_random_init/{quantity}"] + 0.2, quantity
    for quantity in ("next_is_target", "predictive"):
        assert head[f"r2_linear/{quantity}"] > head[f"r2_linear_random_init/{quantity}"] + 0.3, quantity
        assert head[f"r2_linear_concat/{quantity}"] > head[f"r2_linear_concat_random_init/{quantity}"] + 0.3, quantity
    assert head["r2_linear/target"] > head["r2_linear_random_init/target"] + 0.05
    assert head["kl_softmax/predictive"] < head["kl_softmax_random_init/predictive"] - 0.15
    # Shuffled targets: ≈ 0 or below. A ridge probe fitted to noise predicts about the mean; an MLP draws a random
    # function of the activations, which by chance follows the true quantity a little where the activations
    # hold it (up to a tenth either way), hence its wider bound.
    for quantity in result.quantities:
        assert head[f"r2_linear_shuffled/{quantity}"] < 0.03 and head[f"r2_linear_concat_shuffled/{quantity}"] < 0.03, quantity
        assert head[f"r2_mlp_shuffled/{quantity}"] < 0.1, quantity
    for quantity in ("target", "predictive"):
        assert head[f"kl_softmax_shuffled/{quantity}"] > head[f"kl_softmax/{quantity}"] + 0.05, quantity
    # Every kind of probe at every hook, on every model: the embedding alone cannot know the next target position.
    single = [hook for hook in result.hooks if hook != "concat"]
    for table in (result.r2_linear, result.r2_mlp):
        for column in (table.trained, table.random_init, table.shuffled):
            assert set(column) == set(result.quantities) and all(set(single) <= set(column[q]) for q in column)
    assert set(result.r2_softmax.trained) == set(result.distributions) == {"period", "target", "countdown", "predictive"}
    by_hook = result.r2_mlp.trained["next_is_target"]
    assert by_hook["blocks.1.hook_resid_post"] > by_hook["embed"] + 0.3
    paths = write_result(result, tmp_path / "analysis", step=trained.step)
    data = json.loads((tmp_path / "analysis" / "probes.json").read_text())
    assert data["headline"]["r2_mlp/period"] == pytest.approx(head["r2_mlp/period"])
    assert data["options"]["n_sequences"] == 512 and data["options"]["mlp_rows"] == 20000
    assert {p.name for p in paths} >= {"probes.json", "probes_headline.png", "probes_r2.png", "probes_scatter.svg"}
    again = read_result(paths[0])  # the result again from its file alone, and its figures redrawn from it
    assert again.headline == pytest.approx(head) and again.to_json() == result.to_json()
    assert [p.name for p in ANALYSES["probes"].draw(again, tmp_path / "again")] == [p.name for p in paths[1:]]
    assert ANALYSES["probes"].applies(trained) is None


@pytest.mark.slow
def test_over_training_the_last_point_is_the_latest_checkpoints_probe(trained, tmp_path, monkeypatch):
    """The latest checkpoint's probes ask for MLP and softmax probes (one Adam step on a few rows each: only
    their being left out over training is checked, not what they read). Their figures are drawn and redrawn by
    the test above; here only the curves' are drawn."""
    monkeypatch.setattr("nrecur.analysis.figures.probes.draw", lambda result, folder: [])
    options = {"n_sequences": 64, "mlp_steps": 1, "mlp_rows": 16}
    outcomes = analyze(trained, ["probes"], options, over_training=True, folder=tmp_path)
    over = next(o.result for o in outcomes if o.name == "probes_over_training")
    single = next(o.result for o in outcomes if o.name == "probes")
    assert single.options.mlp and single.options.softmax and single.r2_mlp is not None
    assert over.options["mlp"] is False and over.options["softmax"] is False and list(over.steps) == list(trained.checkpoint_steps)
    assert "r2_mlp/period" not in over.series and "kl_softmax/period" not in over.series  # ridge probes only over training
    for quantity in single.quantities:
        for name in (f"r2_linear/{quantity}", f"r2_linear_random_init/{quantity}", f"r2_linear_shuffled/{quantity}"):
            assert over.series[name][-1] == pytest.approx(single.headline[name], abs=1e-12)
    assert (tmp_path / "probes_over_training.json").is_file() and (tmp_path / "probes_over_training_headline.png").is_file()
