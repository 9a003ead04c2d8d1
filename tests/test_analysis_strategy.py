"""The strategy analysis: stand-in models that are the memorizing observer, the general one and a known mixture
are recovered through the same code path as a trained model; a model trained one step sits at its control."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, compute, read_result, write_result
from nrecur.analysis.strategy import fit_weight, two_observers
from nrecur.cli import main
from nrecur.model import GPTConfig
from nrecur.tasks import ModularICL
from nrecur.train import RunConfig, TrainConfig

SMALL = {"n_sequences": 64, "seed": 3}


def _train(folder, task, n_ctx: int, steps: int, **options):
    model = GPTConfig(vocab_size=task.vocab_size, n_ctx=n_ctx, d_model=32, n_layers=1, n_heads=2, d_head=16, d_mlp=64)
    settings = dict(steps=steps, batch_size=32, lr=3e-3, warmup_steps=0, eval_every=max(steps // 4, 1), eval_size=128, device="cpu", log_checkpoints=3)
    train(RunConfig(task=task, model=model, train=TrainConfig(**{**settings, **options})), folder, progress=False)
    return load_run(folder)


@pytest.fixture(scope="module")
def nrec_run(tmp_path_factory):
    task = NRecurrence(vocab_size=6, periods=(2, 3), p_noise=0.05, target_outside=True)
    return _train(tmp_path_factory.mktemp("strategy") / "nrec", task, 16, 60, held_out_fraction=0.25)


@pytest.fixture(scope="module")
def modular_run(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("strategy") / "modular", ModularICL(p=5, n_examples=4, n_tasks=8), 11, 8)


class MixtureModel(nn.Module):
    """A stand-in 'model' whose predictive is ``w·O_mem + (1 − w)·O_gen`` of the run (``O_gen`` where ``O_mem``
    gives the sequence probability zero)."""

    def __init__(self, run, w: float) -> None:
        super().__init__()
        self.task, self.pair, self.w = run.task, two_observers(run), w
        self.dummy = nn.Parameter(torch.zeros(()))  # gives the analysis a device

    def forward(self, tokens):
        tokens = tokens.cpu().numpy()
        mem = np.asarray(self.task.posterior(tokens, impossible="inf", **self.pair.memorizing).predictive, dtype=float)
        gen = np.asarray(self.task.posterior(tokens, **self.pair.general).predictive, dtype=float)
        mixture = np.where(np.isfinite(mem), self.w * mem + (1 - self.w) * gen, gen)
        return torch.as_tensor(mixture).clamp_min(1e-300).log()


@pytest.mark.parametrize("which", ["nrec_run", "modular_run"])
@pytest.mark.parametrize("w", [1.0, 0.0, 0.3, 0.75])
def test_stand_ins_that_are_an_observer_or_a_mixture_give_their_weight_back(which, w, request):
    run = request.getfixturevalue(which)
    stand_in = dataclasses.replace(run, model=MixtureModel(run, w))
    result = compute(stand_in, "strategy", **SMALL, over_training=False)
    assert result.steps == [run.step] and result.coverage["id"] == 1.0
    for split in ("id", "ood"):
        assert result.headline[f"w_final/{split}"] == pytest.approx(w, abs=0.02), split
        assert result.headline[f"kl_unexplained/{split}"] < 1e-3  # the mixture explains it
        # the controls: the initialization is far from every mixture
        assert result.headline[f"kl_unexplained_random_init/{split}"] > 100 * result.headline[f"kl_unexplained/{split}"]
        by_position = np.asarray(getattr(result.checkpoints[-1], split).w_by_position, dtype=float)
        told_apart = np.isfinite(by_position)
        assert told_apart.sum() >= 3 and np.abs(by_position[told_apart] - w).max() < 0.05
    assert result.separation["id"] > 0.01 and result.separation["ood"] > 0.01  # the observers differ on both kinds
    if w == 1.0:
        assert result.headline["kl_mem/id"] < 1e-9
    if w == 0.0:
        assert result.headline["kl_gen/ood"] < 1e-9 and result.checkpoints[-1].id.kl_gen < 1e-9


def test_the_weight_is_the_minimizer_of_the_mean_kl_over_a_grid():
    rng = np.random.default_rng(0)
    mem, gen, model = (rng.dirichlet(np.ones(5), size=(7, 4)) for _ in range(3))
    valid = rng.random((7, 4)) > 0.2
    w, kl = fit_weight(model, mem, gen, valid, floor=1e-6)
    grid = np.linspace(0, 1, 2001)
    mixture = lambda g: (1 - 1e-6) * (g * mem + (1 - g) * gen) + 1e-6 / 5  # noqa: E731
    objective = [float((model * np.log(model / mixture(g))).sum(-1)[valid].mean()) for g in grid]
    assert w == pytest.approx(grid[int(np.argmin(objective))], abs=1e-3)
    assert min(objective) - 1e-6 < kl <= min(objective) + 1e-12  # at least as good as the grid's best
    # at a boundary: a model that is the memorizer itself
    w, kl = fit_weight(mem, mem, gen, valid, floor=1e-6)
    assert w == pytest.approx(1.0, abs=1e-6) and kl < 1e-5
    w_pos, _ = fit_weight(model, mem, mem, valid, floor=1e-6, by_position=True)  # observers that agree: no weight
    assert np.isnan(w_pos).all()


def test_a_model_trained_one_step_sits_at_its_control(tmp_path):
    task = NRecurrence(vocab_size=6, periods=(2, 3), p_noise=0.05, target_outside=True)
    run = _train(tmp_path / "one", task, 16, 1, held_out_fraction=0.25)
    result = compute(run, "strategy", **SMALL)
    for split in ("id", "ood"):
        assert result.headline[f"w_final/{split}"] == pytest.approx(result.headline[f"w_final_random_init/{split}"], abs=0.05)
        assert result.headline[f"kl_unexplained/{split}"] == pytest.approx(result.headline[f"kl_unexplained_random_init/{split}"], rel=0.1)
    assert result.headline["kl_mem/id"] == pytest.approx(result.headline["kl_mem_random_init/id"], rel=0.1)


def test_the_icl_grokking_delay_is_the_positive_difference_only():
    from nrecur.analysis.strategy import icl_grokking_delay

    assert icl_grokking_delay(100, 350) == 250.0
    for fit, general in ((100, 100), (300, 100), (None, 100), (100, None)):
        assert math.isnan(icl_grokking_delay(fit, general)), (fit, general)


def test_fit_and_generalization_steps_are_read_from_the_runs_evaluations(nrec_run):
    steps, fit_kl = nrec_run.metric("in_dist_mem/kl")
    _, general_kl = nrec_run.metric("out_dist/kl")
    threshold = float(np.median(fit_kl))  # some evaluations reach it, some do not
    run = dataclasses.replace(nrec_run, config=nrec_run.config.model_copy(update={"train": nrec_run.config.train.model_copy(update={"kl_threshold": threshold})}))
    result = compute(run, "strategy", **SMALL)
    assert result.steps_from == "log" and result.steps == run.checkpoint_steps
    expected_fit = next(s for s, v in zip(steps, fit_kl) if v <= threshold)
    expected_general = next((s for s, v in zip(steps, general_kl) if v <= threshold), None)
    assert result.fit_step == expected_fit and result.headline["fit_step"] == expected_fit
    assert result.generalization_step == expected_general
    if expected_general is None or expected_general <= expected_fit:
        assert math.isnan(result.headline["icl_grokking_delay"])
    else:
        assert result.headline["icl_grokking_delay"] == expected_general - expected_fit
    assert result.checkpoints[0].step == 0 and result.checkpoints[0].id.w == pytest.approx(result.random_init.id.w)  # step 0 is the initialization


def test_the_cli_writes_the_result_and_its_figures_and_they_rebuild_from_json(nrec_run, tmp_path, capsys):
    assert main(["analyze", str(nrec_run.path), "--what", "strategy", "--sequences", "32"]) == 0
    folder = nrec_run.path / "analysis"
    data = json.loads((folder / "strategy.json").read_text())
    assert data["figures"] == ["strategy.png", "strategy.svg", "strategy_by_position.png", "strategy_by_position.svg"]
    again = read_result(folder / "strategy.json")
    assert again.options.n_sequences == 32 and len(again.checkpoints) == len(nrec_run.checkpoint_steps)
    assert again.checkpoints[-1].ood.w_by_position == pytest.approx(tuple(data["checkpoints"][-1]["ood"]["w_by_position"]), nan_ok=True)
    assert {p.name for p in ANALYSES["strategy"].draw(again, tmp_path / "redrawn")} == set(data["figures"])
    assert "strategy" in (main(["analyze", "--list"]) == 0 and capsys.readouterr().out)


def test_a_run_with_one_observer_is_refused_in_one_line(tmp_path):
    run = _train(tmp_path / "plain", NRecurrence(vocab_size=4, periods=(2, 3)), 12, 1)
    reason = ANALYSES["strategy"].applies(run)
    assert reason and "held_out_fraction" in reason and "\n" not in reason
    everything = ModularICL(p=3, n_examples=3, n_tasks=9)
    run = dataclasses.replace(run, config=run.config.model_copy(update={"task": everything}))
    assert "every task vector is a training vector" in ANALYSES["strategy"].applies(run)
    assert main(["analyze", str(tmp_path / "plain"), "--what", "strategy"]) == 2
