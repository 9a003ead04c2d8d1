"""Configs of a training run: how to optimize (``TrainConfig``) and the whole run (``RunConfig``).

``RunConfig`` holds the task, the model and the training config; its JSON dump
(``config.json`` in every run folder) is enough to reproduce the run.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import pydantic
from pydantic import SerializeAsAny, field_validator, model_validator

from nrecur._config import Config, format_error
from nrecur.architecture import GPTConfig
from nrecur.tasks import NRecurrence, Task, task_from_data
from nrecur.train.interventions import Intervention
from nrecur.train.renames import RENAMED_TRAIN_FIELDS, renamed_fields


class TrainConfig(Config):
    """Optimization, data regime, evaluation, stopping and checkpointing of one run."""

    # --- data regime
    mode: Literal["online", "finite"] = "online"
    """online: fresh sequences every step; finite: a fixed training set of train_size sequences, repeated for many epochs (the grokking setting)."""
    train_size: int = 2048
    """finite mode: number of training sequences (ignored in online mode)."""
    held_out_fraction: float = 0.0
    """Fraction of the task's hidden rules (n-recurrence: (period, target)) kept out of training; evaluation then reports in- and out-of-distribution sequences separately."""

    # --- optimization
    objective: Literal["next_token", "observer"] = "next_token"
    """next_token: cross-entropy with the observed next token (learning from samples only); observer: cross-entropy with the exact observer's predictive (distillation, much less gradient noise)."""
    steps: int = 10_000
    """Maximum number of optimizer steps."""
    batch_size: int = 64
    """Sequences per step (finite mode: capped at train_size, i.e. full batch)."""
    optimizer: Literal["adamw", "muon"] = "adamw"
    """adamw: AdamW on every parameter; muon: Muon on the weight matrices inside the blocks and AdamW on the rest, with Muon's step scaled to AdamW's RMS so that lr and weight_decay serve both (nrecur.train.optimizers)."""
    lr: float = 3e-3
    """Peak learning rate (of both halves with optimizer muon)."""
    betas: tuple[float, float] = (0.9, 0.98)
    """AdamW betas (with optimizer muon: of its AdamW half; Muon's momentum is 0.95, Nesterov)."""
    weight_decay: float = 0.1
    """Decoupled weight decay, applied to matrices and embeddings (not to biases and norm scales)."""
    warmup_steps: int = 100
    """Linear warm-up of the learning rate from lr/warmup_steps to lr."""
    schedule: Literal["constant", "cosine", "linear"] = "cosine"
    """Learning rate after warm-up: constant, or decaying to min_lr_ratio*lr at `steps` (cosine or linear; see decay_steps)."""
    min_lr_ratio: float = 0.1
    """Final learning rate of the cosine and linear schedules, as a fraction of lr."""
    decay_steps: int | None = None
    """Step at which the cosine or linear decay ends (the learning rate then stays at min_lr_ratio*lr); None: steps. Extending a run with --resume RUN --steps N sets it to the run's old steps, so the schedule it has followed does not change."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    grokfast_lambda: float = 0.0
    """Grokfast amplification: g <- g + lambda*EMA(g) between backward and step; 0 disables Grokfast."""
    grokfast_alpha: float = 0.98
    """Grokfast EMA decay: h <- alpha*h + (1-alpha)*g."""

    # --- seeds and device
    init_seed: int = 0
    """Seed of the model's initialization."""
    data_seed: int = 1
    """Seed of the training data (and of which rules are held out)."""
    eval_seed: int = 2
    """Seed of the fixed evaluation set."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where to train: auto picks cuda when available, else cpu."""
    compile: Literal["auto", "on", "off"] = "auto"
    """Compile the training step with torch.compile (inductor, cached across runs): auto where it is measured faster than eager on the device, on always, off never; the next_token objective without interventions only (nrecur.train.compiled)."""

    # --- evaluation, memorization and the KL threshold
    eval_every: int = 250
    """Evaluate against the exact observer every this many steps (and at the start and the end)."""
    eval_size: int = 1024
    """Number of fresh sequences in the fixed evaluation set."""
    kl_threshold: float = 0.01
    """Converged at the threshold: the first evaluation whose mean KL(observer || model) over all positions is <= this (nats/token)."""
    memorization_threshold: float = 0.01
    """Memorization: the first evaluation whose training-data loss is within this of the Bayes loss on the same data (nats/token)."""
    stop_at_threshold: bool = False
    """Stop as soon as the evaluation KL reaches kl_threshold."""
    time_budget: float = 0.0
    """Stop after this many seconds of training (summed over resumes); 0 means no limit."""

    # --- checkpoints
    checkpoint_every: int = 500
    """Save a checkpoint (model, optimizer, RNG state) every this many steps; the previous one is replaced."""
    log_checkpoints: int = 0
    """Also keep this many checkpoints at log-spaced steps (plus step 0), for studying training dynamics."""

    # --- interventions
    interventions: tuple[Intervention, ...] = ()
    """Heads ablated or attention patterns clamped during training, each for its steps [start, end) (and the evaluations at those steps); see nrecur.train.interventions."""

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data):
        # Configs and specs written with the old names (RENAMED_TRAIN_FIELDS) load, with one warning.
        return renamed_fields(data, RENAMED_TRAIN_FIELDS) if isinstance(data, dict) else data

    @field_validator("steps", "batch_size", "train_size", "eval_every", "eval_size", "checkpoint_every")
    @classmethod
    def _positive(cls, value: int, info) -> int:
        if value < 1:
            raise ValueError(f"{info.field_name} must be an integer >= 1, got {value}")
        return value

    @field_validator("decay_steps")
    @classmethod
    def _positive_or_none(cls, value: int | None, info) -> int | None:
        if value is not None and value < 1:
            raise ValueError(f"{info.field_name} must be an integer >= 1 (or None for steps), got {value}")
        return value

    @field_validator("warmup_steps", "log_checkpoints")
    @classmethod
    def _non_negative_int(cls, value: int, info) -> int:
        if value < 0:
            raise ValueError(f"{info.field_name} must be an integer >= 0, got {value}")
        return value

    @field_validator("lr")
    @classmethod
    def _positive_lr(cls, value: float) -> float:
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"lr must be a finite number > 0, got {value}")
        return value

    @field_validator("weight_decay", "grad_clip", "grokfast_lambda", "time_budget", "kl_threshold", "memorization_threshold")
    @classmethod
    def _non_negative(cls, value: float, info) -> float:
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{info.field_name} must be a finite number >= 0, got {value}")
        return value

    @field_validator("betas")
    @classmethod
    def _check_betas(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= beta < 1.0 for beta in value):
            raise ValueError(f"betas must both lie in [0, 1), got {list(value)}")
        return value

    @field_validator("grokfast_alpha", "min_lr_ratio", "held_out_fraction")
    @classmethod
    def _unit_interval(cls, value: float, info) -> float:
        upper_open = info.field_name in ("grokfast_alpha", "held_out_fraction")
        if not (0.0 <= value <= 1.0) or (upper_open and value == 1.0):
            interval = "[0, 1)" if upper_open else "[0, 1]"
            raise ValueError(f"{info.field_name} must lie in {interval}, got {value}")
        return value

    @property
    def sequences_per_step(self) -> int:
        """Sequences in one training step: ``batch_size``, or a smaller finite training set whole."""
        return min(self.batch_size, self.train_size) if self.mode == "finite" else self.batch_size

    def lr_at(self, step: int) -> float:
        """Learning rate of the update that takes the model from ``step`` to ``step + 1``."""
        if step < self.warmup_steps:
            return self.lr * (step + 1) / self.warmup_steps
        if self.schedule == "constant":
            return self.lr
        horizon = self.steps if self.decay_steps is None else self.decay_steps
        progress = min(1.0, (step - self.warmup_steps) / max(1, horizon - self.warmup_steps))
        shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if self.schedule == "cosine" else 1.0 - progress
        return self.lr * (self.min_lr_ratio + (1.0 - self.min_lr_ratio) * shape)


