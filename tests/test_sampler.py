"""The sampler follows SPEC §2.3, checked statistically on large batches."""

import numpy as np
import pytest

from nrecur import NRecurrence

Z = 5.0  # tolerance in standard errors: false alarms are very rare, real bugs are not


def assert_rate(hits, n, p):
    se = np.sqrt(p * (1 - p) / n) + 1e-12
    assert abs(hits / n - p) < Z * se + 1e-9, f"rate {hits / n:.5f} vs expected {p:.5f} (n={n})"


def test_same_seed_same_batch_and_different_seed_different_batch():
    task = NRecurrence(p_noise=0.1, p_transition=0.1, fake_source="recent")
    a, b = task.sample(64, 50, seed=7), task.sample(64, 50, seed=7)
    for name in a.FIELDS:
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.tokens, task.sample(64, 50, seed=8).tokens)
    assert a.tokens.dtype == np.int64 and a.tokens.shape == (64, 50)


@pytest.mark.parametrize("outside", [False, True])
def test_hidden_truth_is_consistent_with_the_tokens(outside):
    task = NRecurrence(vocab_size=6, periods=(2, 3, 5), p_noise=0.2, p_transition=0.05, target_outside=outside)
    batch = task.sample(500, 60, seed=1)
    on = batch.is_target_position
    assert np.array_equal(on, batch.phase == 0)
    real = on & ~batch.is_fake
    assert np.all(batch.tokens[real] == batch.target[real])
    assert np.all(batch.tokens[batch.is_fake] != batch.target[batch.is_fake])
    assert not np.any(batch.is_fake & ~on)
    # Without a transition the rule stays and the countdown ticks down.
    stay = ~batch.transition_after[:, :-1]
    assert np.all(batch.period[:, 1:][stay] == batch.period[:, :-1][stay])
    assert np.all(batch.target[:, 1:][stay] == batch.target[:, :-1][stay])
    expected = (batch.phase[:, :-1] - 1) % batch.period[:, :-1]
    assert np.all(batch.phase[:, 1:][stay] == expected[stay])


@pytest.mark.parametrize("p_noise", [0.0, 0.15, {2: 0.05, 3: 0.3, 4: 0.0}])
def test_target_rate_at_target_positions(p_noise):
    task = NRecurrence(vocab_size=5, periods=(2, 3, 4), p_noise=p_noise)
    batch = task.sample(4000, 24, seed=2)
    for k, n in enumerate(task.periods):
        sel = batch.is_target_position & (batch.period == n)
        hits = int(np.sum(batch.tokens[sel] == batch.target[sel]))
        assert_rate(hits, int(sel.sum()), 1 - task.noise_by_period[k])


def test_no_target_off_target_positions_unless_allowed():
    inside = NRecurrence(vocab_size=4, periods=(2, 3)).sample(2000, 30, seed=3)
    off = ~inside.is_target_position
    assert not np.any(inside.tokens[off] == inside.target[off])
    # Off-target tokens are uniform over the other V - 1 tokens.
    diff = (inside.tokens[off] - inside.target[off]) % 4
    counts = np.bincount(diff, minlength=4)[1:]
    for c in counts:
        assert_rate(int(c), int(off.sum()), 1 / 3)
    outside = NRecurrence(vocab_size=4, periods=(2, 3), target_outside=True).sample(2000, 30, seed=3)
    off = ~outside.is_target_position
    assert_rate(int(np.sum(outside.tokens[off] == outside.target[off])), int(off.sum()), 1 / 4)


def test_offsets_and_priors():
    task = NRecurrence(vocab_size=3, periods=(2, 5), period_prior=(0.3, 0.7), target_prior=(0.5, 0.0, 0.5))
    batch = task.sample(20000, 6, seed=4)
    n0, t0, c0 = batch.period[:, 0], batch.target[:, 0], batch.phase[:, 0]
    assert_rate(int(np.sum(n0 == 2)), len(n0), 0.3)
    assert not np.any(t0 == 1)
    assert_rate(int(np.sum(t0 == 0)), len(t0), 0.5)
    for n in (2, 5):
        sel = n0 == n
        for c in range(n):
            assert_rate(int(np.sum(c0[sel] == c)), int(sel.sum()), 1 / n)


