"""A joint rule prior for n-recurrence (``rule_prior``) and the in-distribution observer of held-out rules.

Checked here: the observer (compiled kernel and tensor filter) under random
joint priors — random supports and weights, with every variant — equals
brute-force enumeration of hidden paths (``tests/reference.py``, which reads
``rule_prior`` on its own); the kinds' closed forms under a joint table equal
explicit conditioning; the dense form equals the fast one; the sampler draws
whole sequences as often as the observer says and never leaves the support; a
product prior written as a joint one changes nothing; the config forms
(triples, pairs, mapping, JSON, TOML sweep specs, the command line); every bad
``rule_prior`` is one line naming the problem (exit 2 from the command line,
nothing written); ``prior="in_distribution"`` equals brute force under the
restricted prior; evaluation reports KL to both observers, and a short
training run with held-out rules logs them.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pydantic
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from torch import nn

import reference
from nrecur import NRecurrence
from nrecur._config import format_error
from nrecur.cli import main
from nrecur.model import GPTConfig
from nrecur.sweep import expand, spec_from_data
from nrecur.tasks.priors import JointPrior, ProductPrior
from nrecur.tasks.variants import TRANSITIONS
from nrecur.train import RunConfig, TrainConfig, build_eval_sets, evaluate, train
from nrecur.train.data import held_out_rules
from nrecur.train.folder import RunFolder
from test_observer_bruteforce import TOL, check_against_brute_force, max_length, per_period
from test_variants import ALL_KINDS, THROWAWAY_KINDS, throwaway_variants, with_variant  # noqa: F401

#: What a joint prior the task refuses because of a rule change may say (the validation tests below cover it).
TRANSITION_REFUSALS = ("no rule of positive weight it may change to", "prior mass below")


def joint_table(task: NRecurrence) -> np.ndarray:
    """``[period, vocab]`` the reference's rule weights as a table."""
    weights = reference.rule_weights(task)
    return np.array([[weights[(n, t)] for t in range(task.vocab_size)] for n in task.periods])


# ---------------------------------------------------------------------------------------------- observer = brute force


