"""In-context modular arithmetic (SPEC §2.6): the sampler's statistics, the observer against brute-force
enumeration of every task vector, validation and the Task interface."""

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from reference import modular_brute_force, modular_loop_posterior

import nrecur.observer.modular as observer_module
from nrecur.observer.modular import ModularPosterior, modular_posterior
from nrecur.observer.results import ImpossibleSequenceError
from nrecur.tasks.base import Task
from nrecur.tasks.modular import ModularBatch, ModularICL

# ---------------------------------------------------------------------------- sampler


def test_tokens_follow_the_rule_of_their_vector():
    task = ModularICL(p=7, n_examples=5, n_tasks=10)
    for split in ("in_distribution", "out_of_distribution"):
        batch = task.sample(500, 15, seed=3, split=split)
        assert isinstance(batch, ModularBatch)
        assert batch.tokens.shape == (500, 15) and batch.tokens.dtype == np.int64
        assert batch.a.shape == batch.b.shape == batch.in_distribution.shape == (500,)
        assert batch.tokens.min() >= 0 and batch.tokens.max() < 7
        assert np.array_equal(batch.slot, np.broadcast_to(np.arange(15) % 3, (500, 15)))
        x, y, z = batch.tokens[:, 0::3], batch.tokens[:, 1::3], batch.tokens[:, 2::3]
        assert np.array_equal(z, (batch.a[:, None] * x + batch.b[:, None] * y) % 7)
        assert np.all(batch.in_distribution == (split == "in_distribution"))


def test_x_and_y_are_uniform_and_independent():
    p = 5
    batch = ModularICL(p=p, n_examples=4, n_tasks=3).sample(20_000, 12, seed=0)
    x, y = batch.tokens[:, 0::3].ravel(), batch.tokens[:, 1::3].ravel()
    n = len(x)
    for values in (x, y):
        assert np.allclose(np.bincount(values, minlength=p) / n, 1 / p, atol=0.01)
    pairs = np.bincount(x * p + y, minlength=p * p) / n
    assert np.allclose(pairs, 1 / p**2, atol=0.004)
    # Consecutive examples are independent too.
    assert abs(np.corrcoef(batch.tokens[:, 0], batch.tokens[:, 3])[0, 1]) < 0.03


@pytest.mark.parametrize("split", ["in_distribution", "out_of_distribution"])
def test_vectors_are_drawn_uniformly_from_their_split(split):
    task = ModularICL(p=5, n_examples=2, n_tasks=7, task_seed=4)
    pool = task.train_tasks if split == "in_distribution" else task.ood_tasks
    batch = task.sample(40_000, 6, seed=1, split=split)
    index = batch.a * task.p + batch.b
    pool_index = pool[:, 0] * task.p + pool[:, 1]
    assert set(np.unique(index)) == set(pool_index.tolist())
    frequencies = np.array([np.mean(index == v) for v in pool_index])
    assert np.allclose(frequencies, 1 / len(pool), atol=0.01)


def test_train_tasks_are_distinct_deterministic_and_complement_the_ood_tasks():
    task = ModularICL(p=7, n_tasks=16, task_seed=5)
    train, ood = task.train_tasks, task.ood_tasks
    assert train.shape == (16, 2) and ood.shape == (49 - 16, 2)
    assert np.issubdtype(train.dtype, np.integer) and train.min() >= 0 and train.max() < 7
    train_set, ood_set = set(map(tuple, train.tolist())), set(map(tuple, ood.tolist()))
    assert len(train_set) == 16 and not train_set & ood_set
    assert train_set | ood_set == {(a, b) for a in range(7) for b in range(7)}
    assert np.array_equal(train, ModularICL(p=7, n_tasks=16, task_seed=5).train_tasks)
    assert not np.array_equal(train, ModularICL(p=7, n_tasks=16, task_seed=6).train_tasks)
    assert len(ModularICL(p=3, n_tasks=9).ood_tasks) == 0


