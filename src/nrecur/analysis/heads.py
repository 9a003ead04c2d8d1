"""Head scores: which attention heads look back one token, do induction, or follow the period?

Every head's attention pattern is read on integer tokens (no tokenizer) and
scored three ways (SPEC §5). The *previous-token* score is the mass from query
``i`` on key ``i - 1`` (``i ≥ 1``). The *induction* score is read on repeated
random tokens ``r_1 … r_k r_1 … r_k``: the mass from a query in the second half
on the key just after the earlier copy of its token, ``i - k + 1``. The *period
score* for the true period ``n`` is read on sequences of the run's task made
deterministic (one rule each), grouped by their period: the mass from query
``i`` on the keys ``j ≤ i`` with ``j ≡ i + 1 (mod n)`` — the earlier positions
that share the phase of the position being predicted — averaged over ``i ≥ n``.
Its baseline is the share of such keys, what uniform attention scores. We also
show each head's mean attention by relative offset ``i - j`` for every true
period (a period-``n`` head puts its mass at offsets ``n - 1, 2n - 1, …``) and
its pattern on one sequence of each period.

How to read it: scores are in [0, 1]. A period head for ``n`` scores far above
the baseline on sequences of period ``n`` (the heads named under "period heads"
beat it by at least ``margin``); a head that scores high for every period reads
the phase of the rule, one that scores high for a single period is specialized.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nrecur.analysis.base import OKABE_ITO, cached, progress_bar, pyplot, save_figure
from nrecur.analysis.legacy import register_analysis
from nrecur.model import GPT
from nrecur.tasks import NRecurrence, Task

__all__ = [
    "HeadsResult",
    "HeadsTrainingResult",
    "attention_patterns",
    "heads",
    "heads_over_training",
    "induction_score",
    "offset_profile",
    "period_baseline",
    "period_mask",
    "period_score",
    "previous_token_score",
]


# ---------------------------------------------------------------------------- patterns and scores


def attention_patterns(model: GPT, tokens: np.ndarray, chunk: int = 256) -> np.ndarray:
    """``[layer, batch, head, query, key]`` float32 attention patterns of ``model`` on ``tokens [batch, pos]``."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(model.config.n_layers)]
    patterns = cached(model, tokens, names, chunk)
    return np.stack([patterns[name] for name in names])


