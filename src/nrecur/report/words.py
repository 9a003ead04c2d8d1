"""A run's settings in words: the task with its parameters, the model's size, training, interventions, the end.

Each task kind says itself in words through :data:`TASK_WORDS` (kind → function);
a kind without an entry falls back to its own ``describe()``. Every function
returns plain text; the page escapes it.
"""

from __future__ import annotations

from typing import Callable

from nrecur._text import seconds_text
from nrecur.tasks import HMM, RRXOR, Mess3, ModularICL, NRecurrence, Task
from nrecur.train.config import RunConfig

__all__ = ["TASK_WORDS", "counted", "ending_in_words", "interventions_in_words", "model_in_words", "status_in_words", "task_in_words", "training_in_words"]


def _probability(value) -> str:
    """A per-period probability as configured: ``0.2/n`` reads "0.2/n (1/(5n))"."""
    if isinstance(value, str):
        c = float(value.strip()[:-2])
        return f"{value} (1/({1 / c:g}n))" if c > 0 else value
    if isinstance(value, dict):
        return ", ".join(f"n={n}: {p:g}" for n, p in value.items())
    return f"{value:g}"


def _prior(values, names) -> str:
    return "uniform" if values is None else ", ".join(f"{name}: {p:g}" for name, p in zip(names, values))


def _nrecurrence(task: NRecurrence) -> str:
    kind = "deterministic" if task.is_deterministic else "stochastic"
    parts = [
        f"{kind} n-recurrence over {task.vocab_size} tokens with periods {', '.join(map(str, task.periods))}",
        f"period prior {_prior(task.period_prior, task.periods)}",
        f"target prior {_prior(task.target_prior, range(task.vocab_size))}",
    ]
    if not task.is_deterministic:
        parts.append(f"noise probability {_probability(task.p_noise)}")
        parts.append(f"rule-change probability {_probability(task.p_transition)}, a change alters {task.transition_changes}")
        parts.append(f"fake tokens {task.fake_source}")
    parts.append("the target may appear elsewhere" if task.target_outside else "the target appears only at target positions")
    return "; ".join(parts)


def _mess3(task: Mess3) -> str:
    return f"Mess3 hidden Markov model (3 states, 3 tokens) with x = {task.x:g}, a = {task.a:g}"


def _rrxor(task: RRXOR) -> str:
    return f"RRXOR hidden Markov model (5 states, 2 tokens) with P(first bit 0) = {task.p1:g}, P(second bit 0) = {task.p2:g}"


def _hmm(task: HMM) -> str:
    return f"a hidden Markov model given as a tensor: {task.n_states} states, {task.vocab_size} tokens"


def _modular(task: ModularICL) -> str:
    return (
        f"in-context modular arithmetic mod {task.p}: {task.n_examples} examples 'x y (a·x + b·y mod {task.p})' per sequence, "
        f"{task.n_tasks} of the {task.n_vectors} task vectors (a, b) seen in training (task seed {task.task_seed})"
    )


TASK_WORDS: dict[str, Callable[[Task], str]] = {
    "nrecurrence": _nrecurrence,
    "mess3": _mess3,
    "rrxor": _rrxor,
    "hmm": _hmm,
    "modular": _modular,
}
"""Task kind → the task in words (a kind of your own falls back to ``task.describe()``)."""


def task_in_words(task: Task) -> str:
    words = TASK_WORDS.get(task.kind)
    return words(task) if words is not None else task.describe()


def task_label(task: Task) -> str:
    """A short label for tables: ``stochastic n-recurrence``, ``Mess3(x=0.05, a=0.85)``, …"""
    if isinstance(task, NRecurrence):
        return f"{'deterministic' if task.is_deterministic else 'stochastic'} n-recurrence"
    return task.describe()


def counted(count: int, noun: str) -> str:
    """``"1 layer"``, ``"2 layers"``, ``"1,024 runs"``: a count with its noun in the right number."""
    return f"{count:,} {noun}{'' if count == 1 else 's'}"


