"""Named setups for ``nrecur train --preset`` and ``nrecur run``.

An n-recurrence preset is the main job at one scale: a deterministic run
trained until it reaches its KL threshold, then the stochastic task (``p_noise = p_transition =
0.2/n``, i.e. ``1/(5n)``) trained from scratch and fine-tuned from the
deterministic model (``--stochastic``, ``--finetune``).

* ``quick``: vocab 8, periods 2–5, context 32; sized for a 2-core CPU (Muon).
* ``quick-adamw``: the same model and task with AdamW; the studies in ``examples/`` run with it.
* ``proposal``: the proposal's scale, vocab 16, periods 2–8, context 64; for a GPU.
* ``tiny``: a few seconds end to end; for tests and smoke checks (it does not reach its KL threshold).

The other task kinds have one run each:

* ``mess3``: Mess3(0.05, 0.85), 4 layers, d_model 64, context 10 — the
  belief-geometry model of SPEC §2.5 (``nrecur train --task mess3``).
* ``rrxor``: RRXOR(0.5, 0.5) with the same model.
* ``modular-quick``: in-context modular arithmetic sized for a 2-core CPU.
* ``modular-paper``: p = 29, 32 examples per sequence (He et al.'s scale); for a GPU.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Callable, Literal

from nrecur.architecture import GPTConfig
from nrecur.tasks import Mess3, NRecurrence, RRXOR
from nrecur.tasks.modular import ModularICL
from nrecur.train.config import RunConfig, TrainConfig

STOCHASTIC = "0.2/n"
"""``p_noise = p_transition = 1/(5n)``, the proposal's tentative stochastic setting."""


@dataclass(frozen=True)
class Preset:
    """A named run config; n-recurrence presets add the stochastic and fine-tuning runs of the main job."""

    name: str
    description: str
    run: RunConfig
    """The preset's run (n-recurrence: the deterministic task, trained until eval KL <= its kl_threshold)."""
    stochastic: RunConfig | None = None
    """n-recurrence: the stochastic task from scratch."""
    finetune: RunConfig | None = None
    """n-recurrence: the stochastic task starting from the deterministic run's weights (``init_from`` is
    filled in by ``nrecur run``, or by ``--init-from`` of ``nrecur train``)."""
    mess3: RunConfig | None = None
    """n-recurrence presets: the Mess3 belief-geometry model the main job trains alongside, at this scale."""
    analysis_caps: Mapping[str, int] = field(default_factory=dict)
    """Analysis option → the most the main job's analyses of this preset's runs use, beyond the job's own caps
    (:data:`nrecur.jobs.worker.JOB_CAPS`): smaller models, fewer sequences, so that the main job ends in minutes.
    Each result and report states the numbers used."""

    @property
    def deterministic(self) -> RunConfig:
        """n-recurrence presets: the deterministic run (same as :attr:`run`)."""
        return self.run

    @property
    def kind(self) -> str:
        """The task kind of the preset's run."""
        return self.run.task.kind

    def variant(self, which: Literal["run", "stochastic", "finetune", "mess3"]) -> RunConfig:
        """The preset's run or one of its main-job companions (``stochastic``, ``finetune``, ``mess3``); an error
        naming the preset when it has no such variant."""
        config = getattr(self, which)
        if config is None:
            raise ValueError(f"preset {self.name!r} has no {which} variant (only the n-recurrence presets do)")
        return config


def _stochastic(task: NRecurrence) -> NRecurrence:
    return task.model_copy(update={"p_noise": STOCHASTIC, "p_transition": STOCHASTIC})


def quick() -> Preset:
    # Tuned on a 2-core CPU: 8 narrow heads learn faster per step than 4 wide ones; Muon on the blocks'
    # matrices needs ~2.4x fewer steps than AdamW (1,750 against 4,250 to KL <= 0.01), and a cosine decay
    # to 2% of the peak learning rate is what brings KL from ~0.03 down to <= 0.01: at the schedule's end, step
    # 1,750, for seeds 0-4 (a run short of it can go on: nrecur train --resume RUN --steps N).
    det_train = TrainConfig(
        optimizer="muon", steps=1750, batch_size=64, lr=5e-3, weight_decay=0.1, warmup_steps=100,
        schedule="cosine", min_lr_ratio=0.02, eval_every=250, kl_threshold=0.01, stop_at_threshold=True,
        time_budget=240.0, log_checkpoints=8,
    )  # fmt: skip
    # The stochastic task from scratch reaches KL <= 0.02 at step 4,000 with 5e-3 (CPU, seed 0, one thread beside
    # another; 3,750 when its worker ran on two). A lower peak
    # learning rate keeps what the deterministic model knows: 1e-3 fine-tunes to it at step 3,000, 2e-3 at 3,250.
    preset = _quick_preset(
        "quick", "vocab 8, periods 2-5, context 32, 2 layers d_model 64, Muon: about a minute on a 2-core CPU",
        det_train, stochastic_steps=5000,
    )  # fmt: skip
    # Fewer sequences per analysis than a job's own cap: the quick main job is to end in minutes on 2 cores.
    return replace(preset, analysis_caps={"n_sequences": 256, "decode_sequences": 256})


