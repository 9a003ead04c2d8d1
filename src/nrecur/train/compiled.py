"""The compiled training step: the loss's forward and backward through ``torch.compile`` (inductor).

``TrainConfig.compile`` says whether a run compiles: ``on``, ``off``, or
``auto``, which compiles only where ``benchmarks/bench_step_limit.py
--compile`` measured the compiled step faster than the eager one, first
compile included (:data:`FASTER_COMPILED`); :func:`compile_choice` returns the
decision with its reason, which the trainer writes to the run's log. A run
compiles only what compiles whole: the ``next_token`` objective without
interventions (hooks on the model would have to be part of the graph); the
rest trains eagerly, and the reason says so.

The compiled artefacts are cached across runs and processes (inductor's FX
graph cache and AOTAutograd's cache) under ``$XDG_CACHE_HOME/nrecur/inductor``
(``~/.cache/...``) unless ``TORCHINDUCTOR_CACHE_DIR`` is set: a second run of
the same model shape skips most of the compile time.

The compiled loss computes the same function as the eager one (to float
rounding: inductor fuses and reorders elementwise work), and a compiled run
resumes exactly: a resumed run compiles the same graphs and continues bit for
bit as an uninterrupted compiled run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import Tensor, nn

from nrecur.tasks import Task
from nrecur.train.config import RunConfig
from nrecur.train.objectives import next_token_loss

__all__ = ["FASTER_COMPILED", "CompileChoice", "cache_directory", "compile_choice", "compiled_loss"]

FASTER_COMPILED: dict[str, bool] = {"cpu": False, "cuda": False}
"""Device type → whether ``auto`` compiles there: where ``bench_step_limit.py --compile`` measured the compiled
quick-preset step faster than eager, its first compile paid back within the preset's steps (CUDA: not measured)."""


@dataclass(frozen=True)
class CompileChoice:
    """Whether a run's training step is compiled, and why (the run's log line)."""

    compiled: bool
    reason: str


def compile_choice(config: RunConfig, device: torch.device) -> CompileChoice:
    """What ``config.train.compile`` means for this run on ``device`` (see the module docstring)."""
    train = config.train
    if train.compile == "off":
        return CompileChoice(False, "eager step (train.compile off)")
    cannot = None
    if train.objective != "next_token":
        cannot = f"the {train.objective} objective computes its targets outside torch"
    elif train.interventions:
        cannot = "interventions put hooks on the model"
    if cannot is not None:
        return CompileChoice(False, f"eager step: {cannot} (train.compile {train.compile})")
    if train.compile == "on":
        return CompileChoice(True, f"compiled step (train.compile on; inductor cache {cache_directory()})")
    if FASTER_COMPILED.get(device.type, False):
        return CompileChoice(True, f"compiled step: measured faster on {device.type} (train.compile auto; inductor cache {cache_directory()})")
    return CompileChoice(False, f"eager step: compiling is not measured faster on {device.type} (train.compile auto; on forces it)")


def cache_directory() -> Path:
    """Where inductor keeps its compiled artefacts: ``TORCHINDUCTOR_CACHE_DIR``, else nrecur's user cache."""
    given = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nrecur" / "inductor"


class _Unchecked(nn.Module):
    """``model`` without the token range check (a data-dependent branch compile would break the graph at; the
    trainer's batches come from the task, in range by construction)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens, check=False)


def compiled_loss(model: nn.Module, task: Task) -> Callable[[Tensor], Tensor]:
    """``tokens [batch, pos + 1]`` → the ``next_token`` loss of ``model``, compiled (forward and backward); its
    artefacts cached in :func:`cache_directory`."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_directory()))
    unchecked = _Unchecked(model)

    def loss(tokens: Tensor) -> Tensor:
        return next_token_loss(unchecked, tokens, task)

    return torch.compile(loss, dynamic=False)
