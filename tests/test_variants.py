"""Variants of n-recurrence are objects in registries (nrecur.tasks.variants), and a new one needs nothing else.

Checked here: the sampler draws exactly the sequences it drew before variants
became objects (pinned arrays and digests); the registries agree with the
config's ``Literal``; each kind's closed forms equal explicit conditioning on
its allowed rules; throwaway kinds and a throwaway fake source, registered only
inside a test, get a correct sampler, tensor filter, compiled kernel and dense
form (against brute-force enumeration); the per-period parser; the import
graph of tasks/ and observer/.
"""

from __future__ import annotations

import ast
import hashlib
import itertools
import re
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

import reference
from nrecur import NRecurrence
from nrecur.tasks.variants import (
    FAKE_SOURCES,
    MIN_ALTERNATIVE_MASS,
    PER_PERIOD_FORMS,
    TRANSITIONS,
    FakeSource,
    RecentFakes,
    TransitionKind,
    parse_per_period,
)
from test_observer_bruteforce import check_against_brute_force

# ---------------------------------------------------------------------------------------------- pinned samples


def digest(batch) -> str:
    h = hashlib.sha256()
    for name in batch.FIELDS:
        h.update(np.ascontiguousarray(getattr(batch, name)).astype("<i8").tobytes())
    return h.hexdigest()[:16]


#: Recorded from the sampler before variants became objects (commit 0f2f399); they must never change.
PINNED_DIGESTS = {
    ("either", "uniform", False): "9c75ab7591ba08b6",
    ("either", "uniform", True): "bcc1ffc639af2362",
    ("either", "recent", False): "d1d6ac198a02154d",
    ("either", "recent", True): "3a03f3a6e8279eb0",
    ("both", "uniform", False): "e486d190bc50757b",
    ("both", "uniform", True): "2ea37d7951be8239",
    ("both", "recent", False): "d1217ecc0b4aab75",
    ("both", "recent", True): "9f291e7b4dadde05",
    ("period", "uniform", False): "5e65a68622619a7f",
    ("period", "uniform", True): "2b698d18375215ab",
    ("period", "recent", False): "e3616c429e80f459",
    ("period", "recent", True): "6367befe94f690dc",
    ("target", "uniform", False): "bdf4bd5f8dee5b5f",
    ("target", "uniform", True): "f9a801a03b9235c3",
    ("target", "recent", False): "ebdcced2f011e685",
    ("target", "recent", True): "9c9e7ff873d74e36",
}


@pytest.mark.parametrize("kind, fake, outside", list(PINNED_DIGESTS))
def test_sampled_batches_are_bit_identical_to_the_pinned_ones(kind, fake, outside):
    task = NRecurrence(
        vocab_size=5, periods=(2, 3, 4), period_prior=(0.2, 0.5, 0.3), p_noise="0.6/n",
        p_transition={2: 0.3, 3: 0.1, 4: 0.2}, fake_source=fake, transition_changes=kind, target_outside=outside,
    )  # fmt: skip
    batch = task.sample(300, 40, seed=(17, 3))
    assert batch.transition_after.sum() > 500 and batch.is_fake.sum() > 300  # every draw is exercised
    assert digest(batch) == PINNED_DIGESTS[(kind, fake, outside)]


@pytest.mark.parametrize("kwargs, seed, expected", [
    (dict(p_noise="0.2/n", p_transition="0.2/n"), dict(batch_size=4097, length=6, seed=0), "5d9f815fa4a73a13"),  # two chunks
    (dict(vocab_size=3, target_prior=(0.6, 0.1, 0.3), p_noise=0.2, p_transition=0.3, transition_changes="both",
          fake_source="recent"), dict(batch_size=500, length=30, seed=123), "3ea44d0ea4e5b93c"),
    (dict(), dict(batch_size=64, length=32, seed=1), "84a5744b479f5092"),
])  # fmt: skip
def test_more_pinned_batches(kwargs, seed, expected):
    assert digest(NRecurrence(**kwargs).sample(**seed)) == expected