def quick_adamw() -> Preset:
    """``quick``'s model and task with AdamW (5,000 steps): the recipe the studies in ``examples/studies`` run with."""
    det_train = TrainConfig(
        steps=5000, batch_size=64, lr=3e-3, weight_decay=0.1, warmup_steps=100, schedule="cosine", min_lr_ratio=0.02,
        eval_every=250, kl_threshold=0.01, stop_at_threshold=True, time_budget=240.0, log_checkpoints=8,
    )  # fmt: skip
    return _quick_preset(
        "quick-adamw", "the quick preset with AdamW (the studies' recipe): vocab 8, periods 2-5, context 32, 2 layers d_model 64",
        det_train, stochastic_steps=12000,
    )  # fmt: skip


def _quick_preset(name: str, description: str, det_train: TrainConfig, stochastic_steps: int) -> Preset:
    """The quick task and model with ``det_train``; the stochastic runs copy it (fine-tuning: lr 1e-3, 20 warm-up steps)."""
    task = NRecurrence(vocab_size=8, periods=(2, 3, 4, 5))
    model = GPTConfig(vocab_size=8, n_ctx=32, d_model=64, n_layers=2, n_heads=8, d_head=8, d_mlp=256)
    stoch_train = det_train.model_copy(update={"steps": stochastic_steps, "kl_threshold": 0.02, "time_budget": 600.0})
    stochastic = RunConfig(task=_stochastic(task), model=model, train=stoch_train)
    return Preset(
        name=name,
        description=description,
        run=RunConfig(task=task, model=model, train=det_train),
        stochastic=stochastic,
        finetune=stochastic.model_copy(update={"train": stoch_train.model_copy(update={"lr": 1e-3, "warmup_steps": 20})}),
        mess3=mess3_preset().run,
    )


def proposal() -> Preset:
    task = NRecurrence(vocab_size=16, periods=tuple(range(2, 9)))
    model = GPTConfig(vocab_size=16, n_ctx=64, d_model=128, n_layers=4, n_heads=8, d_head=16, d_mlp=512)
    det_train = TrainConfig(
        steps=30000, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=500, schedule="cosine",
        eval_every=500, kl_threshold=0.01, stop_at_threshold=True, checkpoint_every=1000,
    )  # fmt: skip
    stoch_train = det_train.model_copy(update={"kl_threshold": 0.02})
    stochastic = RunConfig(task=_stochastic(task), model=model, train=stoch_train)
    return Preset(
        name="proposal",
        description="vocab 16, periods 2-8, context 64, 4 layers d_model 128: for a GPU",
        run=RunConfig(task=task, model=model, train=det_train),
        stochastic=stochastic,
        finetune=stochastic.model_copy(update={"train": stoch_train.model_copy(update={"warmup_steps": 50})}),
        mess3=mess3_preset().run,
    )


def tiny() -> Preset:
    task = NRecurrence(vocab_size=4, periods=(2, 3))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
    det_train = TrainConfig(
        steps=40, batch_size=16, lr=3e-3, warmup_steps=5, eval_every=20, eval_size=128, checkpoint_every=20,
        stop_at_threshold=True,
    )  # fmt: skip
    stoch_train = det_train.model_copy(update={"kl_threshold": 0.02})
    stochastic = RunConfig(task=_stochastic(task), model=model, train=stoch_train)
    return Preset(
        name="tiny",
        description="a few seconds end to end; for tests (does not reach its KL threshold)",
        run=RunConfig(task=task, model=model, train=det_train),
        stochastic=stochastic,
        finetune=stochastic,
        mess3=RunConfig(task=Mess3(), model=model.model_copy(update={"vocab_size": 3, "n_ctx": 10}), train=det_train),
        # Seconds of analyses for a model of seconds: few sequences, MLP probes on 256 positions for 30 steps.
        analysis_caps={"n_sequences": 128, "decode_sequences": 128, "mlp_rows": 256, "mlp_steps": 30},
    )