def test_seeds_fix_the_batch_and_splits_draw_independently():
    task = ModularICL()
    first = task.sample(64, 24, seed=(1, 2))
    assert np.array_equal(first.tokens, task.sample(64, 24, seed=(1, 2)).tokens)
    assert not np.array_equal(first.tokens, task.sample(64, 24, seed=(1, 3)).tokens)
    ood = task.sample(64, 24, seed=(1, 2), split="out_of_distribution")
    assert not np.array_equal(first.tokens[:, 0::3], ood.tokens[:, 0::3])


def test_lengths():
    task = ModularICL(p=5, n_examples=3)
    for length in range(1, 10):
        assert task.sample(4, length).tokens.shape == (4, length)
    assert task.max_length == 9 and task.vocab_size == 5
    with pytest.raises(ValueError, match="at most 9 tokens"):
        task.sample(4, 10)
    with pytest.raises(ValueError, match="length must be an integer >= 1"):
        task.sample(4, 0)
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        task.sample(4, 3, seed=-1)


def test_split_errors():
    with pytest.raises(ValueError, match="no out-of-distribution task vectors.*n_tasks"):
        ModularICL(p=3, n_tasks=9).sample(4, 6, split="out_of_distribution")
    with pytest.raises(ValueError, match="split must be one of"):
        ModularICL().sample(4, 6, split="test")


# ---------------------------------------------------------------------------- observer vs brute force


def _check_against_brute_force(task, tokens, prior):
    post = modular_posterior(task, tokens, prior=prior, impossible="inf")
    assert isinstance(post, ModularPosterior)
    for s, row in enumerate(tokens):
        predictive, marginal_a, marginal_b, n_consistent, log_prefix = modular_brute_force(task, row, prior)
        np.testing.assert_allclose(post.predictive[s], predictive, rtol=0, atol=1e-12)
        np.testing.assert_allclose(post.a[s], marginal_a, rtol=0, atol=1e-12)
        np.testing.assert_allclose(post.b[s], marginal_b, rtol=0, atol=1e-12)
        assert np.array_equal(post.n_consistent[s], n_consistent)
        dead = np.flatnonzero(log_prefix == -np.inf)
        first = dead[0] if len(dead) else -1
        assert post.impossible[s] == first
        np.testing.assert_allclose(post.log_likelihood[s], log_prefix[-1], rtol=1e-12)
        alive = slice(None, first - 1 if first > 0 else None)
        np.testing.assert_allclose(post.log_loss[s][alive], -np.diff(log_prefix[: first if first > 0 else None]), rtol=1e-12)
        if first > 0:
            assert np.all(post.log_loss[s][first - 1 :] == np.inf)
    return post


@pytest.mark.parametrize("p, n_tasks", [(2, 2), (3, 4), (5, 6)])
@pytest.mark.parametrize("prior", ["in_distribution", "universal"])
@pytest.mark.parametrize("split", ["in_distribution", "out_of_distribution"])
def test_observer_equals_brute_force(p, n_tasks, prior, split):
    task = ModularICL(p=p, n_examples=4, n_tasks=n_tasks, task_seed=p)
    for length in (1, 2, 3, 11, 12):
        tokens = task.sample(12, length, seed=length, split=split).tokens
        post = _check_against_brute_force(task, tokens, prior)
        if prior == "universal" or split == "in_distribution":
            assert np.all(post.impossible == -1)


def test_ood_sequences_become_impossible_under_the_in_distribution_prior():
    task = ModularICL(p=5, n_examples=4, n_tasks=3, task_seed=2)
    tokens = task.sample(40, 12, seed=0, split="out_of_distribution").tokens
    post = _check_against_brute_force(task, tokens, "in_distribution")
    assert np.all(post.impossible > 0) and np.all(post.impossible % 3 == 2)  # always at an answer
    assert np.all(np.isnan(post.a[np.arange(40), post.impossible]))
    with pytest.raises(ImpossibleSequenceError, match="prior='universal'"):
        modular_posterior(task, tokens, prior="in_distribution")
    assert np.all(modular_posterior(task, tokens, prior="universal").impossible == -1)


