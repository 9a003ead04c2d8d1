"""The exact Bayes observer of n-recurrence: a forward filter over ``(n, t, c)``.

The filter keeps, for each sequence, the belief over the hidden state of the
next position. Two choices make it cost O(V·Σn) per token instead of the dense
HMM's O((V·Σn)²):

* **Absolute phase.** Instead of the countdown ``c`` we store the residue
  ``φ = (i + c) mod n`` of the target positions. Without a transition ``φ``
  never changes, so there is no shift to apply; at position ``i`` the target
  slot of period ``n`` is simply ``φ = i mod n``. A transition puts uniform
  mass on every ``φ`` of the new period, just as a fresh offset does.
* **Transitions in closed form.** The mass leaving each rule ``(n, t)`` is
  redistributed with the prior conditioned on the change: a few sums over the
  ``[period, vocab]`` table, never a state-by-state matrix. Which sums is the
  transition kind's business (``TransitionKind.inflow`` in
  ``tasks/variants.py``), the share that leaves each rule and the weight each
  arriving rule gets the rule prior's (``tasks/priors.py``: the product
  ``period_prior × target_prior`` or a joint ``rule_prior``); the filter only
  asks them.

Emissions of off-target positions depend only on ``t``; only one slot per
period is a target slot at each position, so the update is one broadcast
multiply plus a gather/scatter of ``P`` slots. A fake token is uniform over the
distinct tokens ``≠ t`` of the observed window ``x[i-w·n..i-1]`` (``w`` the fake
source's ``window``, 3 for ``"recent"``), else uniform over ``V \\ {t}``; the
observer sees the window, so the filter stays exact. ``"uniform"`` fakes have
``w = 0`` and skip the window tables.

Two priors per task when a run held rules out of training: ``prior="universal"``
(the task's rule prior) and ``prior="in_distribution"`` (that prior restricted
to the training rules: :meth:`NRecurrence.in_distribution`), the generalizing
and the memorizing observer.

Tensors: ``alpha [batch, slot, vocab]`` with ``slot`` running over
``(period, φ)`` (``Σn`` slots) and ``vocab`` over the target ``t``;
``mass [batch, period, vocab]`` its sum over φ.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Collection, Literal

import numpy as np
import torch

from nrecur.observer._arrays import as_token_tensor, check_impossible
from nrecur.observer._kernel import run_filter_kernel
from nrecur.observer.results import Posterior
from nrecur.tasks.base import register_observer
from nrecur.tasks.nrecurrence import NRecurrence
from nrecur.tasks.variants import FAKE_SOURCES, TRANSITIONS

#: Sequences filtered together; bounds memory and keeps the working set in cache.
DEFAULT_CHUNK = 512

#: The priors over rules the observer knows (SPEC §2.3): the task's own, and the in-distribution one.
PRIORS = ("universal", "in_distribution")


class _Tables:
    """Constants of one task on one device (float64)."""

    def __init__(self, task: "NRecurrence", device: torch.device, length: int):
        f64 = dict(dtype=torch.float64, device=device)
        self.V, self.P = task.vocab_size, task.n_periods
        self.transitions = TRANSITIONS[task.transition_changes]
        self.window = FAKE_SOURCES[task.fake_source].window
        periods = np.asarray(task.periods)
        self.n_max = int(periods.max())
        offsets = np.concatenate([[0], np.cumsum(periods)[:-1]])
        slot_period_index = np.repeat(np.arange(self.P), periods)
        self.K = int(periods.sum())
        self.n = torch.tensor(periods, **f64)
        prior = task.rule_distribution
        self.p_noise = torch.tensor(task.noise_by_period, **f64)
        self.p_transition = torch.tensor(task.transition_by_period, **f64)
        self.has_transitions = bool(np.any(task.transition_by_period > 0))
        self.slot_period_index = torch.as_tensor(slot_period_index, device=device)  # [slot]
        self.keep_slot = (1.0 - self.p_transition)[self.slot_period_index]  # [slot]
        self.leave_rate = torch.tensor(prior.leave_rate(self.transitions, task.transition_by_period), **f64)  # [period, vocab]
        self.arrival = torch.tensor(prior.arrival(self.transitions), **f64)  # [period, vocab]
        self.mass0 = torch.tensor(prior.table, **f64)  # [period, vocab]
        self.alpha0 = (self.mass0 / self.n[:, None])[self.slot_period_index]  # [slot, vocab]
        # Target slot of each period at each position j = 0..length: offset + j mod n.
        j = np.arange(length + 1)[:, None]
        self.on_slot = torch.as_tensor(offsets[None, :] + j % periods[None, :], device=device)  # [pos+1, period]
        # Countdown output: entry (k, c) of [period, max_period] reads slot offset_k + (j + c) mod n_k.
        valid = [(k, c) for k in range(self.P) for c in range(periods[k])]
        self.countdown_cells = torch.as_tensor([k * self.n_max + c for k, c in valid], device=device)
        self.countdown_slots = torch.as_tensor(
            np.array([[offsets[k] + (jj + c) % periods[k] for k, c in valid] for jj in range(length + 1)]),
            device=device,
        )  # [pos+1, slot]
        # Start of the fakes' window of each period at each position j: max(0, j - window·n).
        self.window_start = torch.as_tensor(np.maximum(0, j - self.window * periods[None, :]), device=device)


@register_observer(NRecurrence)
def nrecurrence_posterior(
    task: "NRecurrence",
    tokens,
    *,
    prior: Literal["universal", "in_distribution"] = "universal",
    held_out: Collection[tuple[int, int]] | None = None,
    impossible: Literal["raise", "inf"] = "raise",
    backend: Literal["auto", "kernel", "torch"] = "auto",
    chunk_size: int = DEFAULT_CHUNK,
) -> Posterior:
    """Exact posterior of ``task`` after every prefix of ``tokens`` ``[batch, pos]``.

    ``prior="universal"``: under the task's rule prior; ``"in_distribution"``: under that prior restricted
    to the rules not in ``held_out`` (the rules ``(n, t)`` a run kept out of training, which this prior
    needs: ``held_out_rules`` in ``nrecur.train.data``, ``held_out_rules`` in a run's summary.json).

    Computes in float64 on the tokens' device (CPU for NumPy input) and returns
    arrays of the input's kind (see :class:`Posterior`). A sequence with
    probability zero raises :class:`ImpossibleSequenceError`, or with
    ``impossible="inf"`` gets log-loss ``inf`` and is flagged in ``.impossible``.

    ``backend``: ``"kernel"`` is the compiled CPU loop (``_kernel.py``), ``"torch"``
    the tensor filter (any device); ``"auto"`` takes the kernel for CPU tokens.
    Both compute the same numbers (tested against each other and brute force).
    """
    if backend not in ("auto", "kernel", "torch"):
        raise ValueError(f"backend must be 'auto', 'kernel' or 'torch', got {backend!r}")
    if impossible not in ("raise", "inf"):
        raise ValueError(f"impossible must be 'raise' or 'inf', got {impossible!r}")
    if prior not in PRIORS:
        raise ValueError(f"prior must be one of {PRIORS}, got {prior!r}")
    if prior == "in_distribution":
        if held_out is None:
            raise ValueError(
                "prior='in_distribution' needs the rules the run held out of training: held_out=[(n, t), ...] "
                "(an empty list when it held none out)"
            )
        task = task.in_distribution(held_out)
    x, back = as_token_tensor(tokens, task.vocab_size)
    B, L = x.shape
    if backend == "kernel" or (backend == "auto" and x.device.type == "cpu"):
        if x.device.type != "cpu":
            raise ValueError(f"backend='kernel' runs on the CPU; tokens are on {x.device}")
        return _posterior_from_kernel(task, x, back, impossible)
    tables = _Tables(task, x.device, L)
    V, P = tables.V, tables.P
    f64 = dict(dtype=torch.float64, device=x.device)
    out = {
        "predictive": torch.empty(B, L, V, **f64),
        "period": torch.empty(B, L, P, **f64),
        "target": torch.empty(B, L, V, **f64),
        "countdown": torch.zeros(B, L, P * tables.n_max, **f64),
    }
    log_p = torch.empty(B, L, **f64)
    chunks = [slice(start, min(B, start + chunk_size)) for start in range(0, B, chunk_size)]

    def run(rows: slice) -> None:
        _filter_chunk(task, tables, x[rows], {k: v[rows] for k, v in out.items()}, log_p[rows])

    workers = torch.get_num_threads() if x.device.type == "cpu" else 1
    if workers > 1 and len(chunks) > 1:
        # Small tensors parallelize badly inside an op; chunks side by side on CPU threads do
        # (torch releases the GIL while it computes). One intra-op thread each, restored after.
        with _single_intraop_thread(), ThreadPoolExecutor(min(workers, len(chunks))) as pool:
            list(pool.map(run, chunks))
    else:
        for rows in chunks:
            run(rows)
    first_impossible = check_impossible(log_p, impossible)
    return Posterior(
        predictive=back(out["predictive"]),
        period=back(out["period"]),
        target=back(out["target"]),
        countdown=back(out["countdown"].view(B, L, P, tables.n_max)),
        log_loss=back(-log_p[:, 1:]),
        log_likelihood=back(log_p.sum(1)),
        impossible=back(first_impossible),
    )


def _posterior_from_kernel(task: "NRecurrence", x: torch.Tensor, back, impossible: str) -> Posterior:
    B, L = x.shape
    V, P = task.vocab_size, task.n_periods
    periods = np.asarray(task.periods, dtype=np.int64)
    out = {
        "predictive": np.empty((B, L, V)),
        "period": np.empty((B, L, P)),
        "target": np.empty((B, L, V)),
        "countdown": np.zeros((B, L, P, task.max_period)),
    }
    log_p = np.empty((B, L))
    transitions, prior = TRANSITIONS[task.transition_changes], task.rule_distribution
    run_filter_kernel(
        np.ascontiguousarray(x.numpy()), V, periods, np.concatenate([[0], np.cumsum(periods)[:-1]]).astype(np.int64),
        np.ascontiguousarray(prior.table), task.noise_by_period, task.transition_by_period,
        prior.leave_rate(transitions, task.transition_by_period),
        np.ascontiguousarray(prior.arrival(transitions)), np.asarray(transitions.spread, dtype=np.float64),
        task.target_outside, FAKE_SOURCES[task.fake_source].window,
        out["predictive"], out["period"], out["target"], out["countdown"], log_p,
    )
    log_p = torch.from_numpy(log_p)
    first_impossible = check_impossible(log_p, impossible)
    to_kind = lambda array: back(torch.from_numpy(array))  # noqa: E731
    return Posterior(
        predictive=to_kind(out["predictive"]),
        period=to_kind(out["period"]),
        target=to_kind(out["target"]),
        countdown=to_kind(out["countdown"]),
        log_loss=back(-log_p[:, 1:]),
        log_likelihood=back(log_p.sum(1)),
        impossible=back(first_impossible),
    )


@contextlib.contextmanager
def _single_intraop_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _filter_chunk(task: "NRecurrence", tb: _Tables, x: torch.Tensor, out: dict, log_p: torch.Tensor) -> None:
    """Run the filter over one chunk ``x [batch, pos]``, writing into the views ``out`` and ``log_p``.

    The loop over positions is the hot path: everything that does not depend on
    the belief (one-hot tokens, emission tables) is computed for the whole chunk
    first, and the loop body is kept to a few fused tensor operations.
    """
    B, L = x.shape
    V, P = tb.V, tb.P
    f64 = dict(dtype=torch.float64, device=x.device)
    is_x = torch.nn.functional.one_hot(x, V).to(torch.float64)  # [batch, pos, vocab(t)]: t == x_i
    # Off-target emission of x_i, a function of t only: [batch, pos, vocab(t)].
    e_off_all = torch.full_like(is_x, 1.0 / V) if task.target_outside else (1.0 - is_x) / (V - 1)
    counts = _window_counts(x, V) if tb.window else None  # [batch, pos+1, vocab]
    if counts is None:  # Target-slot emission: 1 - p_noise if t == x_i, else p_noise / (V - 1).
        fake = (tb.p_noise / (V - 1))[:, None]  # [period, 1]
        e_on_all = torch.addcmul(fake, is_x[:, :, None, :], (1.0 - tb.p_noise)[:, None] - fake)  # [batch, pos, period, vocab]
    alpha = tb.alpha0.expand(B, tb.K, V).clone()  # [batch, slot, vocab]
    mass = tb.mass0.expand(B, P, V).clone()  # [batch, period, vocab]
    z_all = torch.empty(B, L, **f64)
    # Per-step beliefs kept raw; summed and reordered into the outputs once, after the loop.
    slot_mass = torch.empty(B, L, tb.K, **f64)  # [batch, pos, slot]
    rule_mass = torch.empty(B, L, P, V, **f64)  # [batch, pos, period, vocab]
    _, a_on, window = _predict(task, tb, 0, alpha, mass, counts)
    for i in range(L):
        e_off = e_off_all[:, i, None, :]  # [batch, 1, vocab]
        if counts is None:
            e_on = e_on_all[:, i]  # [batch, period, vocab]
        else:
            e_on = _window_target_emission(tb, is_x[:, i, None, :], x[:, i], window)
        on_new = a_on * e_on  # [batch, period, vocab]: target slots after emitting x_i
        mass = torch.addcmul(on_new, mass - a_on, e_off)
        z = torch.sum(mass, dim=(1, 2), out=z_all[:, i])  # [batch] = P(x_i | x_<i)
        inv_z = z.reciprocal()[:, None, None]
        mass.mul_(inv_z)
        alpha.mul_(e_off * inv_z)
        alpha.index_copy_(1, tb.on_slot[i], on_new.mul_(inv_z))
        if tb.has_transitions:
            inflow = tb.transitions.inflow(mass * tb.leave_rate, tb.arrival)  # [batch, period, vocab]
            alpha.mul_(tb.keep_slot[:, None]).add_((inflow / tb.n[:, None]).index_select(1, tb.slot_period_index))
            mass = torch.addcmul(inflow, mass, (1.0 - tb.p_transition)[:, None])
        # Beliefs about position i+1 and the predictive distribution of x_{i+1}.
        pred, a_on, window = _predict(task, tb, i + 1, alpha, mass, counts)
        out["predictive"][:, i] = pred
        rule_mass[:, i] = mass
        torch.sum(alpha, 2, out=slot_mass[:, i])
    torch.log(z_all, out=log_p)
    torch.sum(rule_mass, 3, out=out["period"])
    torch.sum(rule_mass, 2, out=out["target"])
    # slot (period, φ) at position i+1 has countdown c = (φ - i - 1) mod n: gather into (period, c) order.
    out["countdown"][:, :, tb.countdown_cells] = slot_mass.gather(2, tb.countdown_slots[1 : L + 1][None].expand(B, L, tb.K))


def _window_counts(x: torch.Tensor, V: int) -> torch.Tensor:
    """``[batch, pos+1, vocab]``: counts of each token in ``x[:, :j]`` at index j."""
    onehot = torch.nn.functional.one_hot(x, V).to(torch.int32)
    counts = torch.zeros(x.shape[0], x.shape[1] + 1, V, dtype=torch.int32, device=x.device)
    counts[:, 1:] = onehot.cumsum(1)
    return counts


def _predict(task, tb: _Tables, j: int, alpha, mass, counts):
    """Predictive distribution of ``x_j`` ``[batch, vocab]``, the target-slot mass ``a_on``
    ``[batch, period, vocab(t)]``, and the fakes' window tables of position j (``None`` without a window).

    With ``m_t`` the belief in target t, ``O`` the mass on target slots and ``H_t = Σ_n O(n,t)(1 - p_noise(n))``:
    ``P(x = v) = H_v`` (the target shows) ``+`` off-target tokens ``+`` fake tokens.
    """
    V = tb.V
    a_on = alpha.index_select(1, tb.on_slot[j])  # [batch, period, vocab(t)]
    on_t = a_on.sum(1)  # [batch, vocab(t)]
    hit = torch.matmul(1.0 - tb.p_noise, a_on)  # [batch, vocab(t)]: H
    off_t = mass.sum(1) - on_t  # [batch, vocab(t)]: off-target mass
    if task.target_outside:
        pred = off_t.sum(1, keepdim=True) / V + hit
    else:
        pred = (off_t.sum(1, keepdim=True) - off_t) / (V - 1) + hit
    if counts is None:  # no window: fakes uniform over V minus t
        w_t = on_t - hit
        return pred + (w_t.sum(1, keepdim=True) - w_t) / (V - 1), a_on, None
    # Window fakes: uniform over R = window tokens minus t, if R is not empty.
    w = a_on * tb.p_noise[:, None]  # [batch, period, vocab(t)]: mass of "fake at position j"
    present = ((counts[:, j, None, :] - counts[:, tb.window_start[j], :]) > 0).to(torch.float64)  # [batch, period, vocab]
    r = present.sum(2, keepdim=True) - present  # [batch, period, vocab(t)]: |R|
    nonempty = r > 0
    g = torch.where(nonempty, w / r.clamp(min=1), 0.0)
    h = torch.where(nonempty, 0.0, w / (V - 1))
    from_window = (present * (g.sum(2, keepdim=True) - g)).sum(1)
    h_t = h.sum(1)
    pred = pred + from_window + (h_t.sum(1, keepdim=True) - h_t)
    return pred, a_on, (present, r, nonempty)


def _window_target_emission(tb: _Tables, is_x, xi, window):
    """Target-slot emission ``[batch, period, vocab(t)]`` of ``x_i`` with fakes from the window:
    ``1 - p_noise`` if t == x_i, else ``p_noise`` times P(fake = x_i | t, n)."""
    present, r, nonempty = window
    x_present = present.gather(2, xi[:, None, None].expand(-1, present.shape[1], 1))  # [batch, period, 1]
    q = torch.where(nonempty, x_present / r.clamp(min=1), 1.0 / (tb.V - 1))
    p_noise = tb.p_noise[:, None]
    return is_x * (1.0 - p_noise) + (1.0 - is_x) * (p_noise * q)
