"""The n-recurrence filter as a compiled CPU kernel (numba), one sequence per thread.

Same algorithm and state layout as the tensor filter in ``nrecurrence.py``
(absolute phase ``φ``, closed-form transitions), written as plain loops so a
token costs one pass over the ``V·Σn`` states with everything in cache. The
tensor filter stays the reference and the CUDA path; the tests run both
against brute-force enumeration and against each other.

The kernel knows no variant by name. The rule prior arrives as its table
``prior [period, vocab]`` (the belief before the first token), a transition
kind as the arrays the prior and ``TransitionKind`` give (``tasks/priors.py``,
``tasks/variants.py``): ``leave_rate [period, vocab]`` (a rule's mass times it
is its ``w``), ``arrival [period, vocab]`` (the prior factor of an arriving
rule) and ``spread [4]`` (coefficients on the sums
``W, W_n, W_t, w``); a fake source as its ``window`` (a multiplier of n; 0: no
window, fakes uniform over the other tokens).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch


def run_filter_kernel(*arrays: object) -> None:
    """:func:`filter_kernel` (same arguments) on as many threads as torch uses; torch's and numba's thread
    counts are as they were afterwards.

    numba's OpenMP threading layer shares the process's OpenMP runtime with torch. When numba's pool
    starts (the first parallel kernel of a process) it sets the runtime's thread count to numba's own, every
    core, and torch then used every core too: a sweep worker meant to run on one thread ran on all of them.
    """
    torch_threads = torch.get_num_threads()
    numba_threads = None
    try:
        numba_threads = numba.get_num_threads()  # starts numba's pool if it has not started
        numba.set_num_threads(max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS)))
        filter_kernel(*arrays)
    finally:
        if numba_threads is not None:
            numba.set_num_threads(numba_threads)
        torch.set_num_threads(torch_threads)


@numba.njit(cache=True, parallel=True, fastmath=False)
def filter_kernel(
    x, V, periods, offsets, prior, p_noise, p_transition, leave_rate, arrival, spread, target_outside, window_factor,
    pred_out, period_out, target_out, countdown_out, log_p_out,
):  # pragma: no cover - compiled; covered through nrecurrence_posterior
    """Fill the outputs for tokens ``x [batch, pos]``; see ``nrecurrence_posterior`` for their meaning.

    A sequence whose token has probability zero gets ``log_p = -inf`` from there
    on and NaN beliefs (the caller raises or flags it).
    """
    B, L = x.shape
    P = periods.shape[0]
    K = 0
    for p in range(P):
        K += periods[p]
    has_transitions = False
    for p in range(P):
        if p_transition[p] > 0.0:
            has_transitions = True
    windowed = window_factor > 0  # fakes come from a window of observed tokens
    for b in numba.prange(B):
        alpha = np.empty((K, V))  # [slot, target]
        mass = np.empty((P, V))  # [period, target]
        inflow = np.zeros((P, V))
        per_period = np.empty(P)  # W_n of the leaving mass
        per_target = np.empty(V)  # W_t
        e_on = np.empty((P, V))  # emission of x_i from the target slot of (period, target)
        e_off = np.empty(V)  # emission of x_i from an off-target slot of target t
        arriving = np.empty(V)  # transition mass arriving in each phase slot of a period, per target
        counts = np.zeros((P, V), dtype=np.int64)  # tokens of the fakes' window of each period
        distinct = np.zeros(P, dtype=np.int64)
        off_t = np.empty(V)
        fake_t = np.empty(V)
        fake_per_token = np.empty(V)  # window fakes: mass of each target's fake per window token
        for p in range(P):
            for t in range(V):
                w = prior[p, t]  # one read into a local: indexing prior twice here compiles to a slower filter loop
                mass[p, t] = w
                for phi in range(periods[p]):
                    alpha[offsets[p] + phi, t] = w / periods[p]
        for i in range(L):
            xi = x[b, i]
            # --- emission of x_i (slot-major loops: the inner loop runs over contiguous targets)
            for t in range(V):
                e_off[t] = 1.0 / V if target_outside else (0.0 if t == xi else 1.0 / (V - 1))
            for p in range(P):
                for t in range(V):
                    if t == xi:
                        e_on[p, t] = 1.0 - p_noise[p]
                    else:
                        q = 1.0 / (V - 1)
                        if windowed:
                            r = distinct[p] - (1 if counts[p, t] > 0 else 0)
                            if r > 0:
                                q = (1.0 if counts[p, xi] > 0 else 0.0) / r
                        e_on[p, t] = p_noise[p] * q
                    mass[p, t] = 0.0
            z = 0.0
            for p in range(P):
                on = i % periods[p]
                for phi in range(periods[p]):
                    k = offsets[p] + phi
                    if phi == on:
                        for t in range(V):
                            alpha[k, t] *= e_on[p, t]
                            mass[p, t] += alpha[k, t]
                    else:
                        for t in range(V):
                            alpha[k, t] *= e_off[t]
                            mass[p, t] += alpha[k, t]
            for p in range(P):
                for t in range(V):
                    z += mass[p, t]
            if not z > 0.0:
                for j in range(i, L):
                    log_p_out[b, j] = -np.inf
                    pred_out[b, j, :] = np.nan
                    period_out[b, j, :] = np.nan
                    target_out[b, j, :] = np.nan
                    countdown_out[b, j, :, :] = np.nan
                break
            log_p_out[b, i] = math.log(z)
            inv_z = 1.0 / z
            for p in range(P):
                for t in range(V):
                    mass[p, t] *= inv_z
            # --- normalization and the rule changes after position i, in one pass
            if has_transitions:
                _inflow(mass, leave_rate, arrival, spread, inflow, per_period, per_target)
            for p in range(P):
                keep = 1.0 - p_transition[p]
                scale = inv_z * keep
                for t in range(V):
                    arriving[t] = inflow[p, t] / periods[p]
                for phi in range(periods[p]):
                    k = offsets[p] + phi
                    for t in range(V):
                        alpha[k, t] = alpha[k, t] * scale + arriving[t]
                for t in range(V):
                    mass[p, t] = mass[p, t] * keep + inflow[p, t]
            # --- the window moves on to position i+1: x_i enters, x_{i-window_factor·n} leaves
            if windowed:
                for p in range(P):
                    if counts[p, xi] == 0:
                        distinct[p] += 1
                    counts[p, xi] += 1
                    old = i - window_factor * periods[p]
                    if old >= 0:
                        xo = x[b, old]
                        counts[p, xo] -= 1
                        if counts[p, xo] == 0:
                            distinct[p] -= 1
            # --- beliefs about position i+1 and the predictive distribution of x_{i+1}
            for v in range(V):
                pred_out[b, i, v] = 0.0
                target_out[b, i, v] = 0.0
                off_t[v] = 0.0
                fake_t[v] = 0.0
            for p in range(P):
                n = periods[p]
                on = offsets[p] + (i + 1) % n
                period_mass = 0.0
                fake_sum = 0.0  # Σ_t of the window fake mass per candidate (see below)
                for t in range(V):
                    a_on = alpha[on, t]
                    off_t[t] += mass[p, t] - a_on
                    pred_out[b, i, t] += a_on * (1.0 - p_noise[p])
                    w = a_on * p_noise[p]
                    if windowed:
                        r = distinct[p] - (1 if counts[p, t] > 0 else 0)
                        if r > 0:
                            fake_per_token[t] = w / r
                            fake_sum += w / r
                        else:
                            fake_per_token[t] = 0.0
                            fake_t[t] += w
                    else:
                        fake_t[t] += w
                    period_mass += mass[p, t]
                    target_out[b, i, t] += mass[p, t]
                if windowed:  # token v gets g(p, t) from every t != v whose window holds v
                    for v in range(V):
                        if counts[p, v] > 0:
                            pred_out[b, i, v] += fake_sum - fake_per_token[v]
                period_out[b, i, p] = period_mass
                for c in range(n):
                    k = offsets[p] + (i + 1 + c) % n
                    s = 0.0
                    for t in range(V):
                        s += alpha[k, t]
                    countdown_out[b, i, p, c] = s
            total_off = 0.0
            total_fake = 0.0
            for t in range(V):
                total_off += off_t[t]
                total_fake += fake_t[t]
            for v in range(V):
                if target_outside:
                    pred_out[b, i, v] += total_off / V
                else:
                    pred_out[b, i, v] += (total_off - off_t[v]) / (V - 1)
                pred_out[b, i, v] += (total_fake - fake_t[v]) / (V - 1)


@numba.njit(cache=True)
def _inflow(mass, leave_rate, arrival, spread, inflow, per_period, per_target):  # pragma: no cover - compiled
    """Mass arriving at each rule ``[period, target]`` after a change: ``w = mass · leave_rate``, then
    ``arrival · (spread · (W, W_n, W_t, w))`` (the closed form of ``TransitionKind.inflow``)."""
    P, V = mass.shape
    total = 0.0
    for t in range(V):
        per_target[t] = 0.0
    for p in range(P):
        s = 0.0
        for t in range(V):
            w = mass[p, t] * leave_rate[p, t]
            inflow[p, t] = w
            s += w
            per_target[t] += w
        per_period[p] = s
        total += s
    c_total, c_period, c_target, c_self = spread[0], spread[1], spread[2], spread[3]
    for p in range(P):
        base = c_total * total + c_period * per_period[p]
        for t in range(V):
            inflow[p, t] = arrival[p, t] * (base + c_target * per_target[t] + c_self * inflow[p, t])
