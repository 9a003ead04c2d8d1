"""Grokfast (Lee et al. 2024): amplify the slow component of the gradient.

Between ``backward()`` and ``optimizer.step()``, each parameter's gradient
``g`` is low-pass filtered by an exponential moving average ``h ← α·h +
(1-α)·g`` and the filtered part is added back, ``g ← g + λ·h``. Slowly
varying gradient directions, which the paper links to generalization, get up to
``1 + λ`` times their weight; reported to cut the steps to grok modular
arithmetic by ~40–50×.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GrokfastEMA:
    """The EMA gradient filter; its state (one tensor per parameter) goes into checkpoints."""

    def __init__(self, model: nn.Module, alpha: float = 0.98, lamb: float = 2.0) -> None:
        self.model = model
        self.alpha = alpha
        self.lamb = lamb
        self.ema: dict[str, Tensor] = {}

    @torch.no_grad()
    def filter_gradients(self) -> None:
        """Update the EMA with the current gradients and amplify them in place."""
        for name, param in self.model.named_parameters():
            if param.grad is None:
                continue
            ema = self.ema.get(name)
            if ema is None:
                # The first gradient starts the average (as in the reference implementation).
                self.ema[name] = ema = param.grad.detach().clone()
            else:
                ema.mul_(self.alpha).add_(param.grad, alpha=1.0 - self.alpha)
            param.grad.add_(ema, alpha=self.lamb)

    def state_tensors(self) -> dict[str, Tensor]:
        """``{parameter name: EMA tensor}``."""
        return dict(self.ema)

    def load_state_tensors(self, tensors: dict[str, Tensor]) -> None:
        params = dict(self.model.named_parameters())
        self.ema = {name: tensor.to(params[name].device, params[name].dtype).clone() for name, tensor in tensors.items()}