@st.composite
def joint_tasks(draw):
    """Tiny tasks with a random joint prior: a random support (sometimes every rule), random weights or
    the pairs form (uniform over the support), and every variant of SPEC §2.3."""
    vocab_size = draw(st.integers(2, 3))
    periods = tuple(draw(st.sampled_from([(2,), (3,), (2, 3), (3, 2), (2, 4)])))
    rules = [(n, t) for n in periods for t in range(vocab_size)]
    support = draw(st.lists(st.sampled_from(rules), min_size=1, max_size=len(rules), unique=True))
    if draw(st.booleans()):
        rule_prior = [[n, t] for n, t in support]
    else:
        weights = draw(st.lists(st.sampled_from([0.0, 0.5, 1.0, 2.0, 7.0]), min_size=len(support), max_size=len(support)))
        assume(sum(weights) > 0)
        rule_prior = [[n, t, w] for (n, t), w in zip(support, weights)]
    kwargs = dict(
        vocab_size=vocab_size,
        periods=periods,
        rule_prior=rule_prior,
        p_noise=per_period(draw, periods, [0.0, 0.1, 0.35]),
        p_transition=per_period(draw, periods, [0.0, 0.05, 0.3]),
        target_outside=draw(st.booleans()),
        fake_source=draw(st.sampled_from(["uniform", "recent"])),
        transition_changes=draw(st.sampled_from(["either", "both", "period", "target"])),
    )
    try:
        return NRecurrence(**kwargs)
    except ValueError as error:
        assert any(words in str(error) for words in TRANSITION_REFUSALS), error
        assume(False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(task=joint_tasks(), seed=st.integers(0, 2**31 - 1))
def test_observer_under_a_joint_prior_equals_brute_force(task, seed):
    tokens = task.sample(1, max_length(task), seed=seed).tokens[0]
    check_against_brute_force(task, tokens)


@pytest.mark.parametrize("kind", THROWAWAY_KINDS, ids=lambda kind: kind.name)
def test_a_new_kind_under_a_joint_prior_equals_brute_force(throwaway_variants, kind):
    """A kind registered in variants.py needs nothing else for joint priors either."""
    task = with_variant(
        NRecurrence(vocab_size=3, periods=(2, 3), rule_prior=[[2, 0, 3.0], [2, 1, 1.0], [3, 1, 2.0], [3, 2, 0.5]],
                    p_noise=0.2, p_transition={2: 0.3, 3: 0.2}, fake_source="recent"),
        transition_changes=kind.name,
    )  # fmt: skip
    assert task.rule_distribution.transition_problem(kind, task.transition_by_period) is None
    for row in task.sample(3, 5, seed=2).tokens:
        check_against_brute_force(task, row)


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda kind: kind.name)
def test_joint_closed_forms_equal_explicit_conditioning(kind):
    """Inflow with a joint table's leave rate and arrival = the mass moved rule by rule, conditioning the
    table on the rules each change may reach; ``reachable`` = that conditioning's normalizer."""
    rng = np.random.default_rng(1)
    table = rng.random((3, 4)) * (rng.random((3, 4)) < 0.8)
    table /= table.sum()
    p_transition = np.array([0.1, 0.0, 0.3])
    prior = JointPrior(table, (2, 3, 4))
    mass = rng.random((2, 3, 4)) * (table > 0)
    got = kind.inflow(mass * prior.leave_rate(kind, p_transition), prior.arrival(kind))
    for b in range(2):
        want = np.zeros((3, 4))
        for n, t, n2, t2 in itertools.product(range(3), range(4), range(3), range(4)):
            allowed = [(a, c) for a in range(3) for c in range(4) if kind.allows(a == n, c == t)]
            total = sum(table[a, c] for a, c in allowed)
            if (n2, t2) in allowed and total > 0:
                want[n2, t2] += mass[b, n, t] * p_transition[n] * table[n2, t2] / total
        np.testing.assert_allclose(got[b], want, rtol=1e-12, atol=1e-15)
    for n, t in itertools.product(range(3), range(4)):
        reach = sum(table[a, c] for a in range(3) for c in range(4) if kind.allows(a == n, c == t))
        assert kind.reachable(table)[n, t] == pytest.approx(reach, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("kind", ["either", "both", "period", "target"])
def test_the_dense_form_under_a_joint_prior_equals_the_fast_filter(kind):
    task = NRecurrence(
        vocab_size=4, periods=(2, 3, 5), p_noise=0.2, p_transition={2: 0.1, 3: 0.3, 5: 0.2}, transition_changes=kind,
        rule_prior=[[n, t, 1.0 + (n * t) % 3] for n in (2, 3, 5) for t in range(4) if (n + t) % 4 != 1],
    )  # fmt: skip
    tokens = task.sample(32, 30, seed=4).tokens
    dense = task.to_hmm().posterior(tokens)
    np.testing.assert_allclose(task.to_hmm().initial.reshape(-1), dense_initial(task), atol=1e-15)
    for backend in ("kernel", "torch"):
        fast = task.posterior(tokens, backend=backend)
        np.testing.assert_allclose(fast.predictive, dense.predictive, atol=1e-10, rtol=0)
        np.testing.assert_allclose(fast.log_likelihood, dense.log_likelihood, atol=1e-9, rtol=0)


def dense_initial(task):
    weights = reference.rule_weights(task)
    return np.array([weights[(n, t)] / n for n in task.periods for t in range(task.vocab_size) for _ in range(n)])


@pytest.mark.parametrize("extra", [
    dict(),
    dict(p_noise="0.2/n", p_transition="0.2/n"),
    dict(p_noise=0.3, p_transition=0.1, fake_source="recent", transition_changes="both", target_outside=True),
])  # fmt: skip
def test_a_product_prior_written_as_a_joint_one_changes_nothing(extra):
    product = NRecurrence(vocab_size=5, periods=(2, 3, 4), period_prior=(0.2, 0.5, 0.3),
                          target_prior=(0.1, 0.3, 0.2, 0.4, 0.0), **extra)  # fmt: skip
    joint = NRecurrence(
        vocab_size=5, periods=(2, 3, 4),
        rule_prior=[[n, t, p * q] for n, p in zip((2, 3, 4), (0.2, 0.5, 0.3)) for t, q in enumerate((0.1, 0.3, 0.2, 0.4, 0.0))],
        **extra,
    )  # fmt: skip
    assert joint.rules() == product.rules()
    np.testing.assert_allclose(joint.period_probs, product.period_probs, rtol=1e-12)
    np.testing.assert_allclose(joint.target_probs, product.target_probs, rtol=1e-12, atol=1e-15)
    tokens = product.sample(64, 25, seed=3).tokens
    for backend in ("kernel", "torch"):
        a, b = product.posterior(tokens, backend=backend), joint.posterior(tokens, backend=backend)
        for name in ("predictive", "period", "target", "countdown", "log_loss"):
            np.testing.assert_allclose(getattr(b, name), getattr(a, name), atol=1e-12, rtol=0)


# ---------------------------------------------------------------------------------------------- the sampler


@pytest.mark.parametrize("kind", ["either", "both", "period", "target"])
def test_the_sampler_follows_the_exact_probabilities_of_a_joint_prior(kind):
    """Only rules of the support, only allowed moves, first rules as often as the prior says, and whole
    sequences as often as the observer says (chi-square over every sequence of 7 binary tokens)."""
    task = NRecurrence(vocab_size=2, periods=(2, 3), rule_prior=[[2, 0, 1.0], [2, 1, 3.0], [3, 0, 2.0], [3, 1, 0.5]],
                       p_noise=0.2, p_transition=0.35, transition_changes=kind)  # fmt: skip
    batch = task.sample(4000, 12, seed=0)
    table = task.rule_probs
    seen = {(int(n), int(t)) for n, t in zip(batch.period.ravel(), batch.target.ravel())}
    assert seen <= set(task.rules())
    tr = batch.transition_after[:, :-1]
    moves = set(zip((batch.period[:, 1:] == batch.period[:, :-1])[tr].tolist(), (batch.target[:, 1:] == batch.target[:, :-1])[tr].tolist()))
    assert moves == set(TRANSITIONS[kind].moves)
    first = np.array([[np.mean((batch.period[:, 0] == n) & (batch.target[:, 0] == t)) for t in range(2)] for n in (2, 3)])
    assert np.all(np.abs(first - table) < 4 * np.sqrt(table * (1 - table) / 4000) + 1e-9)
    L, N = 7, 100_000
    counts = np.bincount(task.sample(N, L, seed=1).tokens @ (2 ** np.arange(L)[::-1]), minlength=2**L)
    every = np.array(list(itertools.product(range(2), repeat=L)))
    expected = N * np.exp(task.posterior(every, impossible="inf").log_likelihood)
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = keep.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), f"chi2={chi2:.1f}, dof={dof}"