def model_in_words(config: RunConfig, parameters: int) -> str:
    m = config.model
    mlp = "attention only" if m.attn_only else f"MLP width {m.d_mlp} ({m.act})"
    return (
        f"{counted(parameters, 'parameter')}: {counted(m.n_layers, 'layer')}, d_model {m.d_model}, "
        f"{counted(m.n_heads, 'head')} of {m.d_head}, "
        f"{mlp}, {m.norm}, context {m.n_ctx}, vocabulary {m.vocab_size}"
    )


OPTIMIZER_WORDS = {"adamw": "AdamW", "muon": "Muon on the blocks' matrices and AdamW on the rest,"}
"""How the optimizer of ``TrainConfig.optimizer`` reads, before its lr."""


def training_in_words(config: RunConfig) -> str:
    t = config.train
    data = "fresh sequences every step (online)" if t.mode == "online" else f"a fixed set of {t.train_size} sequences (finite mode)"
    parts = [
        f"{t.objective.replace('_', '-')} objective on {data}, batch {t.batch_size}",
        OPTIMIZER_WORDS[t.optimizer] + f" lr {t.lr:g}, betas ({t.betas[0]:g}, {t.betas[1]:g}), weight decay {t.weight_decay:g}",
        f"{t.warmup_steps} warm-up steps, {t.schedule} schedule"
        + ("" if t.schedule == "constant" else f" to {t.min_lr_ratio:g}·lr")
        + (f" ending at step {t.decay_steps}" if t.decay_steps is not None and t.schedule != "constant" else ""),
        f"at most {t.steps} steps" + (f" or {t.time_budget:g} s" if t.time_budget else ""),
        f"evaluated every {t.eval_every} steps on {t.eval_size} sequences; KL threshold {t.kl_threshold:g} nats/token"
        + (" (stops when reached)" if t.stop_at_threshold else ""),
    ]
    if t.grokfast_lambda > 0:
        parts.append(f"Grokfast α {t.grokfast_alpha:g}, λ {t.grokfast_lambda:g}")
    if t.held_out_fraction > 0:
        parts.append(f"{t.held_out_fraction:.0%} of the rules held out of training")
    if config.init_from:
        parts.append(f"fine-tuned from {config.init_from}")
    return "; ".join(parts)


def interventions_in_words(config: RunConfig) -> list[str]:
    """One sentence per intervention applied during training (empty: none)."""
    out = []
    for item in config.train.interventions:
        steps = f"steps {item.start} to {item.end - 1}" if item.end is not None else f"from step {item.start} to the end"
        if item.kind == "ablate":
            what = f"head {item.layer}.{item.head} ablated (its output z set to zero)"
        elif item.pattern == "previous":
            what = f"head {item.layer}.{item.head}'s attention clamped to the previous token"
        else:
            what = f"head {item.layer}.{item.head}'s attention clamped to the period-{item.period} pattern"
        out.append(f"{what}, {steps} ({item.describe()})")
    return out


STOP_REASONS = {
    "threshold": "reached its KL threshold",
    "steps": "reached its step limit",
    "time budget": "ran out of its time budget",
}
"""``summary.json``'s ``stop_reason`` in words (others show as they are)."""


def _time(seconds: float | None) -> str:
    return "" if seconds is None else f", {seconds_text(seconds)} s"


def status_in_words(status: str, summary: dict | None, unknown: str | None = None) -> str:
    """The run's status with why it stopped, from ``summary.json``: ``finished: ran out of its time budget``;
    without a stop reason, ``unknown`` in its place (None: the status alone)."""
    reason = (summary or {}).get("stop_reason") or unknown
    return f"{status}: {STOP_REASONS.get(reason, f'stopped ({reason})')}" if reason else status


def ending_in_words(status: str, summary: dict | None, evaluated: bool) -> str:
    """How the run ended (or where it stands)."""
    if not evaluated:
        return "training has not evaluated yet: no evaluation in metrics.jsonl"
    if summary is None:
        return "running, or interrupted before it ended (no summary.json): the figures show the evaluations so far"
    text = f"{status_in_words(status, summary, unknown='?')} after {summary.get('steps', '?')} steps{_time(summary.get('seconds'))}"
    if summary.get("error"):
        text += f"; error: {summary['error']}"
    return text