def test_sequences_impossible_under_every_prior():
    task = ModularICL(p=3, n_examples=3, n_tasks=4)
    tokens = np.array([[0, 0, 1, 2, 2, 2], [1, 2, 0, 0, 0, 0], [1, 0, 2, 1, 0, 1]])  # 0·a + 0·b is never 1
    post = _check_against_brute_force(task, tokens, "universal")
    assert post.impossible.tolist() == [2, -1, 5]
    with pytest.raises(ImpossibleSequenceError, match="sequence 0 is impossible"):
        modular_posterior(task, tokens, prior="universal")


def test_universal_observer_identifies_the_vector():
    task = ModularICL(p=29, n_examples=10, n_tasks=100)
    batch = task.sample(200, 30, seed=0, split="out_of_distribution")
    post = task.posterior(batch.tokens, prior="universal")
    assert np.all(np.diff(post.n_consistent, axis=1) <= 0)
    assert np.all(post.n_consistent[:, :2] == 29 * 29)
    known = post.n_consistent[:, -1] == 1
    assert known.mean() > 0.95  # two generic examples pin a vector down mod a prime
    assert np.all(post.a[known, -1].argmax(1) == batch.a[known])
    assert np.all(post.b[known, -1].argmax(1) == batch.b[known])
    z_next = np.flatnonzero(np.arange(29) % 3 == 1)
    certain = post.n_consistent[:, z_next] == 1
    assert np.all(np.exp(-post.log_loss[:, z_next][certain]) == 1.0)
    np.testing.assert_allclose(post.predictive.sum(-1), 1.0, atol=1e-12)


def test_observer_equals_the_loop_reference():
    task = ModularICL(p=7, n_examples=6, n_tasks=20, task_seed=3)
    tokens = task.sample(60, 17, seed=2).tokens
    for prior in ("in_distribution", "universal"):
        post = modular_posterior(task, tokens, prior=prior)
        predictive, marginal_a, marginal_b, n_consistent = modular_loop_posterior(task, tokens, prior)
        np.testing.assert_allclose(post.predictive, predictive, atol=1e-12)
        np.testing.assert_allclose(post.a, marginal_a, atol=1e-12)
        np.testing.assert_allclose(post.b, marginal_b, atol=1e-12)
        assert np.array_equal(post.n_consistent, n_consistent)


def test_chunking_over_the_batch_changes_nothing(monkeypatch):
    task = ModularICL(p=5, n_examples=4, n_tasks=6)
    tokens = np.concatenate([task.sample(30, 12, seed=0).tokens, task.sample(30, 12, seed=0, split="out_of_distribution").tokens])
    whole = modular_posterior(task, tokens, prior="in_distribution", impossible="inf")
    monkeypatch.setattr(observer_module, "CHUNK_PAIRS", 7 * 6)  # 7 sequences per chunk
    chunked = modular_posterior(task, tokens, prior="in_distribution", impossible="inf")
    for name in ("predictive", "a", "b", "n_consistent", "log_loss", "log_likelihood", "impossible"):
        np.testing.assert_array_equal(getattr(chunked, name), getattr(whole, name))


def test_torch_in_torch_out_and_task_dispatch():
    task = ModularICL()
    tokens = task.sample(16, 24, seed=0).tokens
    numpy_post = task.posterior(tokens, prior="universal")
    torch_post = task.posterior(torch.from_numpy(tokens), prior="universal")
    assert isinstance(numpy_post.predictive, np.ndarray) and numpy_post.predictive.dtype == np.float64
    assert isinstance(torch_post.predictive, torch.Tensor) and torch_post.predictive.dtype == torch.float64
    assert numpy_post.predictive.shape == numpy_post.a.shape == (16, 24, 7)
    assert numpy_post.log_loss.shape == (16, 23) and numpy_post.log_likelihood.shape == (16,)
    np.testing.assert_array_equal(torch_post.predictive.numpy(), numpy_post.predictive)
    np.testing.assert_array_equal(torch_post.n_consistent.numpy(), numpy_post.n_consistent)
    default = task.posterior(tokens)
    np.testing.assert_array_equal(default.predictive, modular_posterior(task, tokens, prior="in_distribution").predictive)


