"""The fast observer equals brute-force enumeration of hidden paths (tests/reference.py)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from nrecur import NRecurrence
from reference import brute_force_posterior, states_of

TOL = 1e-9


def probabilities(draw, size):
    """A probability vector, sometimes with zeros, sometimes None (uniform)."""
    if draw(st.booleans()):
        return None
    raw = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 7.0]), min_size=size, max_size=size))
    assume(sum(raw) > 0)
    return tuple(r / sum(raw) for r in raw)


def per_period(draw, periods, choices):
    kind = draw(st.sampled_from(["float", "map", "over_n"]))
    if kind == "float":
        return draw(st.sampled_from(choices))
    if kind == "over_n":
        return "0.3/n"
    return {n: draw(st.sampled_from(choices)) for n in periods}


@st.composite
def tiny_tasks(draw):
    vocab_size = draw(st.integers(2, 3))
    periods = tuple(draw(st.sampled_from([(2,), (3,), (2, 3), (3, 2), (2, 4)])))
    kwargs = dict(
        vocab_size=vocab_size,
        periods=periods,
        period_prior=probabilities(draw, len(periods)),
        target_prior=probabilities(draw, vocab_size),
        p_noise=per_period(draw, periods, [0.0, 0.1, 0.35]),
        p_transition=per_period(draw, periods, [0.0, 0.05, 0.3]),
        target_outside=draw(st.booleans()),
        fake_source=draw(st.sampled_from(["uniform", "recent"])),
        transition_changes=draw(st.sampled_from(["either", "both", "period", "target"])),
    )
    try:
        return NRecurrence(**kwargs)
    except ValueError as error:
        # Only "this transition kind cannot happen under this prior" is expected (validation tests cover it).
        assert "cannot happen" in str(error), error
        assume(False)


def max_length(task, budget=60_000):
    """Longest sequence whose full path enumeration stays within ``budget`` paths."""
    S = len(states_of(task))
    length = 2
    while S ** (length + 2) <= budget and length < 9:
        length += 1
    return length


def check_against_brute_force(task, tokens):
    predictive, next_state, log_prefix = brute_force_posterior(task, tokens)
    for backend in ("kernel", "torch"):
        compare(task.posterior(tokens[None, :], backend=backend), task, tokens, predictive, next_state, log_prefix)


def compare(post, task, tokens, predictive, next_state, log_prefix):
    np.testing.assert_allclose(post.predictive[0], predictive, atol=TOL, rtol=0)
    np.testing.assert_allclose(post.log_loss[0], -np.diff(log_prefix), atol=TOL, rtol=0)
    np.testing.assert_allclose(post.log_likelihood[0], log_prefix[-1], atol=TOL, rtol=0)
    period = np.zeros((len(tokens), task.n_periods))
    target = np.zeros((len(tokens), task.vocab_size))
    phase = np.zeros((len(tokens), task.n_periods, task.max_period))
    for s, (n, t, c) in enumerate(states_of(task)):
        k = task.periods.index(n)
        period[:, k] += next_state[:, s]
        target[:, t] += next_state[:, s]
        phase[:, k, c] += next_state[:, s]
    np.testing.assert_allclose(post.period[0], period, atol=TOL, rtol=0)
    np.testing.assert_allclose(post.target[0], target, atol=TOL, rtol=0)
    np.testing.assert_allclose(post.phase[0], phase, atol=TOL, rtol=0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(task=tiny_tasks(), seed=st.integers(0, 2**31 - 1))
def test_observer_equals_brute_force_on_sampled_sequences(task, seed):
    length = max_length(task)
    tokens = task.sample(1, length, seed=seed).tokens[0]
    check_against_brute_force(task, tokens)


@pytest.mark.parametrize(
    "kwargs",
    [
        # The "recent" window (3n = 6 positions) slides past the start here.
        dict(vocab_size=3, periods=(2,), p_noise=0.3, p_transition=0.1, fake_source="recent", transition_changes="target"),
        dict(vocab_size=2, periods=(2,), p_noise=0.2, fake_source="recent", target_outside=True),
        dict(vocab_size=3, periods=(2, 3), p_noise={2: 0.1, 3: 0.4}, p_transition={2: 0.0, 3: 0.2}, transition_changes="both"),
    ],
)
def test_observer_equals_brute_force_on_long_windows(kwargs):
    task = NRecurrence(**kwargs)
    tokens = task.sample(3, 9, seed=11).tokens
    for row in tokens:
        check_against_brute_force(task, row)


@pytest.mark.parametrize("kwargs", [
    dict(vocab_size=4, periods=(2, 3), p_noise=0.4, fake_source="recent"),
    dict(vocab_size=3, periods=(3, 2), p_noise={2: 0.2, 3: 0.5}, fake_source="recent", target_outside=True),
])
def test_recent_windows_of_several_periods_slide_over_long_sequences(kwargs):
    """Without rule changes the paths do not branch, so 16 tokens stay cheap to enumerate and every
    period's 3n window slides several times (a window of the wrong length is caught here)."""
    task = NRecurrence(**kwargs)
    for row in task.sample(4, 16, seed=3).tokens:
        check_against_brute_force(task, row)


def test_brute_force_reference_catches_a_wrong_observer():
    """The comparison is sharp: the observer of a slightly different task disagrees."""
    task = NRecurrence(vocab_size=3, periods=(2, 3), p_noise=0.1, p_transition=0.1)
    other = NRecurrence(vocab_size=3, periods=(2, 3), p_noise=0.1, p_transition=0.1, transition_changes="both")
    tokens = task.sample(1, 5, seed=3).tokens[0]
    with pytest.raises(AssertionError):
        check_against_brute_force_with(other, task, tokens)


def check_against_brute_force_with(observer_task, reference_task, tokens):
    post = observer_task.posterior(tokens[None, :])
    predictive, _, _ = brute_force_posterior(reference_task, tokens)
    np.testing.assert_allclose(post.predictive[0], predictive, atol=TOL, rtol=0)
