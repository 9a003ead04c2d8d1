"""Steering along probe directions: the best hook and α are chosen on one half of the destinations and every
figure reported is the other half's — checked against the same scan computed row by row by hand."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrecur import NRecurrence
from nrecur.analysis.steering import kl_per_row, probe_directions, steering_hooks, steering_scan, swap_target
from nrecur.model import GPT, GPTConfig

TASK = NRecurrence(vocab_size=4, periods=(2, 3))
ALPHAS = (0.0, 1.0, 4.0, 16.0)


def _moved_by_hand(run, destination, seed: int) -> np.ndarray:
    """``[hook, alpha, batch]``: each destination's moved toward ``(n, t*)``, one forward per hook and α."""
    model, task = run.model, run.task
    hooks = steering_hooks(model)
    directions = {h: torch.as_tensor(d.target) for h, d in probe_directions(run, hooks, seed, 256).items()}
    target = destination.target[:, -1]
    new_target = (target + np.random.default_rng(seed).integers(1, task.vocab_size, size=len(target))) % task.vocab_size
    desired = torch.as_tensor(np.asarray(task.posterior(swap_target(destination.tokens, target, new_target)).predictive)[:, -1], dtype=torch.float64)
    tokens = torch.as_tensor(destination.tokens)
    with torch.no_grad():
        clean = kl_per_row(desired, F.log_softmax(model(tokens)[:, -1].double(), -1))
        moved = np.zeros((len(hooks), len(ALPHAS), len(target)))
        for i, hook in enumerate(hooks):
            push = directions[hook][torch.as_tensor(new_target)]  # [batch, d_model]
            for j, alpha in enumerate(ALPHAS):
                with model.hooks([(hook, lambda act, _h, add=alpha * push: act + add[:, None, :].to(act.dtype))]):
                    steered = F.log_softmax(model(tokens)[:, -1].double(), -1)
                moved[i, j] = (1 - kl_per_row(desired, steered) / clean).numpy()
    return moved


def test_steering_chooses_on_the_selection_half_and_reports_the_held_out_half():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=4, n_ctx=10, d_model=16, n_layers=2, n_heads=2, d_head=8, d_mlp=32)).eval()
    run = SimpleNamespace(model=model, task=TASK, config=SimpleNamespace(length=10))
    destination = TASK.model_copy(update={"p_noise": 0.0, "p_transition": 0.0}).sample(24, 10, 3)
    scan = steering_scan(run, destination, seed=1, alphas=ALPHAS, probe_sequences=256)
    selection, held_out = np.asarray(scan.selection), np.asarray(scan.held_out)
    assert len(selection) == len(held_out) == 12 and set(selection.tolist()) | set(held_out.tolist()) == set(range(24))

    rows = _moved_by_hand(run, destination, seed=1)
    np.testing.assert_allclose(scan.moved_selection, rows[..., selection].mean(-1), atol=1e-9)
    np.testing.assert_allclose(scan.moved, rows[..., held_out].mean(-1), atol=1e-9)
    i, j = np.unravel_index(np.argmax(rows[..., selection].mean(-1)), rows.shape[:2])
    assert (scan.best_hook, scan.best_alpha) == (steering_hooks(model)[i], ALPHAS[j])  # chosen on the selection half
    reported = scan.headline["steer_moved_best"]
    assert reported == pytest.approx(rows[i, j, held_out].mean(), abs=1e-9)  # reported on the held-out half
    assert abs(reported - rows[i, j, selection].mean()) > 1e-6 and abs(reported - rows[i, j].mean()) > 1e-6  # not on the data that chose
