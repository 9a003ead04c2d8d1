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
    """Moved toward ``(n, t*)`` for each hook × α, along the probe direction and a random one."""

    hooks: tuple[str, ...]
    alphas: tuple[float, ...]
    moved: list[list[float]]
    """``[hook, alpha]`` mean moved toward the rule with the target swapped to ``t*``."""
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
    """The hook and α where the probe direction moves the prediction most."""
    best_alpha: float
    headline: dict[str, float]
    """At the best hook and α: ``steer_moved_best`` beside ``steer_moved_best_random`` (a random direction),
    ``steer_success_best`` beside ``…_random`` and ``…_no_edit`` (α = 0), ``steer_alpha_best``,
    ``steer_probe_r2``."""


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


def _success(log_probs: Tensor, new_target: np.ndarray, next_is_target: np.ndarray) -> float:
    """Share of the sequences whose next position is a target position where ``t*`` is most likely."""
    hits = log_probs.argmax(-1).numpy() == new_target
    return float(hits[next_is_target].mean()) if next_is_target.any() else float("nan")


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
    """Steer ``run.model`` on the ``destination`` sequences (each following one rule) toward a random other
    target ``t*`` along ridge-probe directions at every :func:`steering_hooks` point; see the module docstring."""
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
        moved, moved_random, success, success_random = (np.zeros((len(hooks), len(alphas))) for _ in range(4))
        for i, hook in enumerate(hooks):
            direction = directions[hook][index]  # [batch, d_model]
            random = torch.randn(vocab, direction.shape[-1], generator=generator, dtype=torch.float64)
            random = random * (directions[hook].norm(dim=-1) / random.norm(dim=-1))[:, None]
            random = random[index]
            for j, alpha in enumerate(alphas):
                log_probs = _last_log_probs(model, tokens, hook, (alpha * direction).to(device)).cpu()
                moved[i, j] = float((1 - kl_per_row(desired, log_probs) / kl_clean).mean())
                success[i, j] = _success(log_probs, new_target, next_is_target)
                log_probs = _last_log_probs(model, tokens, hook, (alpha * random).to(device)).cpu()
                moved_random[i, j] = float((1 - kl_per_row(desired, log_probs) / kl_clean).mean())
                success_random[i, j] = _success(log_probs, new_target, next_is_target)
    finally:
        model.train(was_training)
    i, j = np.unravel_index(int(np.argmax(moved)), moved.shape)
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
    )