def induction_tokens(vocab_size: int, length: int, n_sequences: int, seed: int) -> tuple[np.ndarray, int]:
    """``r_1 … r_k r_1 … r_k`` with ``k = min(length // 2, vocab_size)`` distinct random tokens per sequence
    (a token that occurred twice in the first half would have two "next" keys); returns them and ``k``."""
    k = min(length // 2, vocab_size)
    rng = np.random.default_rng(seed)
    first = np.argsort(rng.random((n_sequences, vocab_size)), axis=1)[:, :k]  # [batch, k], distinct per row
    return np.concatenate([first, first], axis=1), k


def previous_token_score(pattern: np.ndarray) -> np.ndarray:
    """``pattern [batch, head, query, key]`` → ``[head]``: mean mass from query ``i ≥ 1`` on key ``i - 1``."""
    length = pattern.shape[-1]
    queries = np.arange(1, length)
    return pattern[:, :, queries, queries - 1].mean(axis=(0, 2))


def induction_score(pattern: np.ndarray, k: int) -> np.ndarray:
    """On tokens ``r_1 … r_k r_1 … r_k``: ``[head]`` mean mass from query ``i`` in ``k .. 2k-1`` on key ``i - k + 1``."""
    queries = np.arange(k, 2 * k)
    return pattern[:, :, queries, queries - k + 1].mean(axis=(0, 2))


def period_mask(length: int, n: int) -> np.ndarray:
    """``[query, key]`` bool: ``key ≤ query`` and ``key ≡ query + 1 (mod n)``."""
    query, key = np.arange(length)[:, None], np.arange(length)[None, :]
    return (key <= query) & ((key - query - 1) % n == 0)


def period_score(pattern: np.ndarray, n: int) -> np.ndarray:
    """``pattern [batch, head, query, key]`` on sequences of period ``n`` → ``[head]``: mass on the keys of
    :func:`period_mask`, averaged over queries ``i ≥ n`` and sequences."""
    length = pattern.shape[-1]
    mask = period_mask(length, n)
    per_query = (pattern * mask).sum(-1)  # [batch, head, query]
    return per_query[:, :, n:].mean(axis=(0, 2))


def period_baseline(length: int, n: int) -> float:
    """What uniform attention scores: the share of :func:`period_mask` keys among ``0..i``, averaged over ``i ≥ n``."""
    mask = period_mask(length, n)
    share = mask.sum(-1) / np.arange(1, length + 1)
    return float(share[n:].mean())


def offset_profile(pattern: np.ndarray) -> np.ndarray:
    """``pattern [batch, head, query, key]`` → ``[head, offset]``: mean mass on key ``i - d`` over queries ``i ≥ d``."""
    length = pattern.shape[-1]
    mean = pattern.mean(0)  # [head, query, key]
    return np.stack([np.diagonal(mean, offset=-d, axis1=1, axis2=2).mean(-1) for d in range(length)], axis=1)


def head_names(n_layers: int, n_heads: int) -> list[str]:
    """``"L.H"`` for every head, layer by layer."""
    return [f"{layer}.{head}" for layer in range(n_layers) for head in range(n_heads)]


# ---------------------------------------------------------------------------- the analysis


def _deterministic(task: NRecurrence) -> NRecurrence:
    return task.model_copy(update={"p_noise": 0.0, "p_transition": 0.0})


@dataclass(frozen=True)
class HeadScores:
    """Scores of every head (arrays ``[layer, head]``) on one set of sequences, and what the figures show."""

    previous_token: np.ndarray
    induction: np.ndarray
    period: dict[int, np.ndarray]
    """period n → ``[layer, head]`` period score on sequences of period n (periods shorter than the context)."""
    baseline: dict[int, float]
    """period n → what uniform attention scores (:func:`period_baseline`)."""
    offsets: dict[int, np.ndarray]
    """period n → ``[layer, head, offset]`` mean attention by relative offset on sequences of period n."""
    examples: dict[int, dict]
    """period n → one sequence of period n: ``tokens [pos]``, ``target``, ``patterns [layer, head, query, key]``."""


def score_heads(model: GPT, task: Task, length: int, n_sequences: int, seed: int) -> HeadScores:
    """Previous-token and induction scores for any task, period scores for n-recurrence (on the task made
    deterministic, grouped by period)."""
    repeated, k = induction_tokens(task.vocab_size, length, n_sequences, seed)
    induction = attention_patterns(model, repeated)  # [layer, batch, head, query, key]
    period, baseline, offsets, examples = {}, {}, {}, {}
    if isinstance(task, NRecurrence):
        batch = _deterministic(task).sample(n_sequences, length, seed)
        patterns = attention_patterns(model, batch.tokens)  # [layer, batch, head, query, key]
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
        period=period,
        baseline=baseline,
        offsets=offsets,
        examples=examples,
    )


def period_heads(scores: HeadScores, margin: float) -> dict[int, list[tuple[int, int]]]:
    """period n → ``(layer, head)`` of the heads whose period score beats the baseline by ``margin``, best first."""
    found = {}
    for n, values in scores.period.items():
        order = np.argsort(-values, axis=None)
        found[n] = [divmod(int(i), values.shape[1]) for i in order if values.flat[i] - scores.baseline[n] >= margin]
    return found