@pytest.mark.parametrize("kind", ["either", "both", "period", "target"])
def test_transitions_rate_and_kind(kind):
    task = NRecurrence(vocab_size=4, periods=(2, 3, 4), p_transition={2: 0.05, 3: 0.1, 4: 0.2}, transition_changes=kind)
    batch = task.sample(3000, 40, seed=5)
    for k, n in enumerate(task.periods):
        sel = batch.period == n
        assert_rate(int(batch.transition_after[sel].sum()), int(sel.sum()), task.transition_by_period[k])
    tr = batch.transition_after[:, :-1]
    old_n, new_n = batch.period[:, :-1][tr], batch.period[:, 1:][tr]
    old_t, new_t = batch.target[:, :-1][tr], batch.target[:, 1:][tr]
    same_n, same_t = old_n == new_n, old_t == new_t
    if kind == "either":
        assert not np.any(same_n & same_t)
        assert np.any(same_n) and np.any(same_t)
    elif kind == "both":
        assert not np.any(same_n) and not np.any(same_t)
    elif kind == "period":
        assert not np.any(same_n) and np.all(same_t)
    else:
        assert np.all(same_n) and not np.any(same_t)
    # The new offset is uniform: the countdown right after a transition into period 4.
    into4 = (batch.period[:, 1:] == 4) & tr
    phases = batch.phase[:, 1:][into4]
    for c in range(4):
        assert_rate(int(np.sum(phases == c)), len(phases), 0.25)


def test_conditioned_transition_follows_the_prior():
    """'either' from rule (n, t): new rule ∝ prior over the other rules."""
    task = NRecurrence(vocab_size=2, periods=(2, 3), period_prior=(0.25, 0.75), target_prior=(0.4, 0.6), p_transition=0.3)
    batch = task.sample(20000, 10, seed=6)
    tr = batch.transition_after[:, :-1]
    from_rule = (batch.period[:, :-1] == 3) & (batch.target[:, :-1] == 1) & tr
    new = list(zip(batch.period[:, 1:][from_rule], batch.target[:, 1:][from_rule]))
    weights = {(2, 0): 0.25 * 0.4, (2, 1): 0.25 * 0.6, (3, 0): 0.75 * 0.4}
    total = sum(weights.values())
    for rule, w in weights.items():
        assert_rate(sum(r == rule for r in new), len(new), w / total)


def test_recent_fakes_come_from_the_window():
    task = NRecurrence(vocab_size=10, periods=(2, 3), p_noise=0.4, fake_source="recent")
    batch = task.sample(1500, 30, seed=7)
    rows, cols = np.nonzero(batch.is_fake)
    from_window = fallback = 0
    for b, i in zip(rows, cols):
        n, t, f = batch.period[b, i], batch.target[b, i], batch.tokens[b, i]
        window = set(batch.tokens[b, max(0, i - 3 * n) : i].tolist()) - {t}
        assert f != t
        if window:
            assert f in window
            from_window += 1
        else:
            fallback += 1
    assert from_window > 1000 and fallback > 10
    # Uniform over the window's distinct tokens: the first fake at position 4 of period-2 rows.
    sel = batch.is_fake[:, 4] & (batch.period[:, 4] == 2)
    hits = total = 0
    for b in np.flatnonzero(sel):
        window = sorted(set(batch.tokens[b, 0:4].tolist()) - {batch.target[b, 4]})
        if len(window) == 2:
            hits += batch.tokens[b, 4] == window[0]
            total += 1
    assert_rate(hits, total, 0.5)


