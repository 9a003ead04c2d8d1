"""Training data of a run that holds rules out: the process of the in-distribution prior, not a filtered one."""

from __future__ import annotations

import numpy as np
import pytest

from nrecur import NRecurrence
from nrecur.train.data import FiniteData, OnlineData, held_out_rules, sample_avoiding, touches, training_source


def change_rate(sample) -> float:
    """Share of position pairs ``(i, i+1)`` where the rule in force changes (every change is a transition)."""
    period, target = np.asarray(sample.period), np.asarray(sample.target)
    changed = (period[:, 1:] != period[:, :-1]) | (target[:, 1:] != target[:, :-1])
    return float(changed.mean())


def test_training_sequences_follow_the_in_distribution_process_with_its_transition_rate():
    task = NRecurrence(vocab_size=6, periods=(2, 3, 4), p_noise=0.05, p_transition=0.05)
    held_out = held_out_rules(task, 0.25, seed=0)
    sample = sample_avoiding(task, 4000, 48, (1, 2), held_out)
    assert not touches(task, sample, held_out).any()
    # the same sequences as the in-distribution task draws, so the memorizing observer is their Bayes optimum
    np.testing.assert_array_equal(sample.tokens, task.in_distribution(held_out).sample(4000, 48, (1, 2)).tokens)
    assert change_rate(sample) == pytest.approx(0.05, abs=0.003)
    # rejecting full-process sequences that touch a held-out rule favours those with fewer changes
    full = task.sample(20000, 48, (3, 4))
    filtered = full.select(~touches(task, full, held_out))
    assert change_rate(filtered) < 0.045


def test_online_and_finite_training_data_come_from_the_in_distribution_task():
    task = NRecurrence(vocab_size=6, periods=(2, 3), p_noise=0.05, p_transition=0.05)
    held_out = held_out_rules(task, 0.25, seed=0)
    online = OnlineData(task, 20, 64, seed=5, held_out=held_out)
    assert online.source == (task.in_distribution(held_out), frozenset())
    np.testing.assert_array_equal(online.batch(3), task.in_distribution(held_out).sample(64, 20, online.batch_seed(3)).tokens)
    finite = FiniteData(task, 20, 128, 32, seed=5, held_out=held_out)
    assert not touches(task, finite.sequences, held_out).any()


def test_where_the_in_distribution_prior_is_not_valid_touching_sequences_are_rejected():
    task = NRecurrence(vocab_size=3, periods=(2, 3), p_transition=0.1, transition_changes="period")
    held_out = frozenset({(3, 0)})  # leaves rule (2, 0) with nowhere to go
    source, rejected = training_source(task, held_out)
    assert source is task and rejected == held_out
    sample = sample_avoiding(task, 200, 16, (0,), held_out)
    assert len(sample) == 200 and not touches(task, sample, held_out).any()