def test_a_joint_prior_with_a_large_table_samples_in_blocks():
    """The masked tables of a rule change are built a block of rows at a time; the draws stay in the support."""
    V = 512
    task = NRecurrence(vocab_size=V, periods=(2, 3, 4, 5), p_transition=0.5, transition_changes="both",
                       rule_prior=[[n, t, 1 + t % 7] for n in (2, 3, 4, 5) for t in range(V) if (t + n) % 3])  # fmt: skip
    batch = task.sample(2000, 8, seed=0)
    assert batch.transition_after.sum() > 5000
    assert {(int(n), int(t)) for n, t in zip(batch.period.ravel(), batch.target.ravel())} <= set(task.rules())


def test_without_a_joint_prior_the_task_keeps_the_product_and_its_draws():
    """The pinned batches of test_variants.py hold the product's draws to the bit; here: which prior it is."""
    task = NRecurrence(p_noise="0.2/n", p_transition="0.2/n")
    assert task.rule_prior is None and "rule_prior" not in task.model_dump()
    assert isinstance(task.rule_distribution, ProductPrior)


# ---------------------------------------------------------------------------------------------- config forms


def test_triples_pairs_and_a_mapping_give_the_same_prior():
    triples = NRecurrence(periods=(2, 3), rule_prior=[[2, 1, 2], [3, 4, 1.0]])
    mapping = NRecurrence(periods=(2, 3), rule_prior={(2, 1): 2.0, (3, 4): 1})
    assert triples == mapping and triples.rule_prior == ((2, 1, 2.0), (3, 4, 1.0))
    assert triples.rules() == ((2, 1), (3, 4))
    np.testing.assert_allclose(triples.rule_probs[0, 1], 2 / 3)
    pairs = NRecurrence(periods=(2, 3), rule_prior=[[2, 1], [3, 4], [3, 0]])
    assert pairs.rule_prior == ((2, 1, 1.0), (3, 4, 1.0), (3, 0, 1.0))
    np.testing.assert_allclose(pairs.rule_probs[pairs.rule_probs > 0], 1 / 3)
    np.testing.assert_allclose(pairs.period_probs, [1 / 3, 2 / 3])
    zero = NRecurrence(periods=(2, 3), rule_prior=[[2, 1, 1], [3, 4, 0]])  # weight 0: the rule is absent
    assert zero.rules() == ((2, 1),)
    # A uniform marginal prior given explicitly is no conflict.
    NRecurrence(periods=(2, 3), period_prior=(0.5, 0.5), rule_prior=[[2, 1], [3, 4]])