PINNED_ARRAYS = {  # tokens, periods, targets of NRecurrence(vocab_size=4, periods=(2, 3), p_noise=0.3,
    # p_transition=0.25, fake_source="recent", transition_changes=kind).sample(2, 16, seed=5)
    "either": (
        [[2, 1, 1, 3, 1, 3, 3, 1, 0, 3, 1, 2, 1, 3, 1, 3], [3, 0, 0, 1, 0, 0, 1, 0, 2, 2, 0, 3, 1, 2, 0, 2]],
        [[3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2], [3, 3, 3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 3, 3, 2]],
        [[2, 2, 2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 3, 2, 2, 3, 3, 3, 3, 1, 2, 2, 1, 1, 0, 0, 1]],
    ),
    "both": (
        [[2, 1, 1, 2, 2, 0, 3, 0, 1, 0, 3, 2, 1, 3, 0, 3], [3, 0, 0, 1, 0, 3, 2, 3, 2, 1, 0, 3, 1, 1, 3, 2]],
        [[3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3], [3, 2, 3, 3, 2, 2, 2, 2, 3, 2, 2, 3, 3, 2, 2, 3]],
        [[2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [1, 3, 2, 2, 3, 3, 3, 3, 0, 1, 1, 0, 0, 3, 3, 0]],
    ),
    "period": (
        [[2, 1, 1, 1, 1, 2, 3, 2, 0, 2, 3, 1, 2, 3, 0, 3], [3, 3, 3, 2, 0, 1, 3, 1, 2, 1, 0, 3, 0, 2, 1, 2]],
        [[3, 3, 3, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3], [3, 2, 3, 3, 2, 2, 2, 2, 3, 2, 2, 3, 3, 2, 2, 3]],
        [[2] * 16, [1] * 16],
    ),
    "target": (
        [[2, 1, 1, 3, 0, 3, 3, 0, 1, 3, 0, 2, 1, 3, 0, 3], [3, 0, 0, 1, 0, 0, 1, 0, 2, 1, 0, 3, 1, 1, 3, 2]],
        [[3] * 16, [3] * 16],
        [[2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1], [1, 3, 2, 2, 3, 3, 3, 3, 0, 1, 1, 0, 0, 3, 3, 0]],
    ),
}


@pytest.mark.parametrize("kind", list(PINNED_ARRAYS))
def test_sampled_arrays_are_the_pinned_ones(kind):
    task = NRecurrence(vocab_size=4, periods=(2, 3), p_noise=0.3, p_transition=0.25, fake_source="recent",
                       transition_changes=kind)  # fmt: skip
    batch = task.sample(2, 16, seed=5)
    tokens, period, target = PINNED_ARRAYS[kind]
    np.testing.assert_array_equal(batch.tokens, tokens)
    np.testing.assert_array_equal(batch.period, period)
    np.testing.assert_array_equal(batch.target, target)


# ---------------------------------------------------------------------------------------------- registries


def test_config_literals_agree_with_the_registries():
    for field, registry in (("transition_changes", TRANSITIONS), ("fake_source", FAKE_SOURCES)):
        annotation = NRecurrence.model_fields[field].annotation
        assert typing.get_origin(annotation) is typing.Literal
        assert set(typing.get_args(annotation)) == set(registry), field
        assert all(entry.name == name for name, entry in registry.items())
        assert NRecurrence.model_fields[field].default in registry


def test_the_spec_kinds_allow_what_the_spec_says():
    for name, kind in TRANSITIONS.items():
        for same_n, same_t in itertools.product((True, False), repeat=2):
            assert kind.allows(same_n, same_t) == reference.ALLOWED[name](same_n, same_t), (name, same_n, same_t)


def test_fake_source_windows():
    assert FAKE_SOURCES["uniform"].window == 0
    assert FAKE_SOURCES["recent"].window == 3 == reference.FAKE_WINDOW["recent"]
    with pytest.raises(ValueError, match="dense HMM form needs fakes that do not depend"):
        NRecurrence(p_noise=0.1, fake_source="recent").to_hmm()


# ---------------------------------------------------------------------------------------------- throwaway variants


class AnyRule(TransitionKind):
    """Every rule may follow, the old one included (with a fresh offset)."""

    name = "any"
    moves = frozenset({(True, True), (True, False), (False, True), (False, False)})


class NewPeriod(TransitionKind):
    """The period changes; the target may or may not."""

    name = "new_period"
    moves = frozenset({(False, True), (False, False)})


class ExactlyOne(TransitionKind):
    """Exactly one of period and target changes."""

    name = "exactly_one"
    moves = frozenset({(True, False), (False, True)})


class KeepRule(TransitionKind):
    """The same rule with a fresh offset: a phase jump."""

    name = "keep_rule"
    moves = frozenset({(True, True)})


class LastPeriodFakes(RecentFakes):
    """Fakes from the last n positions only."""

    name = "last_period"
    window = 1


THROWAWAY_KINDS = (AnyRule(), NewPeriod(), ExactlyOne(), KeepRule())
ALL_KINDS = tuple(TRANSITIONS.values()) + THROWAWAY_KINDS


@pytest.fixture
def throwaway_variants(monkeypatch):
    """Register the throwaway kinds and fake source in the package and in the reference, for one test."""
    for kind in THROWAWAY_KINDS:
        monkeypatch.setitem(TRANSITIONS, kind.name, kind)
        monkeypatch.setitem(reference.ALLOWED, kind.name, kind.allows)
    monkeypatch.setitem(FAKE_SOURCES, LastPeriodFakes.name, LastPeriodFakes())
    monkeypatch.setitem(reference.FAKE_WINDOW, LastPeriodFakes.name, LastPeriodFakes.window)


def with_variant(task: NRecurrence, **names) -> NRecurrence:
    """``task`` with a variant its ``Literal`` does not list (validation bypassed, in tests only)."""
    return task.model_copy(update=names)


def explicit_inflow(kind, pi, tau, p_transition, mass):
    """``[period, vocab]`` mass arriving at each rule, conditioning the prior on the allowed rules one by one."""
    P, V = mass.shape
    out = np.zeros((P, V))
    for n, t, n2, t2 in itertools.product(range(P), range(V), range(P), range(V)):
        allowed = [(a, b) for a in range(P) for b in range(V) if kind.allows(a == n, b == t)]
        total = sum(pi[a] * tau[b] for a, b in allowed)
        if (n2, t2) in allowed and total > 0:
            out[n2, t2] += mass[n, t] * p_transition[n] * pi[n2] * tau[t2] / total
    return out


@pytest.mark.parametrize("kind", ALL_KINDS, ids=lambda kind: kind.name)
def test_closed_form_inflow_equals_explicit_conditioning(kind):
    rng = np.random.default_rng(0)
    pi, tau = rng.dirichlet(np.ones(3)), rng.dirichlet(np.ones(4))
    p_transition = np.array([0.1, 0.0, 0.3])
    mass = rng.random((2, 3, 4))
    rate, arrival = kind.leave_rate(pi, tau, p_transition), kind.arrival(pi, tau)
    as_numpy = kind.inflow(mass * rate, arrival)
    as_torch = kind.inflow(torch.tensor(mass) * torch.tensor(rate), torch.tensor(arrival))
    for b in range(2):
        np.testing.assert_allclose(as_numpy[b], explicit_inflow(kind, pi, tau, p_transition, mass[b]), rtol=1e-12)
    np.testing.assert_allclose(as_torch.numpy(), as_numpy, rtol=1e-14)
    # The alternative mass: the prior of the reachable rules, the factors a change never draws left out.
    z = kind.alternative_mass(pi, tau)
    for n, t in itertools.product(range(3), range(4)):
        reach = sum(pi[a] * tau[b] for a in range(3) for b in range(4) if kind.allows(a == n, b == t))
        kept = (pi[n] if kind.keeps_period else 1.0) * (tau[t] if kind.keeps_target else 1.0)
        assert z[n, t] * kept == pytest.approx(reach, rel=1e-12)


@pytest.mark.parametrize("kind", THROWAWAY_KINDS, ids=lambda kind: kind.name)
@pytest.mark.parametrize("kwargs", [
    dict(vocab_size=2, periods=(2, 3), p_noise=0.2, p_transition=0.3),
    dict(vocab_size=2, periods=(3, 2), period_prior=(0.3, 0.7), target_prior=(0.8, 0.2), p_noise={2: 0.1, 3: 0.4},
         p_transition={2: 0.2, 3: 0.4}, fake_source="recent", target_outside=True),
    dict(vocab_size=3, periods=(2, 3), target_prior=(0.5, 0.0, 0.5), p_noise="0.3/n", p_transition="0.5/n",
         fake_source="recent"),
])  # fmt: skip
def test_a_new_kind_gets_an_exact_observer(throwaway_variants, kind, kwargs):
    """Registering a kind in variants.py is enough: tensor filter and kernel equal brute-force enumeration."""
    task = with_variant(NRecurrence(**kwargs), transition_changes=kind.name)
    assert kind.impossible_because(task.period_probs, task.target_probs, task.transition_by_period) is None
    tokens = task.sample(3, 5, seed=2).tokens
    for row in tokens:
        check_against_brute_force(task, row)


@pytest.mark.parametrize("kind", THROWAWAY_KINDS, ids=lambda kind: kind.name)
def test_a_new_kind_gets_a_dense_form_and_a_kernel_equal_to_it(throwaway_variants, kind):
    task = with_variant(NRecurrence(vocab_size=4, periods=(2, 3, 5), period_prior=(0.5, 0.2, 0.3), p_noise=0.2,
                                    p_transition={2: 0.1, 3: 0.3, 5: 0.2}), transition_changes=kind.name)  # fmt: skip
    tokens = task.sample(32, 30, seed=4).tokens
    dense = task.to_hmm().posterior(tokens)
    for backend in ("kernel", "torch"):
        fast = task.posterior(tokens, backend=backend)
        np.testing.assert_allclose(fast.predictive, dense.predictive, atol=1e-10, rtol=0)
        np.testing.assert_allclose(fast.log_likelihood, dense.log_likelihood, atol=1e-9, rtol=0)


@pytest.mark.parametrize("kind", THROWAWAY_KINDS, ids=lambda kind: kind.name)
def test_a_new_kind_gets_a_sampler_that_follows_the_exact_probabilities(throwaway_variants, kind):
    """Transitions only make allowed moves, and whole sequences come out as often as the observer says."""
    task = with_variant(NRecurrence(vocab_size=2, periods=(2, 3), period_prior=(0.4, 0.6), target_prior=(0.3, 0.7),
                                    p_noise=0.2, p_transition=0.35), transition_changes=kind.name)  # fmt: skip
    batch = task.sample(3000, 12, seed=0)
    tr = batch.transition_after[:, :-1]
    same_n = (batch.period[:, 1:] == batch.period[:, :-1])[tr]
    same_t = (batch.target[:, 1:] == batch.target[:, :-1])[tr]
    moves = set(zip(same_n.tolist(), same_t.tolist()))
    assert moves == set(kind.moves)
    L, N = 7, 100_000
    counts = np.bincount(task.sample(N, L, seed=1).tokens @ (2 ** np.arange(L)[::-1]), minlength=2**L)
    every = np.array(list(itertools.product(range(2), repeat=L)))
    expected = N * np.exp(task.posterior(every, impossible="inf").log_likelihood)
    keep = expected > 5
    chi2 = ((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum()
    dof = keep.sum() - 1
    assert chi2 < dof + 5 * np.sqrt(2 * dof), f"chi2={chi2:.1f}, dof={dof}"


def test_a_new_fake_source_gets_an_exact_observer(throwaway_variants):
    task = with_variant(NRecurrence(vocab_size=4, periods=(2, 3), p_noise=0.4), fake_source=LastPeriodFakes.name)
    for row in task.sample(4, 14, seed=3).tokens:
        check_against_brute_force(task, row)
    batch = task.sample(2000, 20, seed=1)
    for b, i in zip(*np.nonzero(batch.is_fake)):
        n, t = batch.period[b, i], batch.target[b, i]
        pool = set(batch.tokens[b, max(0, i - n) : i].tolist()) - {t}
        assert batch.tokens[b, i] in pool or not pool


@pytest.mark.parametrize("kind, periods, target_prior, message", [
    (NewPeriod(), (3,), None, "at least two periods"),
    (ExactlyOne(), (3,), (1.0, 0.0), r"at least two \(period, target\) rules"),
    (AnyRule(), (3,), (1.0, 0.0), None),
    (KeepRule(), (3,), (1.0, 0.0), None),
    (ExactlyOne(), (2, 3), (1.0, 0.0), None),
])
def test_feasibility_follows_from_the_moves(kind, periods, target_prior, message):
    pi = np.full(len(periods), 1.0 / len(periods))
    tau = np.array(target_prior or (0.5, 0.5))
    why = kind.impossible_because(pi, tau, np.full(len(periods), 0.1))
    assert why is None if message is None else why is not None and re.search(message, why)


def test_tiny_alternative_mass_is_refused_for_every_kind_that_must_leave_the_rule():
    pi, tau = np.array([1 - 1e-9, 1e-9]), np.array([0.5, 0.5])
    assert "prior mass below" in NewPeriod().impossible_because(pi, tau, np.array([0.1, 0.1]))
    assert AnyRule().impossible_because(pi, tau, np.array([0.1, 0.1])) is None
    assert MIN_ALTERNATIVE_MASS == 1e-6


def test_fake_source_base_has_no_draw():
    with pytest.raises(NotImplementedError):
        FakeSource().draw(np.zeros((1, 1), dtype=np.int64), 0, np.array([0]), np.array([0]), np.array([2]),
                          np.array([0.5]), 3)  # fmt: skip


# ---------------------------------------------------------------------------------------------- per-period parser


@pytest.mark.parametrize("text, value", [
    ("0.05", 0.05),
    (" 0 ", 0.0),
    ("2:0.1,3:0.05", {2: 0.1, 3: 0.05}),
    ("2: 0.1, 3 :0.05", {2: 0.1, 3: 0.05}),
    ("0.2/n", "0.2/n"),
    (" 1/n ", "1/n"),
])
def test_parse_per_period_accepts_the_three_forms(text, value):
    assert parse_per_period(text) == value


@pytest.mark.parametrize("text, message", [
    ("2:0.1,2:0.4", "period 2 is given twice"),
    ("-0.1", "not a number >= 0"),
    ("2:-0.1", "not a number >= 0"),
    ("-0.2/n", "not a number >= 0"),
    ("x/n", "'x' is not a number"),
    ("0,05", "not a number"),
    ("nan", "not a number"),
    ("inf", "not a number"),
    ("", "not a number"),
    ("two:0.1", "'two' is not a period"),
    ("2:0.1,", "'' is not a period"),
    ("2.5:0.1", "is not a period"),
])
def test_parse_per_period_rejects_bad_text_listing_the_forms(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse_per_period(text)
    if "twice" not in message:
        assert PER_PERIOD_FORMS in str(error.value)


def test_the_config_reads_text_with_the_same_parser():
    task = NRecurrence(periods=(2, 3), p_noise="2:0.1,3:0.05", p_transition=" 0.2/n")
    assert task.p_noise == {2: 0.1, 3: 0.05} and task.noise_by_period.tolist() == [0.1, 0.05]
    assert task.transition_by_period.tolist() == pytest.approx([0.1, 0.2 / 3])
    with pytest.raises(ValueError, match="p_noise: cannot read '2:0.1,2:0.4': period 2 is given twice"):
        NRecurrence(periods=(2, 3), p_noise="2:0.1,2:0.4")
    with pytest.raises(ValueError, match="p_transition: .*not a number >= 0"):
        NRecurrence(p_transition="-0.1")
    with pytest.raises(ValueError, match="p_noise: period 2 is given twice"):
        NRecurrence(periods=(2, 3), p_noise={2: 0.1, "2": 0.2, 3: 0.1})


# ---------------------------------------------------------------------------------------------- import graph

SRC = Path(__file__).resolve().parent.parent / "src" / "nrecur"
#: Inside tasks/ imports run left to right: base → variants → priors/sampler/hmm → dense (an HMMProcess) → nrecurrence.
TASK_LAYERS = {"base": 0, "variants": 1, "priors": 2, "sampler": 2, "hmm": 2, "dense": 3, "nrecurrence": 4}


def imports_of(path: Path) -> tuple[set[str], set[str]]:
    """Modules ``path`` imports from nrecur: (at run time, anywhere in the file; under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text())
    typing_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            typing_only.update(id(child) for stmt in node.body for child in ast.walk(stmt))
    runtime, checking = set(), set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        names = [name for name in names if name.split(".")[0] == "nrecur"]
        (checking if id(node) in typing_only else runtime).update(names)
    return runtime, checking


def test_task_modules_import_left_to_right():
    """The package-wide contracts live in tests/test_architecture.py; this is the order inside tasks/."""
    for short, layer in TASK_LAYERS.items():
        runtime, checking = imports_of(SRC / "tasks" / f"{short}.py")
        assert not any(name.startswith("nrecur.observer") for name in runtime | checking), short
        for name in runtime:
            other = name.removeprefix("nrecur.tasks.").split(".")[0]
            if name.startswith("nrecur.tasks.") and other in TASK_LAYERS:
                assert TASK_LAYERS[other] < layer, f"tasks/{short}.py imports nrecur.tasks.{other}"
