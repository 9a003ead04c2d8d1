"""n-recurrence as a dense HMM over ``(n, t, c)``: the cross-check of the fast observer.

Built state by state from the spec (SPEC §2.3), independently of the closed
forms of the observers: a change from a rule goes to every rule its
transition kind allows (``TransitionKind.allows``), weighted by the rule prior
(``task.rule_probs``: the product or the joint ``rule_prior``).
Only fake sources without a window (``"uniform"``) make an HMM in this sense;
with ``"recent"`` the emission depends on the observed window.
"""

from __future__ import annotations

import numpy as np

from nrecur.tasks.hmm import HMMProcess
from nrecur.tasks.nrecurrence_params import NRecurrenceParams
from nrecur.tasks.variants import FAKE_SOURCES, TRANSITIONS


def state_list(task: NRecurrenceParams) -> list[tuple[int, int, int]]:
    """The hidden states ``(period index, target, countdown c)`` in the HMM's order."""
    return [(k, t, c) for k, n in enumerate(task.periods) for t in range(task.vocab_size) for c in range(n)]


def nrecurrence_to_hmm(task: NRecurrenceParams) -> HMMProcess:
    if FAKE_SOURCES[task.fake_source].window:
        raise ValueError(
            "the dense HMM form needs fakes that do not depend on the observed tokens (fake_source='uniform'); "
            f"fake_source={task.fake_source!r} draws them from a window of recent tokens"
        )
    kind = TRANSITIONS[task.transition_changes]
    V = task.vocab_size
    states = state_list(task)
    index = {s: i for i, s in enumerate(states)}
    S = len(states)
    prior = task.rule_probs  # [period, vocab]
    p_noise, p_tr = task.noise_by_period, task.transition_by_period
    rules = [(k, t) for k in range(task.n_periods) for t in range(V)]

    T = np.zeros((V, S, S))
    for (k, t, c), i in index.items():
        n = task.periods[k]
        emit = np.zeros(V)
        if c == 0:
            emit[:] = p_noise[k] / (V - 1)
            emit[t] = 1 - p_noise[k]
        elif task.target_outside:
            emit[:] = 1 / V
        else:
            emit[:] = 1 / (V - 1)
            emit[t] = 0.0
        move = np.zeros(S)
        move[index[(k, t, (c - 1) % n)]] += 1 - p_tr[k]
        if p_tr[k] > 0:
            weights = {r: prior[r] for r in rules if kind.allows(r[0] == k, r[1] == t)}
            total = sum(weights.values())
            if total == 0:  # a rule with zero prior is never reached; any valid row will do
                move[index[(k, t, (c - 1) % n)]] += p_tr[k]
                weights = {}
            for (k2, t2), w in weights.items():
                n2 = task.periods[k2]
                for c2 in range(n2):
                    move[index[(k2, t2, c2)]] += p_tr[k] * w / total / n2
        T[:, i, :] = emit[:, None] * move[None, :]
    initial = np.array([prior[k, t] / task.periods[k] for k, t, c in states])
    names = [f"n={task.periods[k]},t={t},c={c}" for k, t, c in states]
    return HMMProcess(T, initial=initial, state_names=names)
