"""Named setups for ``nrecur train --preset`` and ``nrecur run``.

A preset is the main job at one scale: a deterministic run trained until it
groks, then the stochastic task (``p_noise = p_transition = 0.2/n``, i.e.
``1/(5n)``) trained from scratch and fine-tuned from the deterministic model.

* ``quick``: vocab 8, periods 2–5, context 32; sized for a 2-core CPU.
* ``proposal``: the proposal's scale, vocab 16, periods 2–8, context 64; for a GPU.
* ``tiny``: a few seconds end to end; for tests and smoke checks (it does not grok).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nrecur.model import GPTConfig
from nrecur.tasks import NRecurrence
from nrecur.train.config import RunConfig, TrainConfig

STOCHASTIC = "0.2/n"
"""``p_noise = p_transition = 1/(5n)``, the proposal's tentative stochastic setting."""


@dataclass(frozen=True)
class Preset:
    """The three runs of the main job at one scale (``finetune.init_from`` is filled in by ``nrecur run``)."""

    name: str
    description: str
    deterministic: RunConfig
    """Trained until eval KL <= its kl_threshold (or its step / time limit)."""
    stochastic: RunConfig
    """The stochastic task from scratch."""
    finetune: RunConfig
    """The stochastic task starting from the deterministic run's weights."""


def _stochastic(task: NRecurrence) -> NRecurrence:
    return task.model_copy(update={"p_noise": STOCHASTIC, "p_transition": STOCHASTIC})


def quick() -> Preset:
    task = NRecurrence(vocab_size=8, periods=(2, 3, 4, 5))
    # Tuned on a 2-core CPU: 8 narrow heads learn faster per step than 4 wide ones, and a cosine decay
    # to 2% of the peak learning rate is what brings KL from ~0.03 down to <= 0.01.
    model = GPTConfig(vocab_size=8, n_ctx=32, d_model=64, n_layers=2, n_heads=8, d_head=8, d_mlp=256)
    det_train = TrainConfig(
        steps=5000, batch_size=64, lr=3e-3, weight_decay=0.1, warmup_steps=100, schedule="cosine", min_lr_ratio=0.02,
        eval_every=250, kl_threshold=0.01, stop_when_grokked=True, time_budget=240.0,
    )  # fmt: skip
    stoch_train = det_train.model_copy(update={"steps": 12000, "kl_threshold": 0.02, "time_budget": 600.0})
    stochastic = RunConfig(task=_stochastic(task), model=model, train=stoch_train)
    return Preset(
        name="quick",
        description="vocab 8, periods 2-5, context 32, 2 layers d_model 64: minutes on a 2-core CPU",
        deterministic=RunConfig(task=task, model=model, train=det_train),
        stochastic=stochastic,
        # A lower peak learning rate keeps what the deterministic model knows (3e-3 first undoes much of it).
        finetune=stochastic.model_copy(update={"train": stoch_train.model_copy(update={"lr": 1e-3, "warmup_steps": 20})}),
    )


def proposal() -> Preset:
    task = NRecurrence(vocab_size=16, periods=tuple(range(2, 9)))
    model = GPTConfig(vocab_size=16, n_ctx=64, d_model=128, n_layers=4, n_heads=8, d_head=16, d_mlp=512)
    det_train = TrainConfig(
        steps=30000, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=500, schedule="cosine",
        eval_every=500, kl_threshold=0.01, stop_when_grokked=True, checkpoint_every=1000,
    )  # fmt: skip
    stoch_train = det_train.model_copy(update={"kl_threshold": 0.02})
    stochastic = RunConfig(task=_stochastic(task), model=model, train=stoch_train)
    return Preset(
        name="proposal",
        description="vocab 16, periods 2-8, context 64, 4 layers d_model 128: for a GPU",
        deterministic=RunConfig(task=task, model=model, train=det_train),
        stochastic=stochastic,
        finetune=stochastic.model_copy(update={"train": stoch_train.model_copy(update={"warmup_steps": 50})}),
    )


def tiny() -> Preset:
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
    det_train = TrainConfig(
        steps=40, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=20, eval_size=128, checkpoint_every=20,
        stop_when_grokked=True,
    )  # fmt: skip
    stoch_train = det_train.model_copy(update={"kl_threshold": 0.02})
    stochastic = RunConfig(task=_stochastic(task), model=model, train=stoch_train)
    return Preset(
        name="tiny",
        description="a few seconds end to end; for tests (does not grok)",
        deterministic=RunConfig(task=task, model=model, train=det_train),
        stochastic=stochastic,
        finetune=stochastic,
    )


PRESETS: dict[str, Callable[[], Preset]] = {"quick": quick, "proposal": proposal, "tiny": tiny}
"""Preset name → factory."""


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