@pytest.mark.parametrize("outside", [False, True])
def test_uniform_fakes_are_uniform_over_the_other_tokens(outside):
    task = NRecurrence(vocab_size=4, periods=(2,), p_noise=0.5, target_outside=outside)
    batch = task.sample(4000, 20, seed=8)
    f = batch.is_fake
    diff = (batch.tokens[f] - batch.target[f]) % 4
    assert not np.any(diff == 0)
    for d in (1, 2, 3):
        assert_rate(int(np.sum(diff == d)), int(f.sum()), 1 / 3)


@pytest.mark.parametrize("bad", [dict(batch_size=0, length=5), dict(batch_size=2, length=0), dict(batch_size=2.5, length=3)])
def test_bad_sizes(bad):
    with pytest.raises(ValueError, match="must be an integer >= 1"):
        NRecurrence().sample(seed=0, **bad)


def test_short_context_warns():
    with pytest.warns(UserWarning, match="shorter than 3 x the largest period"):
        NRecurrence(periods=(2, 7)).sample(2, 20, seed=0)


@pytest.mark.parametrize("kwargs", [
    dict(vocab_size=4, periods=(2, 3), p_noise=0.3, p_transition=0.1, fake_source="recent", transition_changes="both"),
    dict(vocab_size=3, periods=(2, 4), period_prior=(0.7, 0.3), p_noise=0.2, target_outside=True, p_transition=0.05),
])
def test_vectorized_sampler_matches_the_per_sequence_loop(kwargs):
    """Two implementations of the spec give the same distribution of short prefixes."""
    from reference import loop_sample

    task = NRecurrence(**kwargs)
    n = 6000
    ours = task.sample(n, 3, seed=9).tokens
    theirs, _, _ = loop_sample(task, n, 3, seed=9)
    V = task.vocab_size
    # Joint distribution of the first three tokens: a two-sample chi-square test.
    a = np.bincount(ours @ np.array([V * V, V, 1]), minlength=V**3)
    b = np.bincount(theirs @ np.array([V * V, V, 1]), minlength=V**3)
    keep = (a + b) > 0
    chi2 = (((a - b) ** 2) / (a + b))[keep].sum()
    dof = keep.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), f"chi2={chi2:.1f}, dof={dof}"
    # Equal seeds do not make equal samples: the test compares distributions.
    assert not np.array_equal(ours, theirs)


def test_distribution_comparison_detects_a_different_task():
    from reference import loop_sample

    task = NRecurrence(vocab_size=4, periods=(2, 3), p_noise=0.3)
    other = NRecurrence(vocab_size=4, periods=(2, 3), p_noise=0.05)
    V, n = 4, 6000
    a = np.bincount(task.sample(n, 3, seed=1).tokens @ np.array([V * V, V, 1]), minlength=V**3)
    b = np.bincount(loop_sample(other, n, 3, seed=1)[0] @ np.array([V * V, V, 1]), minlength=V**3)
    keep = (a + b) > 0
    chi2 = (((a - b) ** 2) / (a + b))[keep].sum()
    dof = keep.sum() - 1
    assert chi2 > dof + 5 * np.sqrt(2 * dof)


def test_recent_fakes_reach_back_exactly_3n_positions():
    """Fakes that only the oldest window position i-3n can supply appear at the rate the spec implies
    (a window of 3n-1 or 2n positions fails this)."""
    task = NRecurrence(vocab_size=12, periods=(2, 3), p_noise=0.5, fake_source="recent")
    batch = task.sample(6000, 24, seed=0)
    observed = expected = variance = 0.0
    for r, i in zip(*np.nonzero(batch.is_fake)):
        n, t = batch.period[r, i], batch.target[r, i]
        if i - 3 * n < 0:
            continue
        window = batch.tokens[r, i - 3 * n : i]
        pool = set(window.tolist()) - {t}
        if not pool:
            continue
        oldest_only = {v for v in pool if v == window[0] and v not in window[1:].tolist()}
        p = len(oldest_only) / len(pool)
        expected += p
        variance += p * (1 - p)
        observed += batch.tokens[r, i] in oldest_only
    assert variance > 50
    assert abs(observed - expected) < 5 * np.sqrt(variance) + 1, (observed, expected, variance)


