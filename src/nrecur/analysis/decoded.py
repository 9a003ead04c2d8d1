"""The model's own belief over the rule around events, read from its activations by probes.

Beside the observer's marginals over period and target around rule transitions
and noise tokens (:mod:`nrecur.analysis.updates`), we decode the model's: the
best probe of the probes analysis for each marginal (ridge at every hook,
concatenated included, or the MLP at the best hook; chosen on validation
sequences) is fitted on sequences other than those of the events, and read at
every offset of the same event windows: P(new target), P(old target) and
P(new period), having seen the tokens before position ``event + offset``.

How to read it: dashed (decoded) curves on the solid (observer) ones mean the
model holds the normative belief; a decoded curve that lags says the belief
itself updates late, not only the prediction — up to the probe's own error,
which the chosen probes' held-out R² (in the figure's title) bounds.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nrecur.analysis.base import pyplot, save_figure
from nrecur.analysis.probes import MLP_ROWS, choose_probe, probe_inputs, split_sequences
from nrecur.analysis.events import EVENT_KINDS, MODEL_COLOUR, NOISE_COLOUR, Events, mean_band, window_index
from nrecur.tasks import NRecurrence

__all__ = ["aligned_beliefs", "decode_rule_beliefs", "decoded_summary", "plot_decoded"]


def aligned_beliefs(belief: np.ndarray, events: Events, index: np.ndarray) -> np.ndarray:
    """``belief [batch, pos, k]`` (index i: having seen tokens 0..i) → ``[event, offset]``: the belief in
    value ``index[event]`` having seen the tokens before position ``event + offset``."""
    rows, columns = window_index(events)
    return belief[rows, columns - 1, np.asarray(index)[:, None]]


def decode_rule_beliefs(
    model, task: NRecurrence, length: int, tokens: np.ndarray, n_fit: int, seed: int, mlp: bool = True, mlp_rows: int = MLP_ROWS
):
    """The model's beliefs over period and target on ``tokens``, read by the best probe for each.

    The probes are chosen and fitted on ``n_fit`` other sequences of ``task`` (seed ``seed + 1``; an MLP probe
    on at most ``mlp_rows`` of their positions), so every decoded value is held out. Returns
    ``({"period": [batch, pos, period], "target": [batch, pos, vocab]}, {quantity: ChosenProbe})``.
    """
    fit = task.sample(n_fit, length, seed + 1)
    post = task.posterior(fit.tokens)
    train_seq, test_seq = split_sequences(n_fit, 0.2, seed)
    acts = probe_inputs(model, fit.tokens)
    chosen = {
        quantity: choose_probe(acts, np.asarray(values, dtype=np.float64), train_seq, test_seq, mlp=mlp, seed=seed, mlp_rows=mlp_rows)
        for quantity, values in (("period", post.period), ("target", post.target))
    }
    acts = probe_inputs(model, tokens)
    return {quantity: probe.predict(acts) for quantity, probe in chosen.items()}, chosen


def decoded_summary(task: NRecurrence, decoded: dict[str, np.ndarray], post, events: Events) -> dict:
    """Probe-decoded and observer marginals around ``events``: mean and 95 % interval by offset."""
    period_index = np.full(task.max_period + 1, -1)
    period_index[list(task.periods)] = np.arange(len(task.periods))
    reads = {
        "target_new": ("target", events.new_target),
        "target_old": ("target", events.old_target),
        "period_new": ("period", period_index[events.period]),
    }
    observer = {"period": np.asarray(post.period, dtype=np.float64), "target": np.asarray(post.target, dtype=np.float64)}
    out = {}
    for name, (quantity, index) in reads.items():
        for who, belief in (("probe", decoded[quantity]), ("observer", observer[quantity])):
            mean, half, count = mean_band(aligned_beliefs(belief, events, index))
            out[f"{name}_{who}"] = {"mean": mean, "ci95": half, "count": count}
    difference = aligned_beliefs(decoded["target"], events, events.new_target) - aligned_beliefs(observer["target"], events, events.new_target)
    out["error_target_new"] = float(np.abs(difference).mean()) if difference.size else float("nan")
    return out


DECODED_COLOURS = {"target_new": MODEL_COLOUR, "target_old": "#D55E00", "period_new": NOISE_COLOUR}


def plot_decoded(by_kind: dict[str, dict], decoders: dict[str, dict], folder: Path, stem: str) -> list[Path]:
    """The probe-decoded beliefs over target and period around events (dashed) beside the observer's (solid)."""
    plt = pyplot()

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, kind in zip(axes, EVENT_KINDS):
        data = by_kind[kind]
        offsets = np.asarray(data["offsets"])
        names = ("target_new", "target_old", "period_new") if kind == "transition" else ("target_new", "period_new")
        for name in names:
            label = {"target_new": "new target", "target_old": "old target", "period_new": "new period"}[name]
            if kind == "noise":
                label = {"target_new": "true target", "period_new": "true period"}[name]
            for who, style in (("observer", "-"), ("probe", "--")):
                curve = data["decoded"][f"{name}_{who}"]
                mean, half = np.asarray(curve["mean"], float), np.asarray(curve["ci95"], float)
                ax.plot(offsets, mean, style, color=DECODED_COLOURS[name], label=f"{who}: P({label})")
                ax.fill_between(offsets, mean - half, mean + half, color=DECODED_COLOURS[name], alpha=0.15)
        ax.set_title(f"after a {kind} ({data['n_events']} events)")
        ax.set_xlabel("tokens seen from the event on")
        ax.set_ylabel("posterior marginal")
        ax.set_ylim(-0.1, 1.1)
        ax.legend(fontsize=7)
    decoders = ", ".join(f"{q}: {d['kind']} probe at {d['hook']}, R² {d['r2']:.2f}" for q, d in decoders.items())
    fig.suptitle(f"beliefs over the rule: the observer's (solid) and decoded from the model (dashed; {decoders})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, folder, stem)
