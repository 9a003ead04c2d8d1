"""Steering: add a probe direction to the residual stream — does the model then believe its rule?

A ridge probe (:class:`~nrecur.analysis.probes.RidgeProbe`) is fitted from the
residual stream at one hook point to the observer's marginal over the target
(on fresh sequences of the run's task, held out by sequence). Its weight column
for target ``t*`` is a direction in the residual stream; we scale it to
``w / ‖w‖²``, so adding ``α`` times it raises the probe's reading of
``P(target = t*)`` by exactly ``α``. The scan adds ``α · direction`` at every
position of the hook for a range of ``α`` and measures, at the last position,
how far the prediction *moves* toward the rule ``(n, t*)`` (SPEC §5): the
desired predictive ``O*`` is the observer's for the destination sequence with
its target and ``t*`` swapped everywhere, which follows ``(n, t*)`` with the
destination's own period and phase. An edit *succeeds* when, on a sequence
whose next position is a target position, the model's most likely token is
``t*``.

The best hook and ``α`` are chosen on half the destination sequences (the
selection split, by sequence) and every figure reported — the headline and the
curves — is read on the other half, so the choice does not flatter the number.

How to read it: moved against ``α`` per hook, beside the same scan along a
random direction of the same norm (the baseline: any large push disturbs the
prediction). A direction that carries the belief moves the prediction toward
1 well before the random one does; moved falling again at large ``α`` means
the push overshoots into activations the model never saw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from nrecur.analysis.base import cached
from nrecur.analysis.probes import RidgeProbe, r2_score, split_sequences
from nrecur.model import GPT
from nrecur.tasks import NRecurrence
from nrecur.tasks.sampler import Batch

__all__ = ["ALPHAS", "ProbeDirections", "SteeringScan", "kl_per_row", "probe_directions", "steering_hooks", "steering_scan", "swap_target", "target_directions"]

ALPHAS = (0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
"""Default strengths: how much the probe's reading of P(t*) is raised."""


def steering_hooks(model: GPT) -> list[str]:
    """The residual stream entering every block, and leaving the last one."""
    layers = model.config.n_layers
    return [f"blocks.{l}.hook_resid_pre" for l in range(layers)] + ([f"blocks.{layers - 1}.hook_resid_post"] if layers else [])


def swap_target(tokens: np.ndarray, target: np.ndarray, new_target: np.ndarray) -> np.ndarray:
    """``tokens [batch, pos]`` with each row's ``target`` and ``new_target [batch]`` exchanged everywhere: a
    sequence of rule ``(n, new_target)`` with the same period and phase."""
    tokens = np.asarray(tokens)
    t, s = np.asarray(target)[:, None], np.asarray(new_target)[:, None]
    return np.where(tokens == t, s, np.where(tokens == s, t, tokens))


def target_directions(probe: RidgeProbe) -> np.ndarray:
    """``[vocab, d_model]``: for each target, the probe's weight column scaled to ``w / ‖w‖²`` (one unit of
    α raises the probe's reading of that target's probability by 1)."""
    weight = probe.weight.T  # [vocab, d_model]
    return weight / np.maximum((weight**2).sum(-1, keepdims=True), 1e-12)


@dataclass(frozen=True)
class SteeringScan:
    """Moved toward ``(n, t*)`` for each hook × α, along the probe direction and a random one: chosen on the
    selection sequences, every figure read on the held-out ones."""

    hooks: tuple[str, ...]
    alphas: tuple[float, ...]
    moved: list[list[float]]
    """``[hook, alpha]`` mean moved toward the rule with the target swapped to ``t*`` (held-out sequences, as
    every figure below)."""
    moved_random: list[list[float]]
    """``[hook, alpha]`` the same along a random direction of the same norm."""
    success: list[list[float]]
    """``[hook, alpha]`` share of sequences whose next position is a target position where the model's most
    likely token is ``t*``."""
    success_random: list[list[float]]
    """``[hook, alpha]`` the same along the random direction."""
    probe_r2: dict[str, float]
    """hook → held-out R² of the ridge probe to the target marginal."""
    best_hook: str
    """The hook and α where the probe direction moves the prediction most on the selection sequences."""
    best_alpha: float
    headline: dict[str, float]
    """At the best hook and α, on the held-out sequences: ``steer_moved_best`` beside ``steer_moved_best_random``
    (a random direction), ``steer_success_best`` beside ``…_random`` and ``…_no_edit`` (α = 0),
    ``steer_alpha_best``, ``steer_probe_r2``."""
    moved_selection: list[list[float]] | None = None
    """``[hook, alpha]`` moved on the selection sequences: what chose the best hook and α."""
    selection: tuple[int, ...] = ()
    """The destination sequences (indices) the best hook and α were chosen on."""
    held_out: tuple[int, ...] = ()
    """The destination sequences (indices) every other figure is read on."""


