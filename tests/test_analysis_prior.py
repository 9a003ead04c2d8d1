"""Static and behavioural prior (SPEC §5): a hand-built model whose direct path encodes a known prior, the
behavioural fit on the observer itself, the emission inversion against sampled data, and inputs it refuses."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from nrecur import Mess3, NRecurrence
from nrecur.analysis.prior import (
    compare,
    emission_affine,
    fit_prior,
    prior,
    prior_applies,
    prior_from_marginal,
    static_priors,
)
from nrecur.cli import main
from nrecur.model import GPT, GPTConfig

ZIPF = tuple(float(x) for x in (1 / np.arange(1, 9)) / (1 / np.arange(1, 9)).sum())


def hand_built(task: NRecurrence, logits: np.ndarray) -> GPT:
    """No norms, one block that writes nothing, identity unembedding; every token embeds as ``logits``, so the
    direct path (and the whole network) outputs ``softmax(logits)`` whatever the input."""
    V = task.vocab_size
    model = GPT(GPTConfig(vocab_size=V, n_ctx=16, d_model=V, n_layers=1, n_heads=2, d_head=4, d_mlp=8, norm="none"))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.zero_()
        model.embed.weight[:] = torch.as_tensor(logits, dtype=torch.float32)
        model.unembed.weight[:] = torch.eye(V)
    return model.eval()


def test_first_token_marginal_is_the_affine_emission_of_the_target_prior():
    task = NRecurrence(vocab_size=8, periods=(2, 3, 4, 5), target_prior=ZIPF, period_prior=(0.5, 0.25, 0.15, 0.1), p_noise=0.1)
    alpha, beta = emission_affine(task, task.period_probs)
    tokens = np.asarray(task.sample(40_000, 2, seed=3).tokens)[:, 0]
    empirical = np.bincount(tokens, minlength=8) / len(tokens)
    np.testing.assert_allclose(empirical, alpha * task.target_probs + beta, atol=0.008)
    np.testing.assert_allclose(prior_from_marginal(task, alpha * task.target_probs + beta, task.period_probs), task.target_probs, atol=1e-9)


def test_static_prior_of_a_model_whose_direct_path_encodes_a_known_prior_returns_that_prior():
    task = NRecurrence(vocab_size=8, periods=(2, 3, 4, 5), target_prior=ZIPF)
    alpha, beta = emission_affine(task)  # the static estimators invert with uniform periods
    marginal = alpha * np.asarray(ZIPF) + beta  # what a model with prior ZIPF outputs before any evidence
    targets, periods, raw = static_priors(hand_built(task, np.log(marginal)), task)
    np.testing.assert_allclose(raw["constant"], 1 / 8, atol=1e-6)  # no bias, no position embedding: nothing there
    for name in ("direct", "mean_input"):
        np.testing.assert_allclose(raw[name], marginal, atol=1e-5)
        np.testing.assert_allclose(targets[name], ZIPF, atol=1e-4)
        assert compare(ZIPF, targets[name])["corr"] == pytest.approx(1.0, abs=1e-6)
    # Uniform attention favours no lag: every period estimator answers uniform.
    for name, values in periods.items():
        np.testing.assert_allclose(values, 0.25, atol=1e-6, err_msg=name)
    # A model built for the reversed prior is read as the reversed prior, not as ZIPF.
    reversed_targets, _, _ = static_priors(hand_built(task, np.log(marginal[::-1])), task)
    np.testing.assert_allclose(reversed_targets["direct"], ZIPF[::-1], atol=1e-4)


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


def test_the_analysis_refuses_tasks_without_targets_and_periods_with_a_one_line_reason():
    model = GPT(GPTConfig(vocab_size=3, n_ctx=8, d_model=8, n_layers=1, n_heads=1, d_head=4, d_mlp=0))
    run = SimpleNamespace(task=Mess3(), model=model)
    why = prior_applies(run)
    assert why is not None and "n-recurrence" in why and "\n" not in why
    with pytest.raises(ValueError, match="does not apply"):
        prior(run)
    mismatched = SimpleNamespace(task=NRecurrence(vocab_size=4, periods=(2, 3)), model=model)
    assert "vocab_size" in prior_applies(mismatched)


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
                "static_target_kl", "behavioural_period_kl", "untrained_static_target_corr"):  # fmt: skip
        assert key in head
    # Even 200 steps learn the token frequencies: the behavioural target prior follows the skew.
    assert head["behavioural_target_corr"] > 0.9
    assert data["true_period"] == pytest.approx([0.7, 0.3]) and {"prior.png", "prior.svg"} <= set(data["figures"])
    with pytest.raises(SystemExit):
        main(["analyze", str(folder), "--what", "prior", "--no-such-option"])
