"""The optimizers a run can use (``TrainConfig.optimizer``), built by :func:`make_optimizer`.

* ``adamw``: AdamW on every parameter; weight decay on matrices and embeddings
  only (:func:`nrecur.train.weights.is_decayed`).
* ``muon``: Muon (:class:`Muon`, ``torch.optim.Muon``'s algorithm: Nesterov momentum
  0.95, then the update orthogonalized by five Newton–Schulz iterations) on the weight matrices
  inside the transformer blocks — attention's ``qkv`` (one fused matrix) and
  ``out``, the MLP's ``fc_in`` and ``fc_out`` — and AdamW on everything else
  (embeddings, unembedding, biases, norm scales), as one optimizer. Muon's
  step is scaled as in Moonshot's "Muon is Scalable for LLM Training"
  (``adjust_lr_fn = "match_rms_adamw"``: the orthogonalized update times
  0.2·√max(rows, cols), the RMS of a typical AdamW update), so one ``lr`` and
  ``weight_decay`` serve both halves and the schedule scales both. The
  Newton–Schulz iterations run in bfloat16 where the hardware has fast
  bfloat16 matrix products (CUDA) and in float32 on CPUs, where bfloat16 matrix
  products are emulated and many times slower
  (:func:`newton_schulz_dtype`; ``benchmarks/bench_step_limit.py`` times both).

Both are ordinary ``torch.optim.Optimizer`` objects: the trainer sets every
group's ``lr`` each step, and checkpoints save and restore their state through
``state_dict`` (one state for both halves of ``muon``).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import nn

from nrecur.model import GPT
from nrecur.train.config import TrainConfig
from nrecur.train.weights import is_decayed

__all__ = ["OPTIMIZERS", "Muon", "MuonWithAdamW", "make_optimizer", "muon_parameters", "newton_schulz", "newton_schulz_dtype"]


def make_optimizer(model: GPT, train: TrainConfig) -> torch.optim.Optimizer:
    """The optimizer ``train.optimizer`` names (:data:`OPTIMIZERS`), over ``model``'s parameters."""
    return OPTIMIZERS[train.optimizer](model, train)


