"""The model's own belief over the rule around events, read from its activations by probes.

Beside the observer's marginals over period and target around rule transitions
and noise tokens (:mod:`nrecur.analysis.updates`), we decode the model's: the
best probe of the probes analysis for each marginal (ridge at every hook,
concatenated included, or the MLP at the best hook; chosen on validation
sequences) is fitted on sequences other than those of the events, and read at
every offset of the same event windows: P(new target), P(old target) and
P(new period), having seen the tokens before position ``event + offset``. The
same probes are fitted and read on the run's initialization: the control.

How to read it: decoded curves on the observer's mean the model holds the
normative belief; a decoded curve that lags says the belief itself updates
late, not only the prediction — up to the probe's own error, which the chosen
probes' held-out R² bounds. The initialization's decoded curves (and R²) say
how much of that a random transformer's activations already give.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nrecur.analysis.events import Band, Events, window_index
from nrecur.analysis.probes import MLP_ROWS, ChosenProbe, choose_probe, probe_inputs, split_sequences
from nrecur.tasks import NRecurrence

__all__ = ["Beliefs", "Decoded", "Decoder", "aligned_beliefs", "beliefs_around", "decode_rule_beliefs"]

QUANTITIES = ("period", "target")


@dataclass(frozen=True)
class Decoder:
    """The probe that reads one marginal: where, which kind (``linear`` or ``mlp``), its held-out R²."""

    hook: str
    kind: str
    r2: float

    @classmethod
    def of(cls, chosen: ChosenProbe) -> "Decoder":
        return cls(hook=chosen.hook, kind=chosen.kind, r2=float(chosen.r2))


@dataclass(frozen=True)
class Beliefs:
    """One reader's marginals around the events of one kind, by offset (having seen the tokens before
    ``event + offset``)."""

    target_new: Band
    """P(new target) (noise: P(true target))."""
    target_old: Band
    """P(old target) (noise: the same as ``target_new``)."""
    period_new: Band
    """P(period after the event)."""
    error_target_new: float
    """Mean over events and offsets of |P(new target) read here − the observer's| (0 for the observer)."""


@dataclass(frozen=True)
class Decoded:
    """The beliefs decoded from the trained model and from its initialization, beside the observer's."""

    model: Beliefs
    random_init: Beliefs
    observer: Beliefs


def aligned_beliefs(belief: np.ndarray, events: Events, index: np.ndarray) -> np.ndarray:
    """``belief [batch, pos, k]`` (index i: having seen tokens 0..i) → ``[event, offset]``: the belief in
    value ``index[event]`` having seen the tokens before position ``event + offset``."""
    rows, columns = window_index(events)
    return belief[rows, columns - 1, np.asarray(index)[:, None]]


def decode_rule_beliefs(
    model, task: NRecurrence, length: int, tokens: np.ndarray, n_fit: int, seed: int, mlp: bool = True, mlp_rows: int = MLP_ROWS
) -> tuple[dict[str, np.ndarray], dict[str, Decoder]]:
    """The model's beliefs over period and target on ``tokens``, read by the best probe for each.

    The probes are chosen and fitted on ``n_fit`` other sequences of ``task`` (seed ``seed + 1``; an MLP probe
    on at most ``mlp_rows`` of their positions), so every decoded value is held out. Returns
    ``({"period": [batch, pos, period], "target": [batch, pos, vocab]}, {quantity: Decoder})``.
    """
    fit = task.sample(n_fit, length, seed + 1)
    post = task.posterior(fit.tokens)
    train_seq, test_seq = split_sequences(n_fit, 0.2, seed)
    acts = probe_inputs(model, fit.tokens)
    chosen = {
        quantity: choose_probe(acts, np.asarray(getattr(post, quantity), dtype=np.float64), train_seq, test_seq, mlp=mlp, seed=seed, mlp_rows=mlp_rows)
        for quantity in QUANTITIES
    }
    acts = probe_inputs(model, tokens)
    return {quantity: probe.predict(acts) for quantity, probe in chosen.items()}, {quantity: Decoder.of(c) for quantity, c in chosen.items()}


def beliefs_around(task: NRecurrence, beliefs: dict[str, np.ndarray], observer: dict[str, np.ndarray], events: Events) -> Beliefs:
    """``beliefs`` (``{"period": [batch, pos, period], "target": [batch, pos, vocab]}``) around ``events``,
    its error measured against ``observer``'s (the same form)."""
    period_index = np.full(task.max_period + 1, -1)
    period_index[list(task.periods)] = np.arange(len(task.periods))
    new = aligned_beliefs(beliefs["target"], events, events.new_target)
    difference = new - aligned_beliefs(observer["target"], events, events.new_target)
    return Beliefs(
        target_new=Band.of(new),
        target_old=Band.of(aligned_beliefs(beliefs["target"], events, events.old_target)),
        period_new=Band.of(aligned_beliefs(beliefs["period"], events, period_index[events.period])),
        error_target_new=float(np.abs(difference).mean()) if difference.size else float("nan"),
    )