class RunConfig(Config):
    """Everything that defines a run; ``config.json`` of a run folder is its JSON dump."""

    task: SerializeAsAny[Task] = NRecurrence()
    """The task the model is trained on (and evaluated on, against its exact observer): any task kind, named by its `kind`."""
    model: GPTConfig = GPTConfig()
    """The architecture; model.vocab_size must equal task.vocab_size and model.n_ctx is the training context length."""
    train: TrainConfig = TrainConfig()
    """Optimization, data regime, evaluation and checkpointing."""
    init_from: str | None = None
    """Path of a run folder whose latest weights initialize the model (or of one checkpoint file): fine-tuning; None trains from scratch. Stored as an absolute path; the run folder records which checkpoint was used and a fingerprint of its weights (init_from.json)."""

    @field_validator("init_from")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        # Resolved once, when the config is made: a resume from another directory must find the same weights.
        if value is None:
            return None
        if not value.strip():
            raise ValueError("init_from is empty; give a run folder or a checkpoint file")
        return os.path.abspath(os.path.expanduser(value))

    @model_validator(mode="before")
    @classmethod
    def _model_follows_the_task(cls, data):
        # RunConfig(task=Mess3()) without a model: the default model with the task's vocabulary.
        if isinstance(data, dict) and "model" not in data and data.get("task") is not None:
            try:
                vocab_size = task_from_data(data["task"]).vocab_size
            except (ValueError, pydantic.ValidationError):
                return data  # the task's own validation reports it
            return {**data, "model": GPTConfig(vocab_size=vocab_size)}
        return data

    @field_validator("task", mode="before")
    @classmethod
    def _task_of_its_kind(cls, value):
        try:
            return task_from_data(value)
        except pydantic.ValidationError as error:
            raise ValueError(format_error(error)) from None

    @model_validator(mode="after")
    def _check_consistent(self) -> "RunConfig":
        if self.model.vocab_size != self.task.vocab_size:
            raise ValueError(
                f"model.vocab_size ({self.model.vocab_size}) must equal task.vocab_size ({self.task.vocab_size})"
            )
        if self.model.n_ctx < 2:
            raise ValueError(f"model.n_ctx must be >= 2 to have a next token to predict, got {self.model.n_ctx}")
        longest = self.task.max_length
        if longest is not None and self.model.n_ctx + 1 > longest:
            raise ValueError(
                f"model.n_ctx ({self.model.n_ctx}) is too long for {self.task.kind} sequences of {longest} tokens: "
                f"training predicts n_ctx + 1 tokens, so n_ctx must be <= {longest - 1}"
            )
        if self.train.held_out_fraction > 0 and self.task.rules() is None:
            raise ValueError(
                f"train.held_out_fraction must be 0 for task kind {self.task.kind!r}: it has no hidden rules to hold out"
            )
        if self.train.optimizer == "muon" and self.model.n_layers == 0:
            raise ValueError(
                "train.optimizer 'muon' needs model.n_layers >= 1: Muon trains the blocks' weight matrices and a "
                "0-layer model has none; use optimizer 'adamw'"
            )
        for index, intervention in enumerate(self.train.interventions):
            self._check_intervention(index, intervention)
        return self

    def _check_intervention(self, index: int, intervention: Intervention) -> None:
        where = f"train.interventions[{index}] ({intervention.describe()})"
        if intervention.layer >= self.model.n_layers:
            layers = f"0..{self.model.n_layers - 1}" if self.model.n_layers else "none"
            raise ValueError(f"{where}: layer {intervention.layer} is out of range; the model has layers {layers}")
        if intervention.head >= self.model.n_heads:
            raise ValueError(f"{where}: head {intervention.head} is out of range; the model has heads 0..{self.model.n_heads - 1}")
        if intervention.period is not None:
            periods = getattr(self.task, "periods", None)
            if periods is None:
                raise ValueError(f"{where}: task kind {self.task.kind!r} has no periods to clamp a period pattern to")
            if intervention.period not in periods:
                raise ValueError(f"{where}: period {intervention.period} is not one of the task's periods {list(periods)}")

    @property
    def length(self) -> int:
        """Training and evaluation sequence length: the model's context ``n_ctx``."""
        return self.model.n_ctx
