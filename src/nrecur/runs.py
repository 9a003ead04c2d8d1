"""Open a trained run: ``load_run("runs/quick-det")`` → model, task, config, metrics.

The model is rebuilt from ``config.json`` and its weights are read from a
safetensors checkpoint (the latest intact one unless you ask for a step, with a
warning naming a damaged newer one); nothing is unpickled, and the checkpoint's
checksums are verified. Loading never waits for a training writing the run and
never fails because of it: a checkpoint replaced while it is read is read again
or passed over for the newest one there is. ``summary.json`` is not needed to use a run: a
corrupt one is reported with a warning and left out. ``run.evaluate()`` scores it against the exact observer, on its own
task or on another one with the same vocabulary.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from nrecur.model import GPT
from nrecur.tasks import Task
from nrecur.train.checkpoint import checkpoint_step, load_model_tensors, load_newest, load_weights_into
from nrecur.train.config import RunConfig
from nrecur.train.data import held_out_rules
from nrecur.train.evaluate import Evaluation, build_eval_sets, evaluate
from nrecur.train.folder import RunFolder
from nrecur.train.loop import build_model


@dataclass(frozen=True)
class Run:
    """A run folder, loaded. ``model(tokens [batch, pos]) -> logits [batch, pos, vocab]`` (eval mode)."""

    path: Path
    config: RunConfig
    model: GPT
    step: int
    """Training step of the loaded weights."""
    checkpoint: Path
    metrics: list[dict]
    """One dict per evaluation, from ``metrics.jsonl`` (``step``, ``eval/kl``, ``train/loss``, …)."""
    summary: dict | None
    """``summary.json``: how the run ended (None while it has not)."""

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def task(self) -> Task:
        """The task the model was trained on (its config; any kind)."""
        return self.config.task

    @property
    def checkpoint_steps(self) -> list[int]:
        """Steps with a checkpoint on disk (load one with ``load_run(path, step=...)``)."""
        return [step for step, _ in self.folder.checkpoints()]

    def metric(self, name: str) -> tuple[list[int], list[float]]:
        """``(steps, values)`` of one metric over training, e.g. ``run.metric("eval/kl")``."""
        rows = [(row["step"], row[name]) for row in self.metrics if name in row]
        return [s for s, _ in rows], [v for _, v in rows]

    def evaluate(self, task: Task | None = None, size: int | None = None, seed: int | None = None) -> dict[str, Evaluation]:
        """Score the model against the exact observer of ``task`` (default: its own) on fresh sequences.

        Returns one evaluation per set of the task's evaluation views (``eval`` first), plus
        ``in_dist`` / ``out_dist`` when the run held rules out and ``task`` is its own.
        Defaults for ``size`` and ``seed``: the run's ``eval_size`` and ``eval_seed``.
        """
        train = self.config.train
        own = task is None or task == self.config.task
        task = self.config.task if task is None else task
        if task.vocab_size != self.config.model.vocab_size:
            raise ValueError(
                f"the task has vocab_size {task.vocab_size} but the model was trained with {self.config.model.vocab_size}"
            )
        task.check_length(self.config.length)
        held_out = held_out_rules(task, train.held_out_fraction, train.data_seed) if own else frozenset()
        sets = build_eval_sets(
            task, self.config.length, size or train.eval_size, train.eval_seed if seed is None else seed, held_out
        )
        return {name: evaluate(self.model, eval_set) for name, eval_set in sets.items()}


def _weights_and_step(path: Path) -> tuple[dict[str, torch.Tensor], int]:
    return load_model_tensors(path), checkpoint_step(path)


def _load_latest(folder: RunFolder, tries: int = 10) -> tuple[Path, tuple[dict[str, torch.Tensor], int]]:
    """The newest intact checkpoint's weights and step; listed again when every one listed was replaced while it
    was read (a training that saves every step)."""
    for attempt in range(tries):
        found = [path for _, path in folder.checkpoints()]
        if not found:
            raise FileNotFoundError(f"{folder.path} has no checkpoint yet")
        try:
            return load_newest(found, _weights_and_step)
        except FileNotFoundError:
            if attempt == tries - 1:
                raise
    raise AssertionError  # pragma: no cover - the loop returns or raises


def load_run(path: str | os.PathLike, step: int | None = None, device: str | torch.device = "cpu") -> Run:
    """Load the run folder ``path`` with the weights of checkpoint ``step`` (default: the latest)."""
    folder = RunFolder(path)
    config = folder.read_config()
    if step is None:
        checkpoint, (tensors, loaded_step) = _load_latest(folder)
    else:
        checkpoint = folder.checkpoint_path(step)
        if not checkpoint.exists():
            steps = [s for s, _ in folder.checkpoints()]
            raise FileNotFoundError(f"{folder.path} has no checkpoint at step {step}; it has {steps}")
        tensors, loaded_step = _weights_and_step(checkpoint)
    model = build_model(config, device)
    load_weights_into(model, tensors, f"{checkpoint} does not fit the model of {folder.config_file}")
    model.eval()
    try:
        summary = folder.read_summary()
    except ValueError as error:  # how the run ended is not needed to use its weights
        warnings.warn(f"{error}; ignored", stacklevel=2)
        summary = None
    return Run(
        path=folder.path,
        config=config,
        model=model,
        step=loaded_step,
        checkpoint=checkpoint,
        metrics=folder.read_metrics(),
        summary=summary,
    )