def kl_per_row(target: Tensor, log_probs: Tensor) -> Tensor:
    """``KL(target ‖ exp(log_probs))`` over the last axis, for any leading shape (float64)."""
    log_target = torch.where(target > 0, target.log(), torch.zeros_like(target))
    terms = target * (log_target - log_probs.double())
    return torch.where(target > 0, terms, torch.zeros_like(terms)).sum(-1)  # 0 · log 0 = 0, even against -inf


@torch.no_grad()
def _last_log_probs(model: GPT, tokens: Tensor, hook: str | None = None, add: Tensor | None = None) -> Tensor:
    """``[batch, vocab]`` float64 log-probs at the last position, with ``add [batch, d_model]`` added at every
    position of ``hook`` when given."""
    if hook is None:
        return F.log_softmax(model(tokens)[:, -1].double(), -1)
    with model.hooks([(hook, lambda activation, _hook: activation + add[:, None, :].to(activation.dtype))]):
        return F.log_softmax(model(tokens)[:, -1].double(), -1)


def _share(hits: np.ndarray, counted: np.ndarray) -> float:
    """Share of ``hits [..., batch]`` among the rows ``counted [batch]`` (NaN when none is counted)."""
    return hits[..., counted].mean(-1) if counted.any() else np.full(hits.shape[:-1], np.nan)


@dataclass(frozen=True)
class ProbeDirections:
    """Steering directions at one hook, from ridge probes to the observer's beliefs (see the module docstring)."""

    hook: str
    target: np.ndarray
    """``[vocab, d_model]``: one unit raises the probe's P(target = v) by 1."""
    countdown: np.ndarray
    """``[period, max_period, d_model]``: one unit raises the probe's P(period = periods[k], countdown = c) of
    the next position by 1 (``c = 0``: the next position is a target position)."""
    target_r2: float
    """Held-out R² of the target probe."""
    countdown_r2: float
    """Held-out R² of the (period, countdown) probe."""


@torch.no_grad()
def probe_directions(run, hooks: list[str], seed: int = 0, n_sequences: int = 1024) -> dict[str, ProbeDirections]:
    """Ridge probes from each hook to the observer's target marginal and its joint (period, countdown)
    marginal, on ``n_sequences`` fresh sequences of the run's task (a fifth held out by sequence)."""
    model, task = run.model, run.task
    if not isinstance(task, NRecurrence):
        raise ValueError(f"probe directions need an n-recurrence task, not {task.kind!r}")
    fit = task.sample(n_sequences, run.config.length, seed + 2)
    posterior = task.posterior(fit.tokens)
    targets = {
        "target": np.asarray(posterior.target, dtype=np.float64),  # [batch, pos, vocab]
        "countdown": np.asarray(posterior.countdown, dtype=np.float64),  # [batch, pos, period, max_period]
    }
    train_seq, test_seq = split_sequences(n_sequences, 0.2, seed)
    cache = cached(model, fit.tokens, hooks)
    found = {}
    for hook in hooks:
        x = cache[hook].astype(np.float64)  # [batch, pos, d_model]
        directions, r2 = {}, {}
        for name, y in targets.items():
            flat = y.reshape(*y.shape[:2], -1)  # [batch, pos, k]
            probe = RidgeProbe.fit(x[train_seq].reshape(-1, x.shape[-1]), flat[train_seq].reshape(-1, flat.shape[-1]))
            r2[name] = r2_score(flat[test_seq].reshape(-1, flat.shape[-1]), probe.predict(x[test_seq].reshape(-1, x.shape[-1])))
            directions[name] = target_directions(probe).reshape(*y.shape[2:], -1)
        found[hook] = ProbeDirections(hook, directions["target"], directions["countdown"], r2["target"], r2["countdown"])
    return found


