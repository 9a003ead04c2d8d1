"""Every invalid parameter of NRecurrence fails at construction with a message naming it."""

import numpy as np
import pytest

from nrecur import NRecurrence


@pytest.mark.parametrize("kwargs, message", [
    (dict(vocab_size=1), r"vocab_size must be an integer in \[2, 65536\]"),
    (dict(vocab_size=10**20), "vocab_size = 100000000000000000000 is beyond the 64-bit integers"),
    (dict(periods=(2, 10**6)), r"periods must be integers in \[2, 4096\]"),
    (dict(p_noise={2: None, 3: 0.1, 4: 0.1, 5: 0.1}), "the probability for period 2 must be a number"),
    (dict(p_noise={2.5: 0.1, 3: 0.1, 4: 0.1, 5: 0.1}), "mapping keys must be periods"),
    (dict(periods=(2, 3), period_prior=(1.0, 1e-20), p_transition=0.1, transition_changes="period"), "prior mass below"),
    (dict(vocab_size=2, target_prior=(1 - 1e-9, 1e-9), p_transition=0.1, transition_changes="target"), "prior mass below"),
    (dict(vocab_size=2.5), "vocab_size"),
    (dict(periods=()), "periods must name at least one"),
    (dict(periods=(1, 2)), "periods must be integers in"),
    (dict(periods=(2, 2, 3)), "periods must be distinct"),
    (dict(period_prior=(0.5, 0.5)), "period_prior needs one probability per periods"),
    (dict(period_prior=(0.5, 0.5, 0.5, -0.5)), "period_prior must be probabilities >= 0"),
    (dict(period_prior=(0.1, 0.1, 0.1, 0.1)), "period_prior must sum to 1"),
    (dict(target_prior=(1.0,)), "target_prior needs one probability per vocab_size"),
    (dict(p_noise=1.0), r"p_noise must lie in \[0, 1\)"),
    (dict(p_noise=-0.1), r"p_noise must lie in \[0, 1\)"),
    (dict(p_transition=float("nan")), "p_transition must lie"),
    (dict(p_noise={2: 0.1}), "p_noise as a mapping needs exactly one probability per period"),
    (dict(p_noise={2: 0.1, 3: 0.1, 4: 0.1, 5: 0.1, 6: 0.1}), "unknown \\[6\\]"),
    (dict(p_transition="x/n"), "p_transition"),
    (dict(p_transition="5/n"), r"p_transition must lie in \[0, 1\)"),
    (dict(fake_source="nearby"), "fake_source"),
    (dict(transition_changes="neither"), "transition_changes"),
    (dict(periods=(3,), p_transition=0.1, transition_changes="period"), "at least two periods"),
    (dict(periods=(3,), p_transition=0.1, transition_changes="both"), "at least two periods"),
    (dict(target_prior=(1,) + (0,) * 7, p_transition=0.1, transition_changes="target"), "at least two target tokens"),
    (dict(periods=(3,), target_prior=(1,) + (0,) * 7, p_transition=0.1), r"at least two \(period, target\) rules"),
    (dict(unknown_field=3), "unknown_field"),
])
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NRecurrence(**kwargs)


def test_valid_edge_cases_construct():
    NRecurrence(periods=(3,), transition_changes="period")  # no transitions: nothing to violate
    NRecurrence(vocab_size=2, periods=(2,), p_noise=0.99, p_transition=0.5, transition_changes="target")
    task = NRecurrence(p_noise="0.2/n", p_transition={2: 0.1, 3: 0.0, 4: 0.0, 5: 0.2})
    assert task.noise_by_period.tolist() == pytest.approx([0.1, 0.2 / 3, 0.05, 0.04])
    assert task.n_states == 8 * 14


def test_mappings_are_read_by_period_not_by_order():
    task = NRecurrence(vocab_size=3, periods=(2, 3), p_noise={3: 0.3, 2: 0.1}, p_transition={3: 0.0, 2: 0.2})
    assert task.noise_by_period.tolist() == [0.1, 0.3]
    assert task.transition_by_period.tolist() == [0.2, 0.0]
    batch = task.sample(4000, 24, seed=0)
    on3 = batch.is_target_position & (batch.period == 3)
    assert abs(batch.is_fake[on3].mean() - 0.3) < 0.03
    assert not np.any(batch.transition_after[batch.period == 3])


def test_config_round_trips_through_json():
    task = NRecurrence(vocab_size=5, periods=(2, 3), p_noise={2: 0.1, 3: 0.2}, p_transition="0.2/n", fake_source="recent")
    again = NRecurrence.model_validate_json(task.model_dump_json())
    assert again == task