def test_a_run_config_with_a_joint_prior_round_trips_through_json():
    task = NRecurrence(periods=(2, 3), rule_prior=[[2, 1, 2], [3, 4, 1]], p_transition=0.1)
    config = RunConfig(task=task, model=GPTConfig(vocab_size=8, n_ctx=9), train=TrainConfig(steps=5))
    data = json.loads(config.model_dump_json())
    assert data["task"]["rule_prior"] == [[2, 1, 2.0], [3, 4, 1.0]]
    assert RunConfig.model_validate_json(config.model_dump_json()) == config
    # Without one, config.json has no rule_prior at all: sweep ids and cache keys stay what they were.
    plain = RunConfig(task=NRecurrence(), model=GPTConfig(vocab_size=8, n_ctx=9), train=TrainConfig(steps=5))
    assert "rule_prior" not in json.loads(plain.model_dump_json())["task"]


def test_sweep_specs_take_a_joint_prior_in_the_base_and_on_an_axis(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(
        'preset = "tiny"\n[base.train]\nsteps = 20\n[base.task]\nperiods = [2, 3]\nrule_prior = [[2, 0, 3.0], [3, 1, 1.0]]\n'
        '[grid]\n"task.rule_prior" = [[[2, 0], [3, 1]], [[2, 0, 1], [2, 1, 1], [3, 1, 2]]]\n'
    )
    from nrecur.sweep import load_spec

    trials = expand(load_spec(path))
    assert [trial.config.task.rule_prior for trial in trials] == [
        ((2, 0, 1.0), (3, 1, 1.0)), ((2, 0, 1.0), (2, 1, 1.0), (3, 1, 2.0)),
    ]  # fmt: skip
    base_only = expand(spec_from_data({"preset": "tiny", "base": {"task": {"periods": [2, 3], "rule_prior": [[2, 0], [3, 1]]}}}))
    assert base_only[0].config.task.rule_prior == ((2, 0, 1.0), (3, 1, 1.0))


def test_the_command_line_reads_a_joint_prior_as_json(tmp_path, capsys):
    out = tmp_path / "sample.npz"
    code = main(["sample", "--periods", "2", "3", "--rule-prior", "[[2, 0, 3], [3, 1, 1]]", "--batch-size", "50",
                 "--length", "12", "--out", str(out)])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    with np.load(out) as data:
        rules = set(zip(data["period"].ravel().tolist(), data["target"].ravel().tolist()))
    assert rules <= {(2, 0), (3, 1)}


# ---------------------------------------------------------------------------------------------- bad input

#: (rule_prior and other task fields, words the one line must hold: the problem and the allowed values)
BAD_RULE_PRIORS = [
    (dict(rule_prior=[[7, 1, 1.0]]), ["rule (7, 1) has period 7", "periods [2, 3, 4, 5]"]),
    (dict(rule_prior=[[2, 9, 1.0]]), ["rule (2, 9) has target 9", "token 0..7"]),
    (dict(rule_prior=[[2, 1, -1.0], [3, 1, 1.0]]), ["weight of rule (2, 1)", "finite number >= 0", "-1"]),
    (dict(rule_prior=[[2, 1, float("nan")]]), ["weight of rule (2, 1)", "finite number >= 0"]),
    (dict(rule_prior=[[2, 1, 0.0], [3, 1, 0.0]]), ["every weight is 0", "weight > 0"]),
    (dict(rule_prior=[[2, 1], [3, 1], [2, 1]]), ["rule (2, 1) is given twice"]),
    (dict(rule_prior=[]), ["at least one rule", "[n, t, weight] triples"]),
    (dict(rule_prior=[[2, 1, 1.0], [3, 1]]), ["[n, t, weight] triples", "all alike"]),
    (dict(rule_prior=[[2.5, 1]]), ["period must be a whole number", "2.5"]),
    (dict(rule_prior=[[2, 1], [3, 2]], p_transition=0.1, transition_changes="period"),
     ["rule (2, 1) has p_transition 0.1 > 0 but no rule of positive weight it may change to",
      "transition_changes='period'", "(n', 1) with n' != 2"]),
    (dict(rule_prior=[[2, 1], [2, 2]], p_transition={2: 0.0, 3: 0.2, 4: 0.0, 5: 0.0}, transition_changes="period"), None),
    (dict(rule_prior=[[2, 1], [3, 1]], p_transition=0.1, transition_changes="both"),
     ["rule (2, 1)", "(n', t') with n' != 2 and t' != 1"]),
    (dict(rule_prior=[[2, 1]], period_prior=(0.7, 0.1, 0.1, 0.1)),
     ["rule_prior replaces period_prior and target_prior", "period_prior=[0.7, 0.1, 0.1, 0.1]"]),
    (dict(rule_prior=[[2, 1]], target_prior=(0.3,) + (0.1,) * 7), ["target_prior must be left out (or uniform)"]),
]  # fmt: skip


@pytest.mark.parametrize("kwargs, words", BAD_RULE_PRIORS, ids=[str(i) for i in range(len(BAD_RULE_PRIORS))])
def test_a_bad_rule_prior_is_one_line_naming_the_problem(kwargs, words):
    if words is None:  # the rule that cannot change never has to
        NRecurrence(**kwargs)
        return
    with pytest.raises(pydantic.ValidationError) as error:
        NRecurrence(**kwargs)
    line = format_error(error.value)
    assert "\n" not in line and line.startswith("rule_prior")
    for word in words:
        assert word in line, line


TINY_RUN = ["--n-ctx", "10", "--d-model", "16", "--n-layers", "1", "--n-heads", "2", "--d-head", "8", "--d-mlp", "32",
            "--steps", "5", "--batch-size", "8", "--eval-size", "16", "--device", "cpu", "--no-progress"]  # fmt: skip


@pytest.mark.parametrize("rule_prior, extra, words", [
    ("[[7, 1, 1]]", [], "rule (7, 1) has period 7, which is not one of periods [2, 3]"),
    ("[[2, 9]]", [], "rule (2, 9) has target 9, which is not a token 0..5"),
    ("[[2, 1, -2], [3, 1, 1]]", [], "the weight of rule (2, 1) must be a finite number >= 0, got -2"),
    ("[[2, 1, 0]]", [], "every weight is 0"),
    ("[[2, 1], [2, 1]]", [], "rule (2, 1) is given twice"),
    ("[[2, 1], [3, 2]]", ["--p-transition", "0.1", "--transition-changes", "target"], "rule (2, 1) has p_transition 0.1 > 0"),
    ("[[2, 1]]", ["--period-prior", "0.3", "0.7"], "rule_prior replaces period_prior and target_prior"),
    ("[[2, 1", [], "cannot read '[[2, 1' as JSON"),
])  # fmt: skip
def test_a_bad_rule_prior_on_the_command_line_is_exit_2_one_line_and_writes_nothing(rule_prior, extra, words, tmp_path, capsys):
    out = tmp_path / "run"
    capsys.readouterr()
    try:
        code = main(["train", "--vocab-size", "6", "--periods", "2", "3", *TINY_RUN, "--rule-prior", rule_prior, *extra,
                     "--out", str(out)])  # fmt: skip
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    problem = [line for line in err.strip().splitlines() if not line.startswith("usage:")]  # argparse may add usage
    assert len(problem) == 1 and words in problem[0], err
    assert not out.exists()


# ---------------------------------------------------------------------------------------------- the in-distribution observer


def restricted(task: NRecurrence, held_out) -> NRecurrence:
    """The in-distribution task built from the reference's rule weights (not the package's restriction)."""
    weights = reference.rule_weights(task)
    kept = [[n, t, w] for (n, t), w in weights.items() if w > 0 and (n, t) not in held_out]
    return task.model_copy(update={"rule_prior": tuple(map(tuple, kept)), "period_prior": None, "target_prior": None})


@pytest.mark.parametrize("kwargs, held_out", [
    (dict(vocab_size=3, periods=(2, 3), p_noise=0.2, p_transition=0.2), {(2, 0), (3, 2)}),
    (dict(vocab_size=3, periods=(2, 3), period_prior=(0.3, 0.7), target_prior=(0.5, 0.2, 0.3), p_noise=0.1,
          p_transition={2: 0.3, 3: 0.1}, transition_changes="both", fake_source="recent"), {(3, 1)}),
    (dict(vocab_size=3, periods=(2, 3), rule_prior=[[2, 0, 2], [2, 1, 1], [3, 0, 0.5], [3, 1, 3], [3, 2, 1]], p_noise=0.2,
          p_transition=0.25, transition_changes="target", target_outside=True), {(3, 2)}),
])  # fmt: skip
def test_the_in_distribution_observer_equals_brute_force_under_the_restricted_prior(kwargs, held_out):
    task = NRecurrence(**kwargs)
    memorizing = restricted(task, held_out)
    for row in memorizing.sample(3, 5, seed=7).tokens:
        predictive, _, log_prefix = reference.brute_force_posterior(memorizing, row)
        for backend in ("kernel", "torch"):
            post = task.posterior(row[None], prior="in_distribution", held_out=held_out, backend=backend)
            np.testing.assert_allclose(post.predictive[0], predictive, atol=TOL, rtol=0)
            np.testing.assert_allclose(post.log_likelihood[0], log_prefix[-1], atol=TOL, rtol=0)
    assert set(task.in_distribution(held_out).rules()) == set(task.rules()) - held_out


def test_the_universal_prior_is_the_default_and_nothing_held_out_is_the_universal_prior():
    task = NRecurrence(p_noise=0.1, p_transition=0.1)
    tokens = task.sample(16, 20, seed=0).tokens
    default = task.posterior(tokens).predictive
    np.testing.assert_array_equal(task.posterior(tokens, prior="universal").predictive, default)
    np.testing.assert_allclose(task.posterior(tokens, prior="in_distribution", held_out=[]).predictive, default, atol=1e-14)


@pytest.mark.parametrize("call, message", [
    (dict(prior="in_distribution"), "needs the rules the run held out of training: held_out="),
    (dict(prior="memorizing"), "prior must be one of ('universal', 'in_distribution')"),
    (dict(prior="in_distribution", held_out=[(7, 0)]), "held_out names rules the task does not have"),
    (dict(prior="in_distribution", held_out=[(n, t) for n in (2, 3) for t in range(3)]), "holds every one of the task's 6 rules out"),
])  # fmt: skip
def test_bad_observer_priors_are_named(call, message):
    task = NRecurrence(vocab_size=3, periods=(2, 3))
    with pytest.raises(ValueError) as error:
        task.posterior(np.zeros((1, 4), dtype=np.int64), **call)
    assert message in str(error.value)


def test_an_in_distribution_prior_that_leaves_a_rule_stuck_is_named_and_evaluation_goes_on_without_it():
    task = NRecurrence(vocab_size=3, periods=(2, 3), p_transition=0.1, transition_changes="period")
    with pytest.raises(ValueError, match=r"the in-distribution prior .* rule \(2, 0\) has p_transition 0.1 > 0"):
        task.in_distribution({(3, 0)})
    with pytest.warns(UserWarning, match="no in_dist_mem evaluation"):
        sets = build_eval_sets(task, 12, 64, seed=0, held_out=frozenset({(3, 0)}))
    assert {"eval", "in_dist", "out_dist"} <= set(sets) and "in_dist_mem" not in sets


class ObserverModel(nn.Module):
    """A stand-in 'model' whose logits are an observer's log predictive."""

    def __init__(self, task, **observer) -> None:
        super().__init__()
        self.task, self.observer = task, observer
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, tokens):
        predictive = torch.as_tensor(np.asarray(self.task.posterior(tokens.numpy(), **self.observer).predictive))
        return predictive.clamp_min(1e-300).log()