@pytest.mark.parametrize("kwargs", [
    dict(vocab_size=2, periods=(2,), p_noise=0.3, fake_source="recent", target_outside=True, p_transition=0.2, transition_changes="target"),
    dict(vocab_size=3, periods=(2, 3), p_noise={3: 0.1, 2: 0.3}, p_transition={3: 0.1, 2: 0.3}, transition_changes="both", target_outside=True),
    dict(vocab_size=3, periods=(2, 3), period_prior=(0.3, 0.7), p_noise=0.2, p_transition=0.25, fake_source="recent"),
])
def test_whole_sequences_follow_their_exact_probabilities(kwargs):
    """Every sequence of 7 tokens (8 for V = 2) is sampled as often as its exact probability says.

    The probabilities come from the observer, itself checked against brute-force enumeration;
    7 tokens let the recent window of n = 2 slide, so window and fake-choice bugs show here.
    """
    import itertools

    task = NRecurrence(**kwargs)
    V = task.vocab_size
    L = 8 if V == 2 else 7
    N = 200_000
    counts = np.bincount(task.sample(N, L, seed=1).tokens @ (V ** np.arange(L)[::-1]), minlength=V**L)
    every = np.array(list(itertools.product(range(V), repeat=L)))
    p = np.exp(task.posterior(every, impossible="inf").log_likelihood)
    assert abs(p.sum() - 1) < 1e-9
    assert counts[p == 0].sum() == 0  # nothing impossible is ever sampled
    expected = N * p
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = keep.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), f"chi2={chi2:.1f}, dof={dof}"


def test_seeds_are_validated():
    for seed in (-1, 1.5, "a", (), (1, -2), True):
        with pytest.raises(ValueError, match="seed must be an integer >= 0"):
            NRecurrence().sample(2, 4, seed=seed)
    NRecurrence().sample(2, 4, seed=(3, 4))  # a tuple of ints is a fine seed


TASKS_FOR_MANY = [
    NRecurrence(),
    NRecurrence(vocab_size=6, periods=(2, 3, 5), p_noise=0.2, p_transition=0.1, fake_source="recent", transition_changes="both"),
    NRecurrence(p_noise=0.3, p_transition="0.2/n", target_outside=True, transition_changes="period"),
]


@pytest.mark.parametrize("task", TASKS_FOR_MANY)
@pytest.mark.parametrize("batch_size", [1, 16, 100])  # 100: over CHUNK (64 here), so each seed alone, in two chunks
def test_sample_many_gives_each_seeds_own_batch(task, batch_size, monkeypatch):
    """Seeds sampled side by side give, field for field, the batch each seed gives alone (also when they
    fill several loops over positions, and for batches too large to share one)."""
    import nrecur.tasks.sampler as sampler

    # 16-sequence batches: CHUNK allows four seeds per loop, MANY_UNIFORMS three, so the 12 seeds take four loops
    monkeypatch.setattr(sampler, "CHUNK", 64)
    monkeypatch.setattr(sampler, "MANY_UNIFORMS", 6 * 40 * 16 * 3)
    seeds = [(index, 0x42, 5) for index in range(10)] + [7, (7,)]
    together = task.sample_many(batch_size, 40, seeds)
    assert len(together) == len(seeds)
    for seed, batch in zip(seeds, together):
        alone = task.sample(batch_size, 40, seed)
        for name in alone.FIELDS:
            np.testing.assert_array_equal(getattr(batch, name), getattr(alone, name), err_msg=f"{name}, seed {seed}")
            assert getattr(batch, name).flags.c_contiguous


def test_sample_many_checks_every_seed():
    with pytest.raises(ValueError, match="seed"):
        NRecurrence().sample_many(4, 10, [1, -3])