def _adamw(model: GPT, train: TrainConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(_decay_groups(list(model.parameters()), train.weight_decay), lr=train.lr, betas=train.betas, foreach=True)


def _muon(model: GPT, train: TrainConfig) -> MuonWithAdamW:
    matrices = muon_parameters(model)
    trained_by_muon = {id(p) for p in matrices}
    rest = [p for p in model.parameters() if id(p) not in trained_by_muon]
    return MuonWithAdamW(
        matrices, _decay_groups(rest, train.weight_decay), lr=train.lr, weight_decay=train.weight_decay, betas=train.betas,
        ns_dtype=newton_schulz_dtype(matrices[0].device) if matrices else torch.float32,
    )  # fmt: skip


OPTIMIZERS: dict[str, Callable[[GPT, TrainConfig], torch.optim.Optimizer]] = {"adamw": _adamw, "muon": _muon}
"""``TrainConfig.optimizer`` → how to build it for a model."""


def _decay_groups(parameters: list[nn.Parameter], weight_decay: float) -> list[dict[str, Any]]:
    return [
        {"params": [p for p in parameters if is_decayed(p)], "weight_decay": weight_decay},
        {"params": [p for p in parameters if not is_decayed(p)], "weight_decay": 0.0},
    ]


def muon_parameters(model: GPT) -> list[nn.Parameter]:
    """The weight matrices of the ``nn.Linear`` layers inside ``model.blocks`` (what Muon trains), in order;
    attention's ``qkv`` is one fused ``[3·n_heads·d_head, d_model]`` matrix, orthogonalized as a whole."""
    return [module.weight for block in model.blocks for module in block.modules() if isinstance(module, nn.Linear)]


def newton_schulz_dtype(device: torch.device | str) -> torch.dtype:
    """The dtype Muon orthogonalizes in on ``device``: bfloat16 on CUDA (fast bfloat16 matrix products),
    float32 elsewhere (CPUs without bfloat16 matrix units emulate it, many times slower than float32)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
"""The quintic Newton–Schulz coefficients of ``torch.optim.Muon`` (Keller Jordan's)."""


def newton_schulz(
    matrix: torch.Tensor, dtype: torch.dtype, steps: int = 5, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, eps: float = 1e-7
) -> torch.Tensor:
    """``matrix [rows, cols]`` → approximately orthogonalized ``[rows, cols]`` in ``dtype`` (singular values
    pushed into roughly 0.7–1.2): ``steps`` quintic Newton–Schulz iterations on the wide orientation, the same
    operations in the same order as ``torch.optim.Muon``'s (so bfloat16 gives its result bit for bit)."""
    a, b, c = coefficients
    x = matrix.to(dtype)
    tall = matrix.size(0) > matrix.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm <= 1
    for _ in range(steps):
        gram = x @ x.T  # [rows, rows] of the wide orientation
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if tall else x


class Muon(torch.optim.Muon):
    """``torch.optim.Muon`` with its Newton–Schulz iterations in ``ns_dtype`` (torch's own: bfloat16).

    Same hyperparameters, groups and state (``momentum_buffer`` per matrix) as ``torch.optim.Muon``, so
    checkpoints of either load into the other; with ``ns_dtype=torch.bfloat16`` it steps bit for bit as torch's.
    """

    def __init__(self, params, *, ns_dtype: torch.dtype = torch.float32, **options: Any) -> None:
        super().__init__(params, **options)
        self.ns_dtype = ns_dtype

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "ns_dtype": self.ns_dtype}

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        if closure is not None:
            raise ValueError("Muon.step takes no closure")
        for group in self.param_groups:
            lr, momentum = float(group["lr"]), group["momentum"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                state = self.state[param]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
                buffer = state["momentum_buffer"]
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = newton_schulz(update, self.ns_dtype, group["ns_steps"], group["ns_coefficients"], group["eps"])
                param.mul_(1 - lr * group["weight_decay"])
                param.add_(update, alpha=-lr * _rms_matching_ratio(group["adjust_lr_fn"], param.shape))


def _rms_matching_ratio(adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's learning-rate multiplier for a ``[rows, cols]`` matrix (``torch.optim.Muon``'s ``adjust_lr_fn``)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on ``muon_params`` and AdamW on ``adamw_groups``, as one optimizer.

    Its ``param_groups`` are Muon's groups then AdamW's (the same dicts, so setting a group's ``lr`` reaches
    the optimizer that uses it) and its ``state`` is the one both write to, so ``state_dict`` and
    ``load_state_dict`` cover both halves. ``weight_decay`` is both halves' default; an AdamW group may set
    its own. Groups cannot be added afterwards (neither half would step them).
    """

    def __init__(
        self,
        muon_params: list[nn.Parameter],
        adamw_groups: list[dict[str, Any]],
        *,
        lr: float,
        weight_decay: float,
        betas: tuple[float, float],
        ns_dtype: torch.dtype = torch.float32,
    ) -> None:
        if not muon_params:
            raise ValueError("Muon needs at least one weight matrix inside the blocks (a model with n_layers >= 1)")
        self.muon = Muon(muon_params, lr=lr, weight_decay=weight_decay, adjust_lr_fn="match_rms_adamw", ns_dtype=ns_dtype)
        self.adamw = torch.optim.AdamW(adamw_groups, lr=lr, betas=betas, weight_decay=weight_decay, foreach=True)
        super().__init__([*self.muon.param_groups, *self.adamw.param_groups], defaults={})
        self._share()

    def _share(self) -> None:
        """Point both halves at this optimizer's groups and state (again whenever ``__setstate__`` replaced them)."""
        split = len(self.muon.param_groups)
        self.muon.param_groups, self.adamw.param_groups = self.param_groups[:split], self.param_groups[split:]
        self.muon.state = self.adamw.state = self.state

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if len(self.param_groups) == len(self.muon.param_groups) + len(self.adamw.param_groups):  # all are in: built
            raise NotImplementedError("MuonWithAdamW cannot take new parameter groups; build a new optimizer")
        super().add_param_group(param_group)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:  # type: ignore[override]
        """One step of both halves (no closure: the trainer computes the loss itself)."""
        if closure is not None:
            raise ValueError("MuonWithAdamW.step takes no closure")
        self.muon.step()
        self.adamw.step()

    def __getstate__(self) -> dict[str, Any]:
        return {**super().__getstate__(), "muon": self.muon, "adamw": self.adamw}

    def __setstate__(self, state: dict[str, Any]) -> None:
        # load_state_dict, copy and pickle all come here with new groups and state: share them again.
        super().__setstate__(state)
        self._share()