def _hmm_preset(name: str, description: str, task, steps: int, eval_every: int, time_budget: float, kl_threshold: float = 0.005) -> Preset:
    """4 layers, d_model 64, context 10 (the belief-geometry model), trained until KL <= ``kl_threshold``."""
    model = GPTConfig(vocab_size=task.vocab_size, n_ctx=10, d_model=64, n_layers=4, n_heads=4, d_head=16, d_mlp=256)
    train = TrainConfig(
        steps=steps, batch_size=128, lr=3e-3, weight_decay=0.1, warmup_steps=50, schedule="cosine", min_lr_ratio=0.02,
        eval_every=eval_every, kl_threshold=kl_threshold, stop_at_threshold=True, time_budget=time_budget, log_checkpoints=8,
    )  # fmt: skip
    return Preset(name=name, description=description, run=RunConfig(task=task, model=model, train=train))


def mess3_preset() -> Preset:
    return _hmm_preset(
        "mess3", "Mess3(0.05, 0.85), 4 layers d_model 64, context 10: the belief-geometry model (SPEC 2.5)",
        Mess3(x=0.05, a=0.85), steps=1000, eval_every=100, time_budget=180.0, kl_threshold=0.001,
    )  # fmt: skip
    # The cosine schedule over 1,000 steps takes KL to ~0.0006 (at 300 steps, KL 0.004, the belief simplex is
    # decoded with R² 0.990; at 1,000 steps 0.996).


def rrxor_preset() -> Preset:
    return _hmm_preset(
        "rrxor", "RRXOR(0.5, 0.5), 4 layers d_model 64, context 10",
        RRXOR(p1=0.5, p2=0.5), steps=6000, eval_every=200, time_budget=300.0,
    )  # fmt: skip


def modular_quick() -> Preset:
    task = ModularICL(p=7, n_examples=8, n_tasks=16, task_seed=0)
    model = GPTConfig(vocab_size=7, n_ctx=3 * 8 - 1, d_model=64, n_layers=2, n_heads=8, d_head=8, d_mlp=256)
    train = TrainConfig(
        steps=20000, batch_size=128, lr=1e-3, weight_decay=0.1, warmup_steps=200, schedule="cosine", min_lr_ratio=0.05,
        eval_every=250, kl_threshold=0.01, time_budget=600.0,
    )  # fmt: skip
    return Preset(
        name="modular-quick",
        description="in-context modular arithmetic p=7, 8 examples, 16 training tasks, 2 layers d_model 64: a 2-core CPU",
        run=RunConfig(task=task, model=model, train=train),
    )


def modular_paper() -> Preset:
    task = ModularICL(p=29, n_examples=32, n_tasks=256, task_seed=0)
    model = GPTConfig(vocab_size=29, n_ctx=3 * 32 - 1, d_model=256, n_layers=6, n_heads=8, d_head=32, d_mlp=1024)
    train = TrainConfig(
        steps=100_000, batch_size=256, lr=3e-4, weight_decay=0.1, warmup_steps=1000, schedule="cosine",
        eval_every=1000, checkpoint_every=2000, kl_threshold=0.01,
    )  # fmt: skip
    return Preset(
        name="modular-paper",
        description="in-context modular arithmetic at He et al.'s scale (p=29, 32 examples), 6 layers d_model 256: for a GPU",
        run=RunConfig(task=task, model=model, train=train),
    )


PRESETS: dict[str, Callable[[], Preset]] = {
    "quick": quick,
    "quick-adamw": quick_adamw,
    "proposal": proposal,
    "tiny": tiny,
    "mess3": mess3_preset,
    "rrxor": rrxor_preset,
    "modular-quick": modular_quick,
    "modular-paper": modular_paper,
}
"""Preset name → factory."""

STUDY_PRESET = "quick-adamw"
"""The preset the studies (``nrecur minimal-arch``, ``grokking``, ``icl-rate``, ``faster-default``) start from by
default: the AdamW recipe every study in ``examples/studies`` ran with, so their answers reproduce."""
STUDY_PRESET_WHY = "the AdamW recipe the README's studies ran with"
"""Why, for help texts."""

DEFAULT_PRESET_OF_KIND = {"mess3": "mess3", "rrxor": "rrxor", "modular": "modular-quick"}
"""The preset ``nrecur train --task KIND`` starts from when no --preset is given (n-recurrence and hmm: the defaults)."""


def main_job_presets() -> list[str]:
    """The presets ``nrecur run`` takes: those with the stochastic and fine-tuning runs of a main job (n-recurrence)."""
    return [name for name in PRESETS if get_preset(name).stochastic is not None]


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]()
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}") from None
