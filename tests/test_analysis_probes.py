"""Probes (SPEC §5): the ridge probe against known answers, splits by sequence, a trained model vs its baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest

from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, probes, write_analysis
from nrecur.analysis.probes import RidgeProbe, choose_probe, kl_rows, r2_score, ridge_r2_table, split_sequences
from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig


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
    table = ridge_r2_table(acts, targets, train_seq, test_seq)
    for quantity, y in targets.items():
        for hook, x in acts.items():
            probe = RidgeProbe.fit(x[train_seq].reshape(-1, x.shape[-1]), y[train_seq].reshape(-1, y.shape[-1]))
            expected = r2_score(y[test_seq].reshape(-1, y.shape[-1]), probe.predict(x[test_seq].reshape(-1, x.shape[-1])))
            assert table[quantity][hook] == pytest.approx(expected, abs=1e-10)
    assert table["one"]["a"] > 0.3


def test_kl_of_a_distribution_with_itself_is_zero():
    p = np.random.default_rng(2).dirichlet(np.ones(4), size=10)
    assert kl_rows(p, p) == pytest.approx(0.0, abs=1e-12) and kl_rows(p, np.full_like(p, 0.25)) > 0


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    folder = tmp_path_factory.mktemp("probes") / "run"
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=10, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64)
    config = RunConfig(task=task, model=model, train=TrainConfig(steps=600, batch_size=64, eval_every=600, eval_size=128, device="cpu"))
    train(config, folder, progress=False)
    return load_run(folder)


@pytest.mark.slow
def test_probes_on_a_trained_model_beat_a_fresh_model_and_shuffled_targets(trained, tmp_path):
    result = probes(trained, n_sequences=512, seed=0)
    head = result.headline
    # A short run (KL ~0.1): far from perfect probes, but far above what a fresh model of the same shape gives.
    assert head["r2_linear/predictive"] > head["r2_random_init/predictive"] + 0.3
    assert head["r2_linear/next_is_target"] > head["r2_random_init/next_is_target"] + 0.3
    for quantity in result.quantities:
        assert abs(head[f"r2_shuffled/{quantity}"]) < 0.05
    assert set(result.hooks) >= {"embed", "blocks.1.hook_resid_post", "ln_final.hook_normalized", "concat"}
    # MLP probes at every layer output: the embedding alone cannot know whether the next position is a target.
    assert set(result.r2_mlp_by_layer) == set(result.quantities) - {"predictive"}
    by_layer = result.r2_mlp_by_layer["next_is_target"]
    assert set(by_layer) == {"embed", "blocks.0.hook_resid_post", "blocks.1.hook_resid_post"}
    assert by_layer["blocks.1.hook_resid_post"] > by_layer["embed"] + 0.3
    paths = write_analysis(result, tmp_path / "analysis")
    data = json.loads((tmp_path / "analysis" / "probes.json").read_text())
    assert data["headline"]["r2_linear/target"] == pytest.approx(head["r2_linear/target"])
    assert all(path.exists() for path in paths) and {p.suffix for p in paths} == {".json", ".png", ".svg"}
    assert ANALYSES["probes"].applies(trained) is None


@pytest.mark.slow
def test_updates_on_a_deterministic_run_is_one_line_and_writes_nothing(trained, capsys):
    from nrecur.cli import main

    folder = trained.path
    before = sorted(p.name for p in folder.rglob("*"))
    assert main(["analyze", str(folder), "--what", "updates"]) == 2
    err = capsys.readouterr().err
    assert "does not apply" in err and "deterministic" in err and err.count("\n") == 1
    assert sorted(p.name for p in folder.rglob("*")) == before


@pytest.mark.slow
def test_the_last_point_over_training_is_the_latest_checkpoints_probe(trained):
    from nrecur.analysis.probes import probes_over_training

    single = probes(trained, n_sequences=256, seed=3, mlp=False)
    assert single.mlp_rows is None and single.to_json()["mlp_rows"] is None  # the report then states no MLP rows
    over = probes_over_training(trained, [trained.step], lambda step: trained, n_sequences=256, seed=3)
    for quantity in single.quantities:
        assert over.r2_best[quantity][-1] == pytest.approx(single.headline[f"r2_linear/{quantity}"], abs=1e-12)
        assert over.r2_concat[quantity][-1] == pytest.approx(single.headline[f"r2_linear_concat/{quantity}"], abs=1e-12)