@dataclass(frozen=True)
class HeadsResult:
    """Previous-token, induction and period scores of every head; the period heads."""

    name: str
    heads: tuple[str, ...]
    """``"L.H"`` names, layer by layer (the order of every per-head list)."""
    previous_token: list[float]
    induction: list[float]
    period_score: dict[int, list[float]]
    """period n → per head, the period score on sequences of period n."""
    period_baseline: dict[int, float]
    period_heads: dict[int, list[str]]
    """period n → heads whose score beats the baseline by at least ``margin``, best first."""
    margin: float
    offsets: dict[int, list[list[float]]]
    """period n → per head, mean attention by relative offset ``0 .. length-1``."""
    examples: dict[int, dict]
    """period n → one sequence of that period: tokens, target, and the pattern of its best period head."""
    step: int
    n_sequences: int
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "step": self.step,
            "n_sequences": self.n_sequences,
            "heads": list(self.heads),
            "previous_token": self.previous_token,
            "induction": self.induction,
            "period_score": self.period_score,
            "period_baseline": self.period_baseline,
            "period_heads": self.period_heads,
            "margin": self.margin,
            "offsets": self.offsets,
            "examples": self.examples,
        }

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()

        layers = sorted({int(h.split(".")[0]) for h in self.heads})
        n_heads = len(self.heads) // len(layers)
        grid = lambda values: np.asarray(values, float).reshape(len(layers), n_heads)  # noqa: E731
        panels = [("previous token", grid(self.previous_token), None), ("induction", grid(self.induction), None)]
        panels += [(f"period n={n}", grid(self.period_score[n]), self.period_baseline[n]) for n in self.period_score]
        width = 0.5 * n_heads + 0.6
        fig, axes = plt.subplots(1, len(panels), figsize=(width * len(panels) + 1.2, 0.55 * len(layers) + 1.8), squeeze=False)
        for ax, (title, values, base) in zip(axes[0], panels):
            image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_title(title + (f"\n(uniform: {base:.2f})" if base is not None else "\n"), fontsize=9)
            ax.set_xticks(range(n_heads))
            ax.set_yticks(range(len(layers)), [f"layer {layer}" for layer in layers] if ax is axes[0][0] else [""] * len(layers))
            ax.set_xlabel("head")
            for (i, j), value in np.ndenumerate(values):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value < 0.6 else "black")
        fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="score")
        paths = save_figure(fig, folder, "heads_scores")

        if self.offsets:
            periods = list(self.offsets)
            fig, axes = plt.subplots(1, len(periods), figsize=(3.4 * len(periods), 0.22 * len(self.heads) + 1.5), squeeze=False)
            for ax, n in zip(axes[0], periods):
                values = np.asarray(self.offsets[n], float)
                image = ax.imshow(values, vmin=0, vmax=max(float(np.max(self.offsets[m])) for m in periods), cmap="viridis", aspect="auto")
                ax.set_title(f"period-{n} sequences\n(ticks at offsets n-1, 2n-1, …)", fontsize=9)
                ax.set_xlabel("offset i - j (query i, key j)", fontsize=8)
                ax.set_yticks(range(len(self.heads)), self.heads if ax is axes[0][0] else [""] * len(self.heads), fontsize=7)
                ticks = np.arange(n - 1, values.shape[1], n)
                ax.set_xticks(ticks, [str(t) if i % max(1, len(ticks) // 6) == 0 else "" for i, t in enumerate(ticks)])
            fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="mean attention")
            paths += save_figure(fig, folder, "heads_offsets")

            fig, axes = plt.subplots(1, len(periods), figsize=(3.2 * len(periods), 3.5), squeeze=False)
            for ax, n in zip(axes[0], periods):
                example = self.examples[n]
                pattern = np.asarray(example["pattern"], float)
                ax.imshow(pattern, vmin=0, vmax=1, cmap="viridis")
                ax.set_title(f"head {example['head']} on a period-{n} sequence\n(target {example['target']})", fontsize=9)
                ax.set_xlabel("key position")
            axes[0][0].set_ylabel("query position")
            fig.tight_layout()
            paths += save_figure(fig, folder, "heads_patterns")
        return paths


def heads(run, n_sequences: int = 1024, seed: int = 0, margin: float = 0.25) -> HeadsResult:
    """Score every head of ``run.model`` on ``n_sequences`` sequences of each kind; see the module docstring."""
    model, task, length = run.model, run.task, run.config.length
    scores = score_heads(model, task, length, n_sequences, seed)
    names = head_names(model.config.n_layers, model.config.n_heads)
    flat = {n: values.ravel() for n, values in scores.period.items()}
    examples = {}
    for n, example in scores.examples.items():
        layer, head = divmod(int(np.argmax(flat[n])), model.config.n_heads)
        examples[n] = {"head": f"{layer}.{head}", "tokens": example["tokens"], "target": example["target"],
                       "pattern": example["patterns"][layer, head]}  # fmt: skip
    found = {n: [f"{layer}.{head}" for layer, head in heads_] for n, heads_ in period_heads(scores, margin).items()}
    headline = {"previous_token_best": float(scores.previous_token.max()), "induction_best": float(scores.induction.max())}
    if flat:
        # Means over the periods of each period's best head and of the baselines; per period below.
        headline["period_score_best"] = float(np.mean([values.max() for values in flat.values()]))
        headline["period_score_baseline"] = float(np.mean(list(scores.baseline.values())))
        for n, values in flat.items():
            headline[f"period_score_best/n={n}"] = float(values.max())
            headline[f"period_score_baseline/n={n}"] = scores.baseline[n]
        headline["n_period_heads"] = float(len({h for heads_ in found.values() for h in heads_}))
    return HeadsResult(
        name="heads",
        heads=tuple(names),
        previous_token=scores.previous_token.ravel().tolist(),
        induction=scores.induction.ravel().tolist(),
        period_score={n: values.tolist() for n, values in flat.items()},
        period_baseline=scores.baseline,
        period_heads=found,
        margin=margin,
        offsets={n: values.reshape(len(names), -1).tolist() for n, values in scores.offsets.items()},
        examples=examples,
        step=run.step,
        n_sequences=n_sequences,
        headline=headline,
    )


# ---------------------------------------------------------------------------- over training


@dataclass(frozen=True)
class HeadsTrainingResult:
    """The best head's scores at every saved checkpoint (``--checkpoints all``)."""

    name: str
    steps: tuple[int, ...]
    previous_token_best: list[float]
    induction_best: list[float]
    period_score_best: dict[int, list[float]]
    """period n → per checkpoint, the best head's period score on sequences of period n."""
    period_baseline: dict[int, float]
    n_sequences: int
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "steps": list(self.steps),
            "n_sequences": self.n_sequences,
            "previous_token_best": self.previous_token_best,
            "induction_best": self.induction_best,
            "period_score_best": self.period_score_best,
            "period_baseline": self.period_baseline,
        }

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        steps = np.maximum(np.asarray(self.steps), 1)  # step 0 drawn at 1 on the log axis
        ax.plot(steps, self.previous_token_best, color="#999999", marker="o", ms=3, label="previous token")
        ax.plot(steps, self.induction_best, color="#555555", marker="s", ms=3, label="induction")
        for colour, (n, values) in zip(OKABE_ITO * 2, self.period_score_best.items()):
            ax.plot(steps, values, color=colour, marker="o", ms=3, label=f"period n={n}")
            ax.axhline(self.period_baseline[n], color=colour, ls=":", lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("training step (log)")
        ax.set_ylabel("best head's score (dotted: uniform)")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return save_figure(fig, folder, "heads_over_training")


def heads_over_training(run, steps, load, n_sequences: int = 256, seed: int = 0, show_progress: bool = False) -> HeadsTrainingResult:
    """:func:`heads`' best scores at each checkpoint step on the same sequences; ``load(step)`` gives that step's run."""
    previous, induction, period, baseline = [], [], {}, {}
    for step in progress_bar(steps, "heads over training", show_progress):
        scores = score_heads(load(step).model, run.task, run.config.length, n_sequences, seed)
        previous.append(float(scores.previous_token.max()))
        induction.append(float(scores.induction.max()))
        for n, values in scores.period.items():
            period.setdefault(n, []).append(float(values.max()))
        baseline = scores.baseline
    headline = {"previous_token_final": previous[-1], "induction_final": induction[-1], "checkpoints": float(len(steps))}
    headline.update({f"period_score_final/n={n}": values[-1] for n, values in period.items()})
    return HeadsTrainingResult(
        name="heads_over_training",
        steps=tuple(steps),
        previous_token_best=previous,
        induction_best=induction,
        period_score_best=period,
        period_baseline=baseline,
        n_sequences=n_sequences,
        headline=headline,
    )


register_analysis(
    "heads",
    applies=lambda run: None,
    description="previous-token, induction and period scores of every attention head",
    over_training=heads_over_training,
)(heads)
