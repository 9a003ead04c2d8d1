"""The optimizers a run can use (``TrainConfig.optimizer``), built by :func:`make_optimizer`.

* ``adamw``: AdamW on every parameter; weight decay on matrices and embeddings
  only (:func:`nrecur.train.weights.is_decayed`).
* ``muon``: Muon (``torch.optim.Muon``: Nesterov momentum 0.95, then the update
  orthogonalized by five Newton–Schulz iterations) on the weight matrices
  inside the transformer blocks — attention's ``qkv`` and ``out``, the MLP's
  ``fc_in`` and ``fc_out`` — and AdamW on everything else (embeddings,
  unembedding, biases, norm scales), as one optimizer. Muon's step is scaled
  as in Moonshot's "Muon is Scalable for LLM Training" (``adjust_lr_fn =
  "match_rms_adamw"``: the orthogonalized update times 0.2·√max(rows, cols),
  the RMS of a typical AdamW update), so one ``lr`` and ``weight_decay`` serve
  both halves and the schedule scales both.

Both are ordinary ``torch.optim.Optimizer`` objects: the trainer sets every
group's ``lr`` each step, and checkpoints save and restore their state through
``state_dict`` (one state for both halves of ``muon``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from nrecur.train.config import TrainConfig
from nrecur.train.weights import is_decayed

__all__ = ["MuonWithAdamW", "make_optimizer", "muon_parameters"]


def make_optimizer(model: nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``train.optimizer`` names, over ``model``'s parameters (see the module docstring)."""
    if train.optimizer == "muon":
        hidden = muon_parameters(model)
        rest = [p for p in model.parameters() if all(p is not h for h in hidden)]
        return MuonWithAdamW(hidden, _decay_groups(rest, train.weight_decay), lr=train.lr, weight_decay=train.weight_decay, betas=train.betas)
    return torch.optim.AdamW(_decay_groups(list(model.parameters()), train.weight_decay), lr=train.lr, betas=train.betas, foreach=True)


def _decay_groups(parameters: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    return [
        {"params": [p for p in parameters if is_decayed(p)], "weight_decay": weight_decay},
        {"params": [p for p in parameters if not is_decayed(p)], "weight_decay": 0.0},
    ]


def muon_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The weight matrices of the ``nn.Linear`` layers inside ``model.blocks`` (what Muon trains), in order."""
    return [module.weight for block in model.blocks for module in block.modules() if isinstance(module, nn.Linear)]


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on ``muon_params`` and AdamW on ``adamw_groups``, as one optimizer.

    Its ``param_groups`` are Muon's groups then AdamW's (the same dicts, so setting a group's ``lr`` reaches
    the optimizer that uses it) and its ``state`` is the one both write to, so ``state_dict`` and
    ``load_state_dict`` cover both halves.
    """

    def __init__(
        self,
        muon_params: list[nn.Parameter],
        adamw_groups: list[dict[str, Any]],
        *,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float],
    ) -> None:
        self.muon = torch.optim.Muon(muon_params, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw")
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, foreach=True)
        super().__init__([*self.muon.param_groups, *self.adamw.param_groups], defaults={})
        self._share()

    def _share(self) -> None:
        """Point both halves at this optimizer's groups and state (again after ``load_state_dict`` replaced them)."""
        split = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:split], self.param_groups[split:]
        self.muon.state = self.adamw.state = self.state

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One step of both halves (no closure: the trainer computes the loss itself)."""
        if closure is not None:
            raise ValueError("MuonWithAdamW.step takes no closure")
        self.muon.step()
        self.adamw.step()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        self._share()