def test_observer_argument_errors():
    task = ModularICL(p=5)
    with pytest.raises(ValueError, match="prior must be one of"):
        task.posterior([[0, 1, 2]], prior="uniform")
    with pytest.raises(ValueError, match="impossible must be"):
        task.posterior([[0, 1, 2]], impossible="nan")
    with pytest.raises(ValueError, match=r"tokens must lie in 0..4"):
        task.posterior([[0, 1, 5]])


# ---------------------------------------------------------------------------- config and Task interface


@pytest.mark.parametrize("kwargs, message", [
    (dict(p=1), r"p must be an integer in \[2, 1024\], got 1"),
    (dict(p=2000), r"p must be an integer in \[2, 1024\]"),
    (dict(p=2.5), "p"),
    (dict(n_examples=0), "n_examples must be an integer >= 1, got 0"),
    (dict(n_tasks=0), r"n_tasks must be an integer in \[1, p\^2\] = \[1, 49\] for p=7, got 0"),
    (dict(p=3, n_tasks=10), r"n_tasks must be an integer in \[1, p\^2\] = \[1, 9\]"),
    (dict(task_seed=-1), "task_seed must be an integer >= 0, got -1"),
    (dict(kind="nrecurrence"), "kind"),
    (dict(modulus=7), "modulus"),
])  # fmt: skip
def test_invalid_parameters(kwargs, message):
    with pytest.raises(ValidationError, match=message):
        ModularICL(**kwargs)


def test_config_round_trips_through_json():
    task = ModularICL(p=11, n_examples=5, n_tasks=40, task_seed=9)
    data = task.model_dump(mode="json")
    assert data == {"kind": "modular", "p": 11, "n_examples": 5, "n_tasks": 40, "task_seed": 9}
    again = Task.KINDS["modular"].model_validate(data)
    assert again == task and np.array_equal(again.train_tasks, task.train_tasks)
    assert ModularICL.model_validate_json(task.model_dump_json()) == task
    assert task.describe() == "ModularICL(p=11, 5 examples, 40 of 121 task vectors in training, task_seed=9)"
    assert ModularICL.model_fields["p"].description  # field docstrings become CLI help


def test_truth_views_and_rules():
    task = ModularICL(p=5, n_examples=3, n_tasks=6)
    batch = task.sample(8, 9, seed=0)
    truth = task.truth(batch)
    assert truth.accuracy_name == "z_acc"
    assert truth.accuracy_mask.shape == (8, 8)
    assert np.array_equal(truth.accuracy_mask[0], np.arange(1, 9) % 3 == 2)
    assert truth.strata.names == ("next_x", "next_y", "next_z")
    assert np.array_equal(truth.strata.labels[0], np.arange(1, 10) % 3)
    views = task.evaluation_views()
    assert [(v.name, v.split, v.observer) for v in views] == [
        ("eval", "in_distribution", (("prior", "in_distribution"),)),
        ("universal", "in_distribution", (("prior", "universal"),)),
        ("out_dist", "out_of_distribution", (("prior", "universal"),)),
    ]
    assert [v.name for v in ModularICL(p=3, n_tasks=9).evaluation_views()] == ["eval", "universal"]
    for view in views:  # every view's sequences are possible under its observer
        sample = task.sample(16, 9, seed=1, split=view.split)
        assert np.all(task.posterior(sample.tokens, **dict(view.observer)).impossible == -1)
    assert task.rules() is None


def test_batch_select_keeps_per_sequence_fields_whole():
    batch = ModularICL().sample(10, 24, seed=0)
    part = batch.select(np.arange(10) < 4, positions=slice(0, 6))
    assert part.tokens.shape == part.slot.shape == (4, 6)
    assert part.a.shape == part.in_distribution.shape == (4,)