@torch.no_grad()
def steering_scan(run, destination: Batch, seed: int = 0, alphas=ALPHAS, probe_sequences: int = 1024) -> SteeringScan:
    """Steer ``run.model`` on the ``destination`` sequences (each following one rule, at least two) toward a random
    other target ``t*`` along ridge-probe directions at every :func:`steering_hooks` point: the best hook and α
    chosen on half of them (by sequence, seeded by ``seed``), every figure read on the other half; see the module
    docstring."""
    model, task = run.model, run.task
    if not isinstance(task, NRecurrence):
        raise ValueError(f"steering needs an n-recurrence task, not {task.kind!r}")
    device = next(model.parameters()).device
    hooks = steering_hooks(model)
    vocab = task.vocab_size
    found = probe_directions(run, hooks, seed, probe_sequences)
    directions = {hook: torch.as_tensor(d.target) for hook, d in found.items()}  # [vocab, d_model]
    probe_r2 = {hook: d.target_r2 for hook, d in found.items()}
    was_training = model.training
    model.eval()
    try:
        rng = np.random.default_rng(seed)
        target = destination.target[:, -1]
        new_target = (target + rng.integers(1, vocab, size=len(target))) % vocab  # t* ≠ t
        swapped = swap_target(destination.tokens, target, new_target)
        desired = torch.as_tensor(np.asarray(task.posterior(swapped).predictive, dtype=np.float64)[:, -1])  # [batch, vocab]
        next_is_target = destination.countdown[:, -1] == 1
        tokens = torch.as_tensor(destination.tokens, device=device)
        kl_clean = kl_per_row(desired, _last_log_probs(model, tokens).cpu())
        index = torch.as_tensor(new_target)
        generator = torch.Generator().manual_seed(seed)
        shape = (len(hooks), len(alphas), len(target))  # [hook, alpha, batch]
        moved_rows, moved_random_rows = np.zeros(shape), np.zeros(shape)
        hits, hits_random = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
        for i, hook in enumerate(hooks):
            direction = directions[hook][index]  # [batch, d_model]
            random = torch.randn(vocab, direction.shape[-1], generator=generator, dtype=torch.float64)
            random = random * (directions[hook].norm(dim=-1) / random.norm(dim=-1))[:, None]
            random = random[index]
            for j, alpha in enumerate(alphas):
                for rows, top, push in ((moved_rows, hits, direction), (moved_random_rows, hits_random, random)):
                    log_probs = _last_log_probs(model, tokens, hook, (alpha * push).to(device)).cpu()
                    rows[i, j] = (1 - kl_per_row(desired, log_probs) / kl_clean).numpy()
                    top[i, j] = log_probs.argmax(-1).numpy() == new_target
    finally:
        model.train(was_training)
    selection, held_out = split_sequences(len(target), 0.5, seed + 5)
    moved_selection = moved_rows[..., selection].mean(-1)  # [hook, alpha]: what chooses
    moved, moved_random = moved_rows[..., held_out].mean(-1), moved_random_rows[..., held_out].mean(-1)  # what is reported
    counted = np.zeros(len(target), dtype=bool)
    counted[held_out] = next_is_target[held_out]
    success, success_random = _share(hits, counted), _share(hits_random, counted)
    i, j = np.unravel_index(int(np.argmax(moved_selection)), moved_selection.shape)
    headline = {
        "steer_moved_best": float(moved[i, j]),
        "steer_moved_best_random": float(moved_random[i, j]),
        "steer_success_best": float(success[i, j]),
        "steer_success_best_random": float(success_random[i, j]),
        "steer_success_best_no_edit": float(success[i, 0]) if alphas[0] == 0 else float("nan"),
        "steer_alpha_best": float(alphas[j]),
        "steer_probe_r2": probe_r2[hooks[i]],
    }
    return SteeringScan(
        hooks=tuple(hooks),
        alphas=tuple(float(a) for a in alphas),
        moved=moved.tolist(),
        moved_random=moved_random.tolist(),
        success=success.tolist(),
        success_random=success_random.tolist(),
        probe_r2=probe_r2,
        best_hook=hooks[i],
        best_alpha=float(alphas[j]),
        headline=headline,
        moved_selection=moved_selection.tolist(),
        selection=tuple(int(k) for k in selection),
        held_out=tuple(int(k) for k in held_out),
    )
