"""The observer's counterfactual (SPEC §5, causal variables) equals brute force over hidden paths."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nrecur import NRecurrence
from nrecur.observer.counterfactual import VARIABLES, counterfactual
from reference import brute_force_posterior, emission, rule_weights, states_of
from test_observer_bruteforce import max_length, tiny_tasks

TOL = 1e-9


def brute_force_counterfactual(task, base, source, variable):
    """``[pos, vocab]``: the counterfactual predictive from enumerated paths, state by state."""
    _, base_state, _ = brute_force_posterior(task, base)
    _, source_state, _ = brute_force_posterior(task, source)
    states, prior = states_of(task), rule_weights(task)
    out = np.zeros((len(base), task.vocab_size))
    for i in range(len(base)):
        def marginals(next_state):
            by_timing, by_target = {}, np.zeros(task.vocab_size)
            for s, (n, t, c) in enumerate(states):
                by_timing[(n, c)] = by_timing.get((n, c), 0.0) + next_state[i, s]
                by_target[t] += next_state[i, s]
            return by_timing, by_target

        timing_b, target_b = marginals(base_state)
        timing_s, target_s = marginals(source_state)
        timing = timing_b if variable == "what" else timing_s
        target = target_s if variable != "when" else target_b
        q = np.array([timing[(n, c)] * target[t] * (prior[(n, t)] > 0) for n, t, c in states])
        q /= q.sum()
        for v in range(task.vocab_size):
            out[i, v] = sum(q[s] * emission(task, state, list(base[: i + 1]), v) for s, state in enumerate(states))
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(task=tiny_tasks(), seed=st.integers(0, 2**31 - 1), variable=st.sampled_from(VARIABLES))
def test_counterfactual_equals_brute_force(task, seed, variable):
    length = max_length(task)
    tokens = task.sample(2, length, seed=seed).tokens
    got = counterfactual(task, tokens[:1], tokens[1:], variable).predictive[0]
    np.testing.assert_allclose(got, brute_force_counterfactual(task, tokens[0], tokens[1], variable), atol=TOL, rtol=0)


@pytest.mark.parametrize("variable", VARIABLES)
def test_counterfactual_with_recent_fakes_and_a_joint_prior(variable):
    """The base's window decides the fakes; a rule absent from the prior gets no mass, and a pair with no
    rule of positive prior left is undefined."""
    task = NRecurrence(vocab_size=3, periods=(2, 3), p_noise=0.3, fake_source="recent", rule_prior=[(2, 0, 1.0), (3, 1, 2.0), (2, 2, 1.0)])
    tokens = task.sample(6, 8, seed=5).tokens
    result = counterfactual(task, tokens[:3], tokens[3:], variable)
    absent = np.array([[task.rule_probs[k, t] == 0 for t in range(3)] for k in range(2)])
    defined = result.belief[result.defined]  # [cell, period, max_period, vocab]
    assert np.all(defined.transpose(0, 2, 1, 3)[:, :, absent] == 0)
    assert variable == "both" or not result.defined.all()
    assert np.isnan(result.predictive[~result.defined]).all() and result.defined[:, 0].all()
    for row in range(3):
        if not result.defined[row].all():
            continue
        np.testing.assert_allclose(result.predictive[row], brute_force_counterfactual(task, tokens[row], tokens[3 + row], variable), atol=TOL, rtol=0)


def test_what_takes_the_sources_target_at_the_bases_target_position():
    """Deterministic and certain: the base's next position is a target position, so the counterfactual
    predicts the source's target for *what* and the base's own for *when* when the source's is one too."""
    task = NRecurrence(vocab_size=4, periods=(2,))
    base = np.array([[1, 0, 1, 2, 1, 3]])  # target 1 at even positions: position 6 is a target position
    source = np.array([[3, 2, 0, 2, 1, 2]])  # target 2 at odd positions: position 6 is not
    what = counterfactual(task, base, source, "what").predictive[0, -1]
    when = counterfactual(task, base, source, "when").predictive[0, -1]
    np.testing.assert_allclose(what, [0, 0, 1, 0], atol=1e-12)
    np.testing.assert_allclose(when, [1 / 3, 0, 1 / 3, 1 / 3], atol=1e-12)  # off target: anything but t = 1
    # Once the belief is certain it is the product of its marginals: swapping in the base itself changes nothing.
    itself = counterfactual(task, base, base, "both").predictive[0, -1]
    np.testing.assert_allclose(itself, task.posterior(base).predictive[0, -1], atol=1e-12)


def test_bad_inputs_name_the_problem():
    task = NRecurrence(vocab_size=3, periods=(2,))
    tokens = task.sample(2, 4, seed=0).tokens
    with pytest.raises(ValueError, match="variable must be one of what, when, both"):
        counterfactual(task, tokens, tokens, "period")
    with pytest.raises(ValueError, match="the same shape"):
        counterfactual(task, tokens, tokens[:, :3], "what")
