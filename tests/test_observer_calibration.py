"""The observer is calibrated on the sampler's output and prefers the task that made the data."""

import numpy as np
import pytest

from nrecur import NRecurrence, bayes_cross_entropy


@pytest.mark.parametrize("kwargs", [
    dict(p_noise="0.2/n", p_transition="0.2/n"),
    dict(vocab_size=5, periods=(2, 3), p_noise=0.2, p_transition=0.05, fake_source="recent", target_outside=True),
])
def test_predicted_probabilities_match_observed_frequencies(kwargs):
    task = NRecurrence(**kwargs)
    batch = task.sample(3000, 30, seed=11)
    post = task.posterior(batch.tokens)
    pred = post.predictive[:, :-1].reshape(-1, task.vocab_size)  # P(x[i+1] = v)
    observed = np.eye(task.vocab_size)[batch.tokens[:, 1:].reshape(-1)]
    edges = np.linspace(0, 1, 11)
    which = np.clip(np.digitize(pred, edges) - 1, 0, 9)
    for b in range(10):
        sel = which == b
        if sel.sum() < 2000:
            continue
        mean_pred, freq = pred[sel].mean(), observed[sel].mean()
        se = np.sqrt(max(freq * (1 - freq), 1e-4) / sel.sum())
        assert abs(mean_pred - freq) < 5 * se + 2e-3, f"bin {b}: predicted {mean_pred:.4f}, observed {freq:.4f}"


def test_target_posterior_is_calibrated_on_the_hidden_truth():
    task = NRecurrence(p_noise=0.1, p_transition=0.05)
    batch = task.sample(3000, 24, seed=12)
    post = task.posterior(batch.tokens)
    p_true = np.take_along_axis(post.target[:, :-1], batch.target[:, 1:, None], axis=-1)[..., 0]
    # E[P(true target)] equals E[Σ_t P(t)^2] for a calibrated posterior.
    expected = (post.target[:, :-1] ** 2).sum(-1)
    assert abs(p_true.mean() - expected.mean()) < 0.01


@pytest.mark.parametrize("other", [
    dict(p_noise=0.1),
    dict(periods=(2, 3, 4, 6)),
    dict(p_noise="0.2/n", p_transition="0.2/n", transition_changes="both"),
    dict(p_noise="0.2/n", p_transition="0.2/n", fake_source="recent"),
])
def test_data_is_scored_worse_by_another_tasks_observer(other):
    truth = NRecurrence(p_noise="0.2/n", p_transition="0.2/n")
    tokens = truth.sample(2000, 32, seed=13).tokens
    base = dict(p_noise="0.2/n", p_transition="0.2/n")
    wrong = NRecurrence(**{**base, **other})
    own = truth.posterior(tokens).log_loss.mean()
    theirs = wrong.posterior(tokens, impossible="inf").log_loss.mean()
    assert np.isfinite(theirs) and own < theirs


def test_bayes_cross_entropy_summary():
    task = NRecurrence()
    ce = bayes_cross_entropy(task, length=20, batch_size=1000, seed=0)
    assert ce.per_position.shape == (19,) and ce.n_sequences == 1000
    # Deterministic task: the floor falls with context as the rule becomes known, and is
    # at least the entropy of a random non-target token once it is.
    assert ce.per_position[0] > ce.per_position[-1] > 0.8 * np.log(7) * 0.5
    assert abs(ce.mean - ce.per_position.mean()) < 1e-12
    assert 0 < ce.stderr < 0.05
    again = bayes_cross_entropy(task, length=20, batch_size=1000, seed=1)
    assert abs(again.mean - ce.mean) < 5 * np.hypot(ce.stderr, again.stderr)
