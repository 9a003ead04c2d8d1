"""Static and behavioural prior (SPEC §5): every static estimator on hand-built models whose prior is known (a skew
comes out skewed, the right way round), the headline's correlation on such models, the control is the run's own
initialization, the behavioural fit on the observer itself, the emission inversion against sampled data."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nrecur import Mess3, NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, OptionError, compute, read_result, write_result
from nrecur.analysis.prior import PriorOptions, PriorResult, compare, emission_affine, fit_prior, prior_applies, prior_from_marginal, static_priors
from nrecur.analysis.prior import compute as compute_prior
from nrecur.analysis.prior_estimators import PERIOD_ESTIMATORS, TARGET_ESTIMATORS, StaticEstimator
from nrecur.analysis.prior_validation import HAND_BUILT, head_counts_model, known_prior, validate
from nrecur.cli import main
from nrecur.model import GPT, GPTConfig
from nrecur.train import RunConfig, TrainConfig

ZIPF = tuple(float(x) for x in (1 / np.arange(1, 9)) / (1 / np.arange(1, 9)).sum())
TASK = NRecurrence(vocab_size=8, periods=(2, 3, 4, 5), target_prior=ZIPF)
SKEWED = NRecurrence(vocab_size=6, periods=(2, 3, 4), target_prior=tuple(known_prior("target", 6)), period_prior=tuple(known_prior("period", 3)))


def _read(quantity: str, name: str, model: GPT, task: NRecurrence) -> np.ndarray:
    targets, periods, _ = static_priors(model, task)
    return (targets if quantity == "target" else periods)[name]


def test_first_token_marginal_is_the_affine_emission_of_the_target_prior():
    task = NRecurrence(vocab_size=8, periods=(2, 3, 4, 5), target_prior=ZIPF, period_prior=(0.5, 0.25, 0.15, 0.1), p_noise=0.1)
    alpha, beta = emission_affine(task, task.period_probs)
    tokens = np.asarray(task.sample(40_000, 2, seed=3).tokens)[:, 0]
    empirical = np.bincount(tokens, minlength=8) / len(tokens)
    np.testing.assert_allclose(empirical, alpha * task.target_probs + beta, atol=0.008)
    np.testing.assert_allclose(prior_from_marginal(task, alpha * task.target_probs + beta, task.period_probs), task.target_probs, atol=1e-9)


@pytest.mark.parametrize("quantity, table", [("target", TARGET_ESTIMATORS), ("period", PERIOD_ESTIMATORS)])
def test_every_static_estimator_returns_the_known_prior_of_the_hand_built_models_it_reads_both_ways_round(quantity, table):
    size = TASK.vocab_size if quantity == "target" else TASK.n_periods
    skew = np.asarray(ZIPF) if quantity == "target" else known_prior("period", size)  # periods: whole numbers of heads
    models = {name: built for name, built in HAND_BUILT.items() if built.quantity == quantity}
    assert {m for e in table.values() for m in e.reads} <= set(models) and all(e.reads for e in table.values())
    for model_name, built in models.items():
        for prior in (skew, skew[::-1]):
            model = built.build(TASK, 16, prior)
            for name, estimator in table.items():
                estimate = _read(quantity, name, model, TASK)
                if model_name in estimator.reads:
                    np.testing.assert_allclose(estimate, prior, atol=1e-4, err_msg=f"{name} on {model_name}")
                    assert compare(prior, estimate)["corr"] == pytest.approx(1.0, abs=1e-6)
                else:  # the prior is where this estimator does not look: it sees nothing there
                    np.testing.assert_allclose(estimate, 1 / size, atol=1e-6, err_msg=f"{name} on {model_name}")


def test_a_skewed_period_prior_comes_out_skewed_the_right_way_round():
    """Short periods favoured, then long ones: the estimates follow, the highest where the prior is highest."""
    favoured_short = known_prior("period", 4)
    for prior in (favoured_short, favoured_short[::-1]):
        _, periods, _ = static_priors(head_counts_model(TASK, 16, prior), TASK)
        for name, values in periods.items():
            assert np.argmax(values) == np.argmax(prior) and np.argmin(values) == np.argmin(prior), name
            assert np.all(np.diff(values) < 0) == np.all(np.diff(prior) < 0), name


def test_validation_passes_every_estimator_and_fails_a_wrong_one(monkeypatch):
    checks = validate(TASK, 32)
    assert {c.estimator for c in checks} == set(TARGET_ESTIMATORS) | set(PERIOD_ESTIMATORS)
    assert all(c.passed and c.distance < 1e-4 for c in checks), [(c.estimator, c.model, c.distance) for c in checks if not c.passed]
    # An estimator that reads the right weights but answers the wrong way round fails its check.
    backwards = StaticEstimator(lambda model, task: PERIOD_ESTIMATORS["qk_pos"].estimate(model, task)[::-1], ("head_counts",), "reversed qk_pos")
    monkeypatch.setitem(PERIOD_ESTIMATORS, "backwards", backwards)
    failed = [c for c in validate(TASK, 32) if c.estimator == "backwards"]
    assert failed and not any(c.passed for c in failed) and failed[0].distance > 0.2


def _stand_in(task: NRecurrence, model: GPT, n_ctx: int = 12) -> SimpleNamespace:
    """A run whose model is ``model`` (its initialization: a fresh model of the config's shape)."""
    config = RunConfig(task=task, model=GPTConfig(vocab_size=task.vocab_size, n_ctx=n_ctx, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32),
                       train=TrainConfig(steps=1, device="cpu"))  # fmt: skip
    return SimpleNamespace(task=task, model=model, config=config, step=0, path=Path("nowhere"))


@pytest.mark.parametrize("direction, sign", [(1, 1.0), (-1, -1.0)])
def test_the_headline_correlation_of_a_model_holding_the_prior_or_its_reverse(direction, sign):
    """``static_*_corr`` is +1 on a model built for the task's prior and -1 on one built for its reverse."""
    options = PriorOptions(n_sequences=32, fit_iterations=2, target_estimator="direct")
    targets = compute_prior(_stand_in(SKEWED, HAND_BUILT["embedding"].build(SKEWED, 12, SKEWED.target_probs[::direction])), options)
    assert targets.headline["static_target_corr"] == pytest.approx(sign, abs=1e-4)
    assert targets.headline["static_target_corr/mean_input"] == pytest.approx(sign, abs=1e-4)
    assert abs(targets.headline["static_target_corr_random_init"]) < 0.99  # a fresh model holds no such prior
    assert targets.headline["static_target_validated"] == 1.0
    periods = compute_prior(_stand_in(SKEWED, head_counts_model(SKEWED, 12, SKEWED.period_probs[::direction])), options)
    assert periods.headline["static_period_corr"] == pytest.approx(sign, abs=1e-4)
    assert periods.headline["static_period_kl"] == pytest.approx(0.0, abs=1e-6) if sign > 0 else periods.headline["static_period_kl"] > 0.1


def tiny(task, folder, steps, log_checkpoints=0, init_from=None):
    model = GPTConfig(vocab_size=task.vocab_size, n_ctx=10, d_model=32, n_layers=1, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(steps=steps, batch_size=64, eval_every=steps, eval_size=128, device="cpu", log_checkpoints=log_checkpoints)
    train(RunConfig(task=task, model=model, train=settings, init_from=init_from), folder, progress=False)
    return folder


def _static(estimates) -> dict:
    return {what: {name: e.values for name, e in estimates.of("static", what).items()} for what in ("target", "period")}


def test_a_model_trained_for_one_step_sits_at_its_control(tmp_path):
    """One step teaches no prior: every headline figure is what the initialization gives."""
    head = compute(load_run(tiny(SKEWED, tmp_path / "one", steps=1)), "prior", n_sequences=128, fit_iterations=10).headline
    for name in ("static_target_corr", "static_period_corr", "behavioural_target_corr", "static_vs_behavioural_target_corr"):
        assert head[name] == pytest.approx(head[f"{name}_random_init"], abs=0.1), name
    for name in ("static_target_kl", "static_period_kl", "behavioural_target_kl", "fit_kl"):
        assert head[name] == pytest.approx(head[f"{name}_random_init"], rel=0.1), name


@pytest.mark.slow
def test_the_control_is_the_runs_own_initialization(tmp_path):
    """At step 0 the model is its initialization: every estimate equals its control exactly. A fine-tune's
    control is its source's weights."""
    source = tiny(SKEWED, tmp_path / "source", steps=3, log_checkpoints=1)
    options = PriorOptions(n_sequences=32, fit_iterations=2)
    at_zero = compute_prior(load_run(source, step=0), options)
    assert _static(at_zero.trained) == _static(at_zero.random_init)
    for name, value in at_zero.headline.items():
        if name.replace("_random_init", "") != name:
            assert value == pytest.approx(at_zero.headline[name.replace("_random_init", "")], nan_ok=True), name
    finetuned = compute_prior(load_run(tiny(SKEWED, tmp_path / "ft", steps=2, init_from=str(source))), options)
    targets, periods, _ = static_priors(load_run(source).model, SKEWED)
    assert _static(finetuned.random_init) == {"target": {k: v.tolist() for k, v in targets.items()}, "period": {k: v.tolist() for k, v in periods.items()}}


def test_behavioural_fit_recovers_the_prior_when_the_model_is_the_observer_with_that_prior():
    truth = NRecurrence(vocab_size=6, periods=(2, 3, 4), target_prior=(0.4, 0.25, 0.15, 0.1, 0.06, 0.04), period_prior=(0.6, 0.3, 0.1))
    tokens = truth.sample(512, 8, seed=1).tokens
    predictive = truth.posterior(tokens).predictive  # [batch, pos, vocab]
    start = NRecurrence(vocab_size=6, periods=(2, 3, 4))  # the fit starts from uniform priors
    fit = fit_prior(start, tokens, predictive, iterations=80)
    np.testing.assert_allclose(fit.period, truth.period_probs, atol=0.03)
    np.testing.assert_allclose(fit.target, truth.target_probs, atol=0.03)
    assert fit.kl < 0.05 * fit.kl_start
    # Fitting one prior only leaves the other where it started.
    only_period = fit_prior(start, tokens, predictive, fit_target=False, iterations=10)
    np.testing.assert_allclose(only_period.target, 1 / 6, atol=1e-12)


def test_compare_reports_nan_correlation_for_a_uniform_prior_but_still_a_kl():
    uniform = np.full(4, 0.25)
    score = compare(uniform, [0.4, 0.3, 0.2, 0.1])
    assert np.isnan(score["corr"]) and score["kl"] == pytest.approx(np.sum(0.25 * np.log(0.25 / np.array([0.4, 0.3, 0.2, 0.1]))))
    assert compare([0.5, 0.3, 0.2], [0.5, 0.3, 0.2]) == {"corr": pytest.approx(1.0), "kl": pytest.approx(0.0)}


def test_the_analysis_refuses_tasks_without_targets_and_periods_and_unknown_estimators():
    model = GPT(GPTConfig(vocab_size=3, n_ctx=8, d_model=8, n_layers=1, n_heads=1, d_head=4, d_mlp=0))
    run = SimpleNamespace(task=Mess3(), model=model)
    why = prior_applies(run)
    assert why is not None and "n-recurrence" in why and "\n" not in why
    with pytest.raises(ValueError, match="does not apply"):
        compute_prior(run, PriorOptions())
    mismatched = SimpleNamespace(task=NRecurrence(vocab_size=4, periods=(2, 3)), model=model)
    assert "vocab_size" in prior_applies(mismatched)
    with pytest.raises(OptionError, match="unknown period estimator 'nope'; choose one of qk_pos, qk_pos_ov, mean_input_attn"):
        ANALYSES["prior"].make_options({"period_estimator": "nope"})


@pytest.fixture(scope="module")
def stand_in_result():
    run = _stand_in(SKEWED, HAND_BUILT["embedding"].build(SKEWED, 12, SKEWED.target_probs))
    return compute_prior(run, PriorOptions(n_sequences=32, fit_iterations=2))


def test_the_result_round_trips_through_its_json(stand_in_result):
    again = PriorResult.from_json(json.loads(json.dumps(stand_in_result.to_json())))
    assert again.to_json() == json.loads(json.dumps(stand_in_result.to_json()))
    assert again.validation == stand_in_result.validation and again.validated == stand_in_result.validated
    assert again.trained.static_target["direct"] == stand_in_result.trained.static_target["direct"]


@pytest.mark.slow
def test_the_result_redraws_from_its_json(stand_in_result, tmp_path):
    paths = write_result(stand_in_result, tmp_path)
    assert [p.name for p in paths] == ["prior.json", "prior.png", "prior.svg"]
    redrawn = ANALYSES["prior"].draw(read_result(paths[0]), tmp_path / "again")
    assert [p.name for p in redrawn] == ["prior.png", "prior.svg"]


@pytest.mark.slow
def test_prior_end_to_end_from_the_cli(tmp_path):
    folder = tmp_path / "run"
    args = ["train", "--out", str(folder), "--vocab-size", "4", "--periods", "2", "3", "--n-ctx", "12", "--steps", "200",
            "--target-prior", "0.55", "0.25", "0.15", "0.05", "--period-prior", "0.7", "0.3",
            "--n-layers", "1", "--d-model", "32", "--n-heads", "4", "--d-head", "8", "--d-mlp", "64", "--batch-size", "64",
            "--eval-every", "200", "--eval-size", "128", "--no-progress"]  # fmt: skip
    assert main(args) == 0
    assert main(["analyze", str(folder), "--what", "prior", "--sequences", "256"]) == 0
    data = json.loads((folder / "analysis" / "prior.json").read_text())
    head = data["headline"]
    for key in ("static_target_corr", "static_period_corr", "behavioural_target_corr", "behavioural_period_corr",
                "static_target_kl", "behavioural_period_kl", "static_target_corr_random_init", "static_target_validated"):  # fmt: skip
        assert key in head
    # Even 200 steps learn the token frequencies: the behavioural target prior follows the skew, the
    # initialization's does not.
    assert head["behavioural_target_corr"] > 0.9 and head["behavioural_target_kl"] < head["behavioural_target_kl_random_init"]
    assert data["true_period"] == pytest.approx([0.7, 0.3]) and {"prior.png", "prior.svg"} <= set(data["figures"])
    assert main(["analyze", str(folder), "--what", "prior", "--no-such-option"]) == 2  # an argument error: exit 2
