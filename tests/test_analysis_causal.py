"""Causal variables: distributed alignment search against the observer's counterfactual.

A hand-built stand-in whose activation holds the target and the timing in known coordinates goes through
the search's own code (:mod:`nrecur.analysis.das`); the analysis on a model trained for one step sits at its
controls.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nrecur import NRecurrence
from nrecur.analysis.das import Site, fit_subspace, frozen, principal_angles, random_basis, score
from nrecur.observer.counterfactual import counterfactual

V, PERIODS, NOISE = 8, (2, 3, 4, 5), 6
CELLS = [(n, c) for n in PERIODS for c in range(n)]
D_MODEL = V + len(CELLS) + NOISE
RANKS = (1, 2, 4, 8, 16)


def stand_in(n_pairs: int, seed: int):
    """Pairs of certain deterministic sequences, an activation ``[pair, 1, d_model]`` per sequence with the
    target one-hot in coordinates ``0..V-1``, the next position's ``(n, c)`` one-hot in the next ``Σn``, and
    noise in the rest; a readout that predicts like the observer from those coordinates; the counterfactuals."""
    task = NRecurrence(vocab_size=V, periods=PERIODS)
    rng = np.random.default_rng(seed)

    def encode(batch):
        h = np.zeros((len(batch.tokens), 1, D_MODEL), dtype=np.float32)
        n, t = batch.period[:, -1], batch.target[:, -1]
        c = (batch.countdown[:, -1] - 1) % n  # the countdown of the predicted position
        h[np.arange(len(h)), 0, t] = 1.0
        h[np.arange(len(h)), 0, V + np.array([CELLS.index((int(a), int(b))) for a, b in zip(n, c)])] = 1.0
        h[:, 0, V + len(CELLS) :] = rng.normal(size=(len(h), NOISE))
        return torch.as_tensor(h)

    base, source = task.sample(n_pairs, 24, seed), task.sample(n_pairs, 24, seed + 1)
    on_target = torch.zeros(D_MODEL)
    on_target[[V + CELLS.index((n, 0)) for n in PERIODS]] = 1.0

    def run(activation, pairs):  # [row, 1, d_model] → logits [row, vocab]
        h = activation[:, -1]
        target_next = h @ on_target  # [row]
        return 12.0 * (2.0 * target_next - 1.0)[:, None] * h[:, :V]

    site = Site(base=encode(base), source=encode(source), positions=torch.ones(1, dtype=torch.bool), run=run)
    targets = {v: counterfactual(task, base.tokens, source.tokens, v).predictive[:, -1] for v in ("what", "when")}
    return site, targets


def halves(site: Site, split: int) -> tuple[Site, Site]:
    train = Site(site.base[:split], site.source[:split], site.positions, site.run)
    test = Site(site.base[split:], site.source[split:], site.positions, site.run)
    return train, test


@pytest.mark.slow
def test_the_search_finds_the_coordinates_a_hand_built_stand_in_keeps_each_variable_in():
    site, targets = stand_in(768, seed=3)
    train, test = halves(site, 512)
    found, scored = {}, {}
    for variable in ("what", "when"):
        found[variable] = fit_subspace(train, torch.as_tensor(targets[variable][:512]), RANKS, steps=1000, batch_size=64, lr=0.01, seed=0)
        scored[variable] = score(test, targets[variable][512:], found[variable], RANKS)
    control = random_basis(D_MODEL, 16, torch.Generator().manual_seed(1))
    # The target's differences span V - 1 = 7 coordinates: rank 8 holds them, lower ranks do not.
    assert scored["what"].iia[RANKS.index(8)] >= 0.8 and scored["what"].iia[RANKS.index(16)] >= 0.85
    assert scored["what"].iia[0] <= 0.3
    assert score(test, targets["what"][512:], control, RANKS).iia[RANKS.index(8)] <= 0.3
    # The readout needs one timing coordinate only (is the next position a target position?).
    assert scored["when"].iia[0] >= 0.95
    # The what-subspace lies in the target's coordinates, orthogonal to the timing's.
    what = found["what"][:, :8]
    assert float((what[:V] ** 2).sum()) / 8 >= 0.6
    when = found["when"][:, :1]
    assert float((when[V : V + len(CELLS)] ** 2).sum()) >= 0.9


@pytest.mark.xfail(
    strict=True,
    reason="known limitation of the search: rank 8 holds one direction more than the target's 7, and that free "
    "direction drifts toward the timing coordinate (smallest angle 53 degrees at 1000 steps, 46 at 3000), so principal "
    "angles between subspaces wider than a variable needs understate how apart the variables are",
)
def test_the_subspaces_found_for_the_two_variables_of_the_stand_in_are_far_apart():
    site, targets = stand_in(768, seed=3)
    train, _ = halves(site, 512)
    found = {v: fit_subspace(train, torch.as_tensor(targets[v][:512]), RANKS, steps=1000, batch_size=64, lr=0.01, seed=0) for v in ("what", "when")}
    assert np.degrees(principal_angles(found["what"][:, :8], found["when"][:, :1])).min() >= 60


def test_the_stand_in_with_its_coordinates_scrambled_is_still_found_by_rotation():
    """A rotation of the whole activation moves the coordinates; the search learns a rotation, so it finds them.
    It trains each rank one step in five, so rank 16 needs 3000 steps to reach 0.85 for every seed tried (0..3)."""
    site, targets = stand_in(768, seed=4)
    rotation = random_basis(D_MODEL, D_MODEL, torch.Generator().manual_seed(2))
    readout = site.run
    turned = Site(site.base @ rotation.T, site.source @ rotation.T, site.positions, lambda activation, pairs: readout(activation @ rotation, pairs))
    train, test = halves(turned, 512)
    basis = fit_subspace(train, torch.as_tensor(targets["what"][:512]), RANKS, steps=3000, batch_size=64, lr=0.01, seed=0)
    assert score(test, targets["what"][512:], basis, RANKS).iia[RANKS.index(16)] >= 0.85


def test_the_search_depends_on_its_seed_alone_not_on_torchs_global_random_state():
    site, targets = stand_in(64, seed=5)
    fit = lambda: fit_subspace(site, torch.as_tensor(targets["what"]), RANKS, steps=20, batch_size=16, lr=0.01, seed=0)
    torch.manual_seed(0)
    first = fit()
    torch.manual_seed(1)
    state = torch.get_rng_state()
    second = fit()
    assert torch.equal(first, second)
    assert torch.equal(torch.get_rng_state(), state)  # and it leaves the global state as it found it


def test_principal_angles_of_known_subspaces():
    eye = torch.eye(4)
    np.testing.assert_allclose(np.degrees(principal_angles(eye[:, :2], eye[:, 2:])), [90, 90], atol=1e-6)
    tilted = torch.stack([torch.tensor([1.0, 0, 0, 0]), torch.tensor([0, np.cos(0.3), np.sin(0.3), 0])], 1)
    np.testing.assert_allclose(principal_angles(eye[:, :2], tilted), [0.0, 0.3], atol=1e-6)


def test_frozen_restores_the_mode_and_each_parameters_gradient_flag_even_on_error():
    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.Linear(3, 1)).train()
    model[1].weight.requires_grad_(False)  # one already frozen: it stays so
    flags = [p.requires_grad for p in model.parameters()]
    with pytest.raises(RuntimeError, match="inside"):
        with frozen(model):
            assert not model.training and not any(p.requires_grad for p in model.parameters())
            raise RuntimeError("inside")
    assert model.training and [p.requires_grad for p in model.parameters()] == flags == [True, True, False, True]


# ---------------------------------------------------------------------------- the analysis


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    from nrecur import train
    from nrecur.model import GPTConfig
    from nrecur.train import RunConfig, TrainConfig

    task = NRecurrence(vocab_size=4, periods=(2, 3, 4))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
    settings = TrainConfig(steps=1, batch_size=16, eval_every=1, eval_size=32, device="cpu")
    folder = tmp_path_factory.mktemp("causal") / "run"
    train(RunConfig(task=task, model=model, train=settings), folder, progress=False)
    return folder


SMALL = dict(train_pairs=128, test_pairs=256, steps=60, ranks=(1, 2, 4, 8))


def test_a_model_trained_for_one_step_sits_at_its_controls(one_step_run):
    from nrecur import load_run
    from nrecur.analysis import compute

    result = compute(load_run(one_step_run), "causal", **SMALL)
    head = result.headline
    for variable in ("what", "when", "both"):
        assert abs(head[f"iia_{variable}"] - head[f"iia_{variable}_random_init"]) <= 0.12, variable
    assert 0 <= head["subspace_overlap"] <= 1 and head["dim_joint_states"] == 4 * 9 - 1 and head["dim_factored_states"] == 9 + 4 - 2
    hooks = {cell.hook for cell in result.trained.cells}
    assert hooks == {"blocks.0.hook_resid_pre", "blocks.0.hook_resid_mid", "blocks.0.hook_resid_post"}
    assert [(c.hook, c.positions) for c in result.trained.cells].count(("blocks.0.hook_resid_mid", "all")) == 0  # after the last attention


def test_the_analysis_writes_its_result_and_figures_and_reads_them_back(one_step_run, tmp_path):
    from nrecur import load_run
    from nrecur.analysis import analyze, read_result
    from nrecur.analysis.causal import CausalResult

    outcomes = analyze(load_run(one_step_run), ["causal"], dict(SMALL, steps=5, positions=("last",)), folder=tmp_path)
    assert [o.status for o in outcomes] == ["wrote"]
    again = read_result(tmp_path / "causal.json")
    assert isinstance(again, CausalResult) and again.best["what"].hook == outcomes[0].result.best["what"].hook
    assert sorted(p.name for p in tmp_path.glob("causal_*.png")) == ["causal_best.png", "causal_hooks.png", "causal_subspaces.png"]


def test_bad_options_name_the_problem(one_step_run):
    from nrecur import load_run
    from nrecur.analysis import OptionError, compute

    with pytest.raises(OptionError, match="ranks"):
        compute(load_run(one_step_run), "causal", ranks=(4, 2))
    with pytest.raises(OptionError, match="positions"):
        compute(load_run(one_step_run), "causal", positions=("first",))


def test_each_variable_is_reported_on_held_out_pairs_at_the_cell_best_on_the_selection_pairs(one_step_run):
    from nrecur import load_run
    from nrecur.analysis import compute

    result = compute(load_run(one_step_run), "causal", **dict(SMALL, select_pairs=128, steps=20))
    ranks = SMALL["ranks"]
    for variable in ("what", "when", "both"):
        for found, best, suffix in ((result.trained, result.best, ""), (result.random_init, result.best_random_init, "_random_init")):
            rows = [
                (-np.nan_to_num(cell.iia_select[variable][r], nan=-1.0), cell.kl_select[variable][r], ranks[r], index, r)
                for index, cell in enumerate(found.cells) for r in range(len(ranks))
            ]  # fmt: skip
            _, _, _, index, r = sorted(rows)[0]
            assert (best[variable].cell, best[variable].rank) == (index, ranks[r]), (variable, suffix)
            assert result.headline[f"iia_{variable}{suffix}"] == found.cells[index].iia[variable][r]
            assert best[variable].iia_select == found.cells[index].iia_select[variable][r]
        # selection and held-out pairs are other pairs: their IIAs are not the same numbers everywhere
        cells = result.trained.cells
        assert any(c.iia[variable] != c.iia_select[variable] for c in cells)


def test_causal_runs_when_named_and_not_under_all(one_step_run):
    from nrecur import load_run
    from nrecur.analysis.driver import choose
    from nrecur.cli.analyze import list_analyses

    run = load_run(one_step_run)
    chosen, skipped = choose(run, ["all"])
    assert "causal" not in [a.name for a in chosen] and "probes" in [a.name for a in chosen]
    assert "--what causal" in dict(skipped)["causal"]
    assert [a.name for a in choose(run, ["causal"])[0]] == ["causal"]
    assert "causal" in [a.name for a in choose(run, ["all", "causal"])[0]]
    from nrecur.analysis import ANALYSES

    blocks, name = {}, None
    for line in list_analyses().splitlines():
        head = line.split(":", 1)[0]
        name = head if head in ANALYSES and line.startswith(f"{head}: ") else name
        blocks.setdefault(name, []).append(line)
    assert any("under --what all: no" in line for line in blocks["causal"])
    assert not any("under --what all" in line for line in blocks["probes"])
