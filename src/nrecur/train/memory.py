"""The memory a training run needs, estimated from its config before anything is allocated.

A run whose model, optimizer state, activations and evaluation sets cannot fit
is refused at once with the estimate, instead of being killed by the kernel
halfway through allocating (and leaving a run folder that can never finish).
The estimate counts float32 weights, gradients, AdamW's two moments and
Grokfast's average; the activations one training step keeps for the backward
pass (attention patterns included, as the non-fused path stores them), or those
of one evaluation forward pass (up to :data:`EVAL_CHUNK` sequences at once,
without gradients) where that is more; the evaluation sets with the observer's
float64 answers; a finite training set; and the transient copies a checkpoint
save makes. It is a lower bound in spirit (allocator overheads are not
counted), so a refused run would not have fit. Every way a run trains (train,
resume, an ensemble, a sweep's trial, the main job) checks it before anything
is allocated or written.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from nrecur._memory import available_memory, format_bytes
from nrecur.train.config import RunConfig

FLOAT32 = 4
FLOAT64 = 8

EVAL_CHUNK = 1024
"""Sequences per evaluation forward pass (:func:`nrecur.train.evaluate.evaluate`'s ``chunk``)."""

EVAL_LIVE_TENSORS = 5
"""``[sequences, pos, d_model]`` tensors alive at once at the peak of a forward pass without gradients: the
residual stream, a normalized copy, a sublayer's output, their sum and the kernels' scratch
(``tests/test_faults.py`` checks the estimate against a measured peak)."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run needs, by what holds them."""

    parameters: int
    """Number of model scalars."""
    weights: int
    optimizer: int
    """Gradients, AdamW moments and the Grokfast average."""
    activations: int
    """One training step's forward and backward pass."""
    inference: int
    """One evaluation forward pass (no gradients; not at the same time as a training step)."""
    evaluation: int
    """Evaluation sets with the observer's answers, and a finite training set."""
    checkpoint: int
    """Transient copies while a checkpoint is written and read back (host memory)."""

    @property
    def peak_activations(self) -> int:
        """The larger of a training step's and an evaluation pass's activations."""
        return max(self.activations, self.inference)

    @property
    def device_bytes(self) -> int:
        """On the training device: weights, optimizer state and activations."""
        return self.weights + self.optimizer + self.peak_activations

    @property
    def host_bytes(self) -> int:
        """On the CPU when training on a GPU: evaluation, checkpoint copies and the weights at initialization."""
        return self.evaluation + self.checkpoint + self.weights

    @property
    def total(self) -> int:
        return self.weights + self.optimizer + self.peak_activations + self.evaluation + self.checkpoint

    def describe(self) -> str:
        activations = f"activations {format_bytes(self.activations)}"
        if self.inference > self.activations:
            activations = f"activations {format_bytes(self.inference)} (an evaluation pass)"
        return (
            f"weights {format_bytes(self.weights)}, gradients and optimizer state {format_bytes(self.optimizer)}, "
            f"{activations}, evaluation and data {format_bytes(self.evaluation)}, "
            f"checkpoint copies {format_bytes(self.checkpoint)}"
        )


def estimate_training_memory(config: RunConfig) -> MemoryEstimate:
    """Estimate the memory ``config`` needs (see the module docstring)."""
    model, train = config.model, config.train
    params = model.n_params
    weights = FLOAT32 * params
    # Gradients and AdamW's two moments (Muon keeps one buffer for its matrices: this bounds it), Grokfast's EMA.
    optimizer = FLOAT32 * params * (3 + (1 if train.grokfast_lambda > 0 else 0))
    batch = train.sequences_per_step
    pos, d, a, m, v, heads = model.n_ctx, model.d_model, model.d_attn, model.d_mlp, model.vocab_size, model.n_heads
    per_layer = batch * pos * (6 * d + 4 * a + 2 * m) + batch * heads * pos * pos
    activations = FLOAT32 * (model.n_layers * per_layer + batch * pos * (2 * d + 3 * v))
    views = len(config.task.evaluation_views())
    rows = train.eval_size * views + (train.train_size if train.mode == "finite" else 0)
    evaluation = rows * (pos + 1) * (FLOAT64 * 4 * v + 64)
    chunk = min(EVAL_CHUNK, max(train.eval_size, train.train_size if train.mode == "finite" else 0))
    inference = FLOAT32 * chunk * pos * (EVAL_LIVE_TENSORS * d + 2 * a + 2 * m + heads * pos + 3 * v)
    checkpoint = 2 * (weights + FLOAT32 * params * (2 + (1 if train.grokfast_lambda > 0 else 0)))
    return MemoryEstimate(params, weights, optimizer, activations, inference, evaluation, checkpoint)


def check_training_memory(config: RunConfig, device: torch.device) -> MemoryEstimate:
    """Refuse (ValueError) a run whose estimate exceeds the memory available; returns the estimate."""
    estimate = estimate_training_memory(config)
    needs = [(estimate.total if device.type == "cpu" else estimate.host_bytes, available_memory(), "memory")]
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        needs.append((estimate.device_bytes, free, f"GPU memory on {device}"))
    for need, available, where in needs:
        if available is not None and need > available:
            raise ValueError(
                f"this run needs about {format_bytes(need)} of {where} ({estimate.parameters:,} parameters: "
                f"{estimate.describe()}) but only {format_bytes(available)} is available; make it smaller "
                "(--d-model, --n-layers, --d-mlp, --n-heads, --d-head, --batch-size, --n-ctx, --eval-size)"
            )
    return estimate
