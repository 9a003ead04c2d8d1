"""The local learning coefficient: the estimator recovers a known λ at its default settings, moves the right way
when parameters stop mattering, leaves the model as it was; progress estimates it per checkpoint when asked."""

from __future__ import annotations

import json

import pytest
import torch

from llc_reference import softmax_regression
from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, compute
from nrecur.analysis.llc import estimate_llc
from nrecur.analysis.progress import LLC_DEFAULTS, ProgressResult
from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig

CALIBRATION_SCALE = 12.0
"""Feature scale of the calibration model: its loss's top Hessian eigenvalue is of the size a small trained
transformer's is (benchmarks/bench_llc_calibration.py prints both)."""


def test_the_default_sampler_recovers_the_known_llc_of_a_softmax_regression():
    """λ = (K − 1)·p/2 = 8 for 5 classes and 4 features (the shift symmetry removes 4 of the 20 parameters):
    recovered within 20 % at the defaults, and not by counting parameters (20 / 2 = 10 is outside)."""
    known = softmax_regression(scale=CALIBRATION_SCALE)
    estimate = estimate_llc(known.model, known.loss, known.pool, LLC_DEFAULTS, seed=0)
    assert known.llc == 8.0
    assert estimate.mean == pytest.approx(known.llc, rel=0.2)
    assert abs(estimate.mean - known.llc) < abs(estimate.mean - 10.0) + 0.5
    assert estimate.diverged == 0 and len(estimate.per_chain) == LLC_DEFAULTS.chains and estimate.std > 0


def test_a_duplicated_feature_lowers_the_llc_by_the_directions_it_makes_flat():
    """A copied feature makes K − 1 = 4 more directions flat: λ 8 → 6. The estimate falls, by about 2."""
    full = softmax_regression(scale=CALIBRATION_SCALE, seed=1)
    duplicated = softmax_regression(scale=CALIBRATION_SCALE, seed=1, duplicate=True)
    assert duplicated.llc == full.llc - 2
    high = estimate_llc(full.model, full.loss, full.pool, LLC_DEFAULTS, seed=0).mean
    low = estimate_llc(duplicated.model, duplicated.loss, duplicated.pool, LLC_DEFAULTS, seed=0).mean
    assert low < high
    assert high - low == pytest.approx(2.0, abs=1.5)
    assert low == pytest.approx(duplicated.llc, rel=0.25)


def test_the_estimator_restores_the_model_and_is_reproducible():
    known = softmax_regression(n=500)
    before = known.model.weight.detach().clone()
    settings = LLC_DEFAULTS.__class__(**{**LLC_DEFAULTS.__dict__, "draws": 20, "burnin": 5, "chains": 2})
    first = estimate_llc(known.model, known.loss, known.pool, settings, seed=3)
    assert torch.equal(known.model.weight, before) and known.model.weight.grad is None
    assert estimate_llc(known.model, known.loss, known.pool, settings, seed=3) == first
    assert estimate_llc(known.model, known.loss, known.pool, settings, seed=4) != first


def test_progress_with_llc_estimates_every_checkpoint_and_the_initialization_and_reads_back(tmp_path):
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=32, n_layers=1, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(steps=40, batch_size=64, eval_every=20, eval_size=128, device="cpu", log_checkpoints=2)
    train(RunConfig(task=task, model=model, train=settings), tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    small = dict(n_sequences=64, head_sequences=32, llc_chains=2, llc_draws=30, llc_burnin=10)
    plain = compute(run, "progress", n_sequences=64, head_sequences=32)
    result = compute(run, "progress", llc=True, **small)
    assert plain.llc == () and plain.llc_random_init is None and "llc" not in plain.headline
    assert [m.step for m in result.checkpoints] == run.checkpoint_steps and len(result.llc) == len(run.checkpoint_steps)
    head = result.headline
    assert head["llc"] == result.llc[-1].mean and head["llc_random_init"] == result.llc_random_init.mean
    assert all(len(e.per_chain) == 2 and e.std >= 0 for e in result.llc)
    # The measures are unchanged by the sampler (it restores every weight).
    assert result.checkpoints == plain.checkpoints and result.random_init == plain.random_init
    # Step 0 is the initialization: the same model, the same chains.
    assert result.llc[0] == result.llc_random_init
    again = ProgressResult.from_json(json.loads(json.dumps(result.to_json())))
    assert again == result
    # A result written without the LLC (the fields absent) still reads.
    old = plain.to_json()
    for name in ("llc", "llc_random_init", "strategy_weight"):
        old.pop(name)
    assert ProgressResult.from_json(old) == plain
    paths = ANALYSES["progress"].draw(result, tmp_path / "figures")
    assert sorted(p.suffix for p in paths) == [".png", ".svg"] and all(p.stat().st_size > 0 for p in paths)
