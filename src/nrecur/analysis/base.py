"""What the computations of every analysis share: activations at hook points, and progress.

Nothing here draws: figures live in :mod:`nrecur.analysis.figures`.
"""

from __future__ import annotations

import contextlib
import contextvars

import numpy as np
import torch

from nrecur._log import progress
from nrecur.model import GPT

__all__ = ["cached", "progress_bar", "residual_activations", "residual_hooks", "showing_progress"]

_PROGRESS = contextvars.ContextVar("nrecur_analysis_progress", default=False)


@contextlib.contextmanager
def showing_progress(enabled: bool):
    """Inside the ``with``, :func:`progress_bar` shows progress (on stderr) when ``enabled``."""
    token = _PROGRESS.set(enabled)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


def progress_bar(iterable, description: str, enabled: bool | None = None, total: int | None = None):
    """``iterable`` with progress on stderr: a tqdm bar on a terminal, plain lines without control codes elsewhere
    (:func:`nrecur._log.progress`). ``enabled``: default, as :func:`showing_progress` says."""
    return progress(iterable, description, total=total, enabled=_PROGRESS.get() if enabled is None else enabled)


#: The residual hook points probes read, in the order of the forward pass (``embed`` = hook_embed + hook_pos_embed).
def residual_hooks(model: GPT) -> list[str]:
    names = ["embed"]
    for layer in range(model.config.n_layers):
        names += [f"blocks.{layer}.hook_resid_mid", f"blocks.{layer}.hook_resid_post"]
    return names + ["ln_final.hook_normalized"]


@torch.no_grad()
def cached(model: GPT, tokens: np.ndarray, names: list[str], chunk: int = 512) -> dict[str, np.ndarray]:
    """``{name: activations}`` float32 at the hook points ``names`` on ``tokens [batch, pos]``: in eval mode,
    on the model's device, ``chunk`` sequences at a time."""
    wanted = set(names)
    device = next(model.parameters()).device
    parts: dict[str, list[np.ndarray]] = {name: [] for name in names}
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(tokens), chunk):
            batch = torch.as_tensor(np.asarray(tokens[start : start + chunk]), dtype=torch.long, device=device)
            _, cache = model.run_with_cache(batch, names_filter=lambda name: name in wanted)
            for name in names:
                parts[name].append(cache[name].float().cpu().numpy())
    finally:
        model.train(was_training)
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def residual_activations(model: GPT, tokens: np.ndarray, chunk: int = 512) -> dict[str, np.ndarray]:
    """``{hook: [batch, pos, d_model]}`` float32 activations at every residual hook point (eval mode)."""
    hooks = residual_hooks(model)
    acts = cached(model, tokens, ["hook_embed", "hook_pos_embed", *hooks[1:]], chunk)
    return {"embed": acts.pop("hook_embed") + acts.pop("hook_pos_embed"), **acts}
