"""Head scores: which attention heads look back one token, do induction, or follow the period?

Every head's attention pattern (the model's ``blocks.L.attn.hook_pattern``) is
read on integer tokens (no tokenizer) and scored three ways (SPEC §5). The
*previous-token* score is the mass from query ``i`` on key ``i - 1`` (``i ≥ 1``).
The *induction* score is read on repeated random tokens ``r_1 … r_k r_1 … r_k``:
the mass from a query in the second half on the key just after the earlier copy
of its token, ``i - k + 1``. The *period score* for the true period ``n`` is read
on sequences of the run's task made deterministic (one rule each), grouped by
their period: the mass from query ``i`` on the keys ``j ≤ i`` with
``j ≡ i + 1 (mod n)`` — the earlier positions that share the phase of the
position being predicted — averaged over ``i ≥ n``. Each score has a *uniform
baseline*: what a head attending equally to every key ``0..i`` scores. We also
show each head's mean attention by relative offset ``i - j`` for every true
period (a period-``n`` head puts its mass at offsets ``n - 1, 2n - 1, …``) and
the pattern of each period's best head on one sequence of that period.

The *period heads* for ``n`` are the head that scores highest on period-``n``
sequences, whatever its score, and every other head whose score beats the
uniform baseline by at least ``margin``; the progress measures keep or ablate
the same heads.

How to read it: scores are in [0, 1]. The headline gives the best head's score
for each kind beside the same score on the run's own initialization
(``…_random_init``), and the period scores beside the uniform baseline
(``…_baseline``): a freshly initialized model attends almost uniformly, and the
best of many heads beats the uniform baseline a little by chance, so only the
gain over the initialization says what training built. A head that scores high
for every period reads the phase of the rule; one that scores high for a single
period is specialized (a previous-token head is also a period-2 head:
``i - 1 ≡ i + 1 (mod 2)``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np
import pydantic

from nrecur.analysis.base import cached
from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.model import GPT
from nrecur.tasks import NRecurrence, Task

__all__ = [
    "Example",
    "HeadScores",
    "HeadsOptions",
    "HeadsResult",
    "Scores",
    "attention_patterns",
    "compute",
    "induction_baseline",
    "induction_score",
    "induction_tokens",
    "offset_profile",
    "period_baseline",
    "period_heads",
    "period_mask",
    "period_score",
    "previous_token_baseline",
    "previous_token_score",
    "score_heads",
]


# ---------------------------------------------------------------------------- patterns and scores


def attention_patterns(model: GPT, tokens: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``[layer, batch, head, query_pos, key_pos]`` float32 attention patterns of ``model`` on ``tokens [batch, pos]``
    (the model's ``hook_pattern`` of every layer)."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layers)]
    patterns = cached(model, tokens, names, chunk)
    return np.stack([patterns[name] for name in names])


def induction_tokens(vocab_size: int, length: int, n_sequences: int, seed: int) -> tuple[np.ndarray, int]:
    """``r_1 … r_k r_1 … r_k`` with ``k = min(length // 2, vocab_size)`` distinct random tokens per sequence
    (a token that occurred twice in the first half would have two "next" keys); returns them ``[batch, 2k]`` and ``k``."""
    k = min(length // 2, vocab_size)
    rng = np.random.default_rng(seed)
    first = np.argsort(rng.random((n_sequences, vocab_size)), axis=1)[:, :k]  # [batch, k], distinct per row
    return np.concatenate([first, first], axis=1), k


def previous_token_score(pattern: np.ndarray) -> np.ndarray:
    """``pattern [batch, head, query_pos, key_pos]`` → ``[head]``: mean mass from query ``i ≥ 1`` on key ``i - 1``."""
    length = pattern.shape[-1]
    queries = np.arange(1, length)
    return pattern[:, :, queries, queries - 1].mean(axis=(0, 2))


def previous_token_baseline(length: int) -> float:
    """What uniform attention scores as :func:`previous_token_score`: the mean of ``1 / (i + 1)`` over ``i ≥ 1``."""
    return float(np.mean(1 / np.arange(2, length + 1)))


def induction_score(pattern: np.ndarray, k: int) -> np.ndarray:
    """On tokens ``r_1 … r_k r_1 … r_k``: ``pattern [batch, head, query_pos, key_pos]`` → ``[head]``, the mean mass
    from query ``i`` in ``k .. 2k-1`` on key ``i - k + 1``."""
    queries = np.arange(k, 2 * k)
    return pattern[:, :, queries, queries - k + 1].mean(axis=(0, 2))


def induction_baseline(k: int) -> float:
    """What uniform attention scores as :func:`induction_score`: the mean of ``1 / (i + 1)`` over ``i`` in ``k .. 2k-1``."""
    return float(np.mean(1 / np.arange(k + 1, 2 * k + 1)))


def period_mask(length: int, n: int) -> np.ndarray:
    """``[query_pos, key_pos]`` bool: ``key ≤ query`` and ``key ≡ query + 1 (mod n)``."""
    query, key = np.arange(length)[:, None], np.arange(length)[None, :]
    return (key <= query) & ((key - query - 1) % n == 0)


def period_score(pattern: np.ndarray, n: int) -> np.ndarray:
    """``pattern [batch, head, query_pos, key_pos]`` on sequences of period ``n`` → ``[head]``: mass on the keys of
    :func:`period_mask`, averaged over queries ``i ≥ n`` and sequences."""
    length = pattern.shape[-1]
    mask = period_mask(length, n)
    per_query = (pattern * mask).sum(-1)  # [batch, head, query_pos]
    return per_query[:, :, n:].mean(axis=(0, 2))


def period_baseline(length: int, n: int) -> float:
    """What uniform attention scores: the share of :func:`period_mask` keys among ``0..i``, averaged over ``i ≥ n``."""
    mask = period_mask(length, n)
    share = mask.sum(-1) / np.arange(1, length + 1)
    return float(share[n:].mean())


def offset_profile(pattern: np.ndarray) -> np.ndarray:
    """``pattern [batch, head, query_pos, key_pos]`` → ``[head, offset]``: mean mass on key ``i - d`` over queries ``i ≥ d``."""
    length = pattern.shape[-1]
    mean = pattern.mean(0)  # [head, query_pos, key_pos]
    return np.stack([np.diagonal(mean, offset=-d, axis1=1, axis2=2).mean(-1) for d in range(length)], axis=1)


def head_names(n_layers: int, n_heads: int) -> list[str]:
    """``"L.H"`` for every head, layer by layer."""
    return [f"{layer}.{head}" for layer in range(n_layers) for head in range(n_heads)]


def period_heads(scores: Mapping[int, np.ndarray], baseline: Mapping[int, float], margin: float) -> dict[int, list[tuple[int, int]]]:
    """period n → ``(layer, head)`` of its period heads, best first: the head with the highest score on period-n
    sequences whatever its score, then every other head whose score beats ``baseline[n]`` by at least ``margin``.

    ``scores``: period n → ``[layer, head]`` period scores on sequences of period n.
    """
    found = {}
    for n, values in scores.items():
        order = np.argsort(-values, axis=None, kind="stable")
        found[n] = [divmod(int(i), values.shape[1]) for rank, i in enumerate(order) if rank == 0 or values.flat[i] - baseline[n] >= margin]
    return found


# ---------------------------------------------------------------------------- one model's scores


def _deterministic(task: NRecurrence) -> NRecurrence:
    return task.model_copy(update={"p_noise": 0.0, "p_transition": 0.0})


@dataclass(frozen=True)
class HeadScores:
    """Scores of every head of one model (arrays ``[layer, head]``) on one set of sequences, and what the figures show."""

    previous_token: np.ndarray
    induction: np.ndarray
    k: int
    """Length of the repeated half of the induction sequences."""
    period: dict[int, np.ndarray]
    """period n → ``[layer, head]`` period score on sequences of period n (periods shorter than the context that
    the sequences drew)."""
    baseline: dict[int, float]
    """period n → what uniform attention scores (:func:`period_baseline`)."""
    offsets: dict[int, np.ndarray]
    """period n → ``[layer, head, offset]`` mean attention by relative offset on sequences of period n."""
    examples: dict[int, dict]
    """period n → one sequence of period n: ``tokens [pos]``, ``target``, ``patterns [layer, head, query_pos, key_pos]``."""


def score_heads(model: GPT, task: Task, length: int, n_sequences: int, seed: int) -> HeadScores:
    """Previous-token and induction scores for any task, period scores for n-recurrence (on the task made
    deterministic, grouped by period); the same sequences for a given ``seed``."""
    repeated, k = induction_tokens(task.vocab_size, length, n_sequences, seed)
    induction = attention_patterns(model, repeated)  # [layer, batch, head, query_pos, key_pos]
    period, baseline, offsets, examples = {}, {}, {}, {}
    if isinstance(task, NRecurrence):
        batch = _deterministic(task).sample(n_sequences, length, seed)
        patterns = attention_patterns(model, batch.tokens)  # [layer, batch, head, query_pos, key_pos]
        periods = np.asarray(batch.period)[:, 0]  # [batch]: one rule per sequence
        for n in task.periods:
            rows = np.flatnonzero(periods == n)
            if len(rows) == 0 or n >= length:  # no query i >= n to score
                continue
            period[n] = np.stack([period_score(layer[rows], n) for layer in patterns])
            baseline[n] = period_baseline(length, n)
            offsets[n] = np.stack([offset_profile(layer[rows]) for layer in patterns])
            examples[n] = {"tokens": batch.tokens[rows[0]], "target": int(np.asarray(batch.target)[rows[0], 0]),
                           "patterns": patterns[:, rows[0]]}  # fmt: skip
    else:
        patterns = attention_patterns(model, task.sample(n_sequences, length, seed).tokens)
    return HeadScores(
        previous_token=np.stack([previous_token_score(layer) for layer in patterns]),
        induction=np.stack([induction_score(layer, k) for layer in induction]),
        k=k,
        period=period,
        baseline=baseline,
        offsets=offsets,
        examples=examples,
    )


# ---------------------------------------------------------------------------- the analysis


class HeadsOptions(Options):
    n_sequences: int = pydantic.Field(1024, ge=8)
    """Fresh sequences of each kind the scores read: repeated random tokens, and the run's task made deterministic."""
    margin: float = pydantic.Field(0.25, ge=0, le=1)
    """A head whose period score beats the uniform baseline by at least this is a period head (each period's best head is one whatever its score)."""


@dataclass(frozen=True)
class Scores:
    """Every head's scores on one model, per head in the order of :attr:`HeadsResult.heads`."""

    previous_token: tuple[float, ...]
    induction: tuple[float, ...]
    period: tuple[tuple[float, ...], ...]
    """Per period (in the order of :attr:`HeadsResult.periods`), per head: the period score on sequences of that period."""

    @classmethod
    def of(cls, scores: HeadScores, periods: tuple[int, ...]) -> "Scores":
        flat = lambda values: tuple(float(v) for v in np.ravel(values))  # noqa: E731
        return cls(flat(scores.previous_token), flat(scores.induction), tuple(flat(scores.period[n]) for n in periods))


@dataclass(frozen=True)
class Example:
    """One sequence of a period and the pattern of that period's best head on it."""

    period: int
    head: str
    """``"L.H"``: the trained model's best head for this period."""
    tokens: tuple[int, ...]
    target: int
    pattern: list[list[float]]
    """``[query_pos, key_pos]``"""


@dataclass(frozen=True)
class HeadsResult(Result):
    """Previous-token, induction and period scores of every head, on the trained model and on its initialization."""

    headline: dict[str, float]
    options: HeadsOptions
    step: int
    heads: tuple[str, ...]
    """``"L.H"`` names, layer by layer (the order of every per-head list)."""
    periods: tuple[int, ...]
    """The periods scored (in the order of every per-period list); empty for a task that is not n-recurrence."""
    trained: Scores
    random_init: Scores
    """The same scores on the run's own initialization (the control)."""
    previous_token_baseline: float
    induction_baseline: float
    period_baseline: tuple[float, ...]
    """Per period, what uniform attention scores."""
    period_heads: tuple[tuple[str, ...], ...]
    """Per period, its period heads (see the module docstring), best first."""
    offsets: tuple[list[list[float]], ...]
    """Per period, per head, the trained model's mean attention by relative offset ``0 .. length-1`` on sequences of that period."""
    examples: tuple[Example, ...]
    """Per period, one sequence of that period and its best head's pattern."""


def _best(values: tuple[float, ...]) -> float:
    return float(np.max(values))


def headline_of(trained: Scores, control: Scores, periods, baselines, previous_baseline: float, induction_baseline_: float, above: int, above_init: int) -> dict[str, float]:
    """The best head's score of each kind beside its controls; per period and averaged over the periods."""
    headline = {
        "previous_token": _best(trained.previous_token),
        "previous_token_random_init": _best(control.previous_token),
        "previous_token_baseline": previous_baseline,
        "induction": _best(trained.induction),
        "induction_random_init": _best(control.induction),
        "induction_baseline": induction_baseline_,
    }
    if periods:
        # Means over the periods of each period's best head; per period below.
        headline["period_score"] = float(np.mean([_best(v) for v in trained.period]))
        headline["period_score_random_init"] = float(np.mean([_best(v) for v in control.period]))
        headline["period_score_baseline"] = float(np.mean(baselines))
        for n, mine, theirs, base in zip(periods, trained.period, control.period, baselines):
            headline[f"period_score/n={n}"] = _best(mine)
            headline[f"period_score_random_init/n={n}"] = _best(theirs)
            headline[f"period_score_baseline/n={n}"] = float(base)
        headline["heads_above_margin"] = float(above)
        headline["heads_above_margin_random_init"] = float(above_init)
    return headline


def _above_margin(scores: HeadScores, margin: float) -> int:
    """How many heads beat the uniform baseline by ``margin`` on at least one period."""
    hits = [values - scores.baseline[n] >= margin for n, values in scores.period.items()]
    return int(np.logical_or.reduce(hits).sum()) if hits else 0


def compute(run, options: HeadsOptions) -> HeadsResult:
    """Score every head of ``run.model`` and of its initialization on the same sequences; see the module docstring."""
    length, seed = run.config.length, options.seed
    scores = score_heads(run.model, run.task, length, options.n_sequences, seed)
    control = score_heads(initial_model(run), run.task, length, options.n_sequences, seed)
    config = run.model.config
    names = head_names(config.n_layers, config.n_heads)
    periods = tuple(scores.period)
    trained, random_init = Scores.of(scores, periods), Scores.of(control, periods)
    found = period_heads(scores.period, scores.baseline, options.margin)
    examples = []
    for n in periods:
        layer, head = found[n][0]
        example = scores.examples[n]
        examples.append(Example(period=n, head=f"{layer}.{head}", tokens=tuple(int(t) for t in example["tokens"]),
                                target=example["target"], pattern=example["patterns"][layer, head].tolist()))  # fmt: skip
    baselines = tuple(scores.baseline[n] for n in periods)
    previous_base, induction_base = previous_token_baseline(length), induction_baseline(scores.k)
    return HeadsResult(
        headline=headline_of(trained, random_init, periods, baselines, previous_base, induction_base,
                             _above_margin(scores, options.margin), _above_margin(control, options.margin)),  # fmt: skip
        options=options,
        step=run.step,
        heads=tuple(names),
        periods=periods,
        trained=trained,
        random_init=random_init,
        previous_token_baseline=previous_base,
        induction_baseline=induction_base,
        period_baseline=baselines,
        period_heads=tuple(tuple(f"{layer}.{head}" for layer, head in found[n]) for n in periods),
        offsets=tuple(scores.offsets[n].reshape(len(names), -1).tolist() for n in periods),
        examples=tuple(examples),
    )


HEADS = register(
    Analysis(
        name="heads",
        description="previous-token, induction and period scores of every attention head, beside the run's initialization and uniform attention",
        options=HeadsOptions,
        result=HeadsResult,
        compute=compute,
        applies=lambda run: "the model has no attention layers: no heads to score" if run.model.config.n_layers == 0 else None,
        figures="nrecur.analysis.figures.heads:draw",
        over_training={"n_sequences": 256},
    )
)