@pytest.mark.parametrize("kwargs", [
    dict(p_noise=0.05, p_transition=0.05),
    dict(periods=(2, 3), rule_prior=[[2, t, 1 + t] for t in range(8)] + [[3, t, 2] for t in range(0, 8, 2)]),
])  # fmt: skip
def test_evaluation_scores_both_observers_on_in_and_out_of_distribution_sequences(kwargs):
    task = NRecurrence(**kwargs)
    held_out = held_out_rules(task, 0.25, seed=0)
    sets = build_eval_sets(task, 20, 400, seed=1, held_out=held_out)
    assert list(sets) == ["eval", "in_dist", "out_dist", "in_dist_mem"]
    assert len(sets["in_dist_mem"]) == len(sets["in_dist"]) and torch.equal(sets["in_dist_mem"].tokens, sets["in_dist"].tokens)
    universal = ObserverModel(task)
    memorizing = ObserverModel(task, prior="in_distribution", held_out=held_out)
    for name in ("eval", "in_dist", "out_dist"):
        assert evaluate(universal, sets[name]).kl == pytest.approx(0.0, abs=1e-9)
    assert evaluate(memorizing, sets["in_dist_mem"]).kl == pytest.approx(0.0, abs=1e-9)
    assert evaluate(universal, sets["in_dist_mem"]).kl > 1e-3  # the two observers differ on these sequences
    assert evaluate(memorizing, sets["in_dist"]).kl > 1e-3
    assert sets["in_dist_mem"].bayes_log_loss.mean() < sets["in_dist"].bayes_log_loss.mean()  # the prior that knows more
    assert "in_dist_mem" not in build_eval_sets(task, 20, 50, seed=1)


def test_a_short_training_run_with_held_out_rules_reports_kl_to_both_observers(tmp_path):
    task = NRecurrence(vocab_size=6, periods=(2, 3), p_noise=0.05, p_transition=0.05)
    model = GPTConfig(vocab_size=6, n_ctx=12, d_model=32, n_layers=1, n_heads=2, d_head=16, d_mlp=64)
    settings = dict(steps=120, batch_size=32, lr=3e-3, warmup_steps=10, eval_every=60, eval_size=256, device="cpu",
                    held_out_fraction=0.25)  # fmt: skip
    train(RunConfig(task=task, model=model, train=TrainConfig(**settings)), tmp_path / "run", progress=False)
    metrics = RunFolder(tmp_path / "run").read_metrics()
    names = ("in_dist_mem/kl", "in_dist/kl", "out_dist/kl", "eval/kl")
    assert all(name in row for name in names for row in metrics) and len(metrics) == 3
    for name in ("in_dist_mem/kl", "in_dist/kl"):  # it learns the training rules
        assert metrics[-1][name] < 0.7 * metrics[0][name], (name, metrics[0][name], metrics[-1][name])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert "in_dist_mem" in summary["final"] and len(summary["held_out_rules"]) == 3
