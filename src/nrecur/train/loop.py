"""The training loop: one optimizer step at a time, everything else in callbacks.

:class:`Trainer` owns the model, the optimizer (AdamW or Muon,
:mod:`nrecur.train.optimizers`; warm-up and schedule from
:class:`~nrecur.train.config.TrainConfig`), optional Grokfast, and the
data source. Evaluation, logging, checkpoints, the progress bar and stopping
rules are :class:`Callback` objects (:mod:`nrecur.train.callbacks`): they see every
step (``on_step``), every batch of metrics (``on_log``) and the end, may ask
the trainer to stop, and may keep state that goes into checkpoints.

Exact resumption: every batch is a function of ``(data_seed, step)``, the
learning rate a function of the step, and a checkpoint holds the weights, the
optimizer and Grokfast state, the RNG state and each callback's state, so a
restored trainer continues bit for bit (on CPU; CUDA kernels may not be
deterministic).

Interrupts: while :meth:`Trainer.fit` runs, SIGINT (Ctrl-C) and SIGTERM let
the step under way finish, then every callback's ``on_interrupt`` runs (the
checkpointer writes the state of that step, like a periodic checkpoint) and
:class:`TrainingInterrupted` is raised; resuming from that checkpoint ends with
the weights an uninterrupted run would have. A second signal stops at once. A
signal the process ignores (a sweep's workers ignore SIGINT) stays ignored.
"""

from __future__ import annotations

import contextlib
import math
import shlex
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from nrecur._log import logger
from nrecur.model import GPT
from nrecur.train.checkpoint import (
    Checkpoint,
    CheckpointError,
    checkpoint_step,
    load_model_tensors,
    load_optimizer_tensors,
    load_weights_into,
    restore_rng,
    save_checkpoint,
    tensor_digest,
)
from nrecur.train.compiled import compile_choice, compiled_loss
from nrecur.train.config import RunConfig, TrainConfig
from nrecur.train.data import held_out_rules, make_data
from nrecur.train.evaluate import Evaluation, Grokking
from nrecur.train.folder import InitSource, RunFolder
from nrecur.train.grokfast import GrokfastEMA
from nrecur.train.interventions import intervention_hooks
from nrecur.train.memory import check_training_memory
from nrecur.train.objectives import OBJECTIVES
from nrecur.train.optimizers import make_optimizer
from nrecur.train.renames import renamed_stop_reason

class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the run stopped without saving the broken state."""


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped at a signal (SIGINT or SIGTERM) after a whole step; with a run folder, a checkpoint of
    that step was written, and ``resume(run_dir)`` continues from it exactly."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path | None, run_dir: Path | None) -> None:
        self.signal_name = signal_name
        self.step = step
        self.checkpoint = checkpoint
        self.run_dir = run_dir
        self.done = f"training stopped after step {step}" + (f", checkpoint {checkpoint}" if checkpoint is not None else "")
        """What was kept, in words."""
        if checkpoint is not None:
            saved = f"checkpoint {checkpoint}; continue it: nrecur train --resume {shlex.quote(str(run_dir))} (Python: nrecur.resume)"
        else:
            saved = "no run folder, nothing saved"
        super().__init__(f"{signal_name}: training stopped after step {step}; {saved}")

    @property
    def exit_code(self) -> int:
        """The shell's code for a process ended by this signal: 130 for SIGINT, 143 for SIGTERM."""
        return 128 + int(getattr(signal, self.signal_name, signal.SIGINT))



@dataclass(frozen=True)
class StepInfo:
    """What one optimizer step did."""

    step: int
    """Steps completed, this one included."""
    loss: float
    """Training loss of this step's batch (nats/token; see ``TrainConfig.objective``)."""
    lr: float
    grad_norm: float
    """Global gradient norm before clipping (after Grokfast)."""


class Callback:
    """What the trainer calls at the start, after every step, with every batch of metrics and at the end;
    every hook does nothing here. The callbacks themselves live in :mod:`nrecur.train.callbacks`."""

    def on_start(self, trainer: Trainer) -> None: ...

    def on_step(self, trainer: Trainer, info: StepInfo) -> None: ...

    def on_log(self, trainer: Trainer, step: int, metrics: dict) -> None: ...

    def on_end(self, trainer: Trainer) -> None: ...

    def on_abort(self, trainer: Trainer, error: NonFiniteLossError) -> None: ...

    def on_interrupt(self, trainer: Trainer) -> None:
        """A signal stopped training after step ``trainer.step`` (no ``on_end`` follows)."""

    def state_dict(self) -> dict:
        """JSON-serializable state saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None: ...


@dataclass(frozen=True)
class TrainResult:
    """How a run ended."""

    steps: int
    seconds: float
    """Training time, summed over resumes."""
    stop_reason: str
    """``"steps"``, ``"threshold"`` (the KL threshold, with ``stop_at_threshold``), ``"time budget"``, or another callback's reason."""
    evaluations: dict[str, Evaluation]
    """The last evaluation of each set (``eval``, and ``train`` / ``in_dist`` / ``out_dist`` when they exist)."""
    grokking: Grokking | None
    run_dir: Path | None = None
    time_budget: float = 0.0
    """The run's ``train.time_budget`` (seconds of training; 0: none)."""


def why_stopped(result: TrainResult) -> str:
    """How the run ended, in words: ``ran all its steps``, ``stopped at its time budget of 240 s``, …"""
    reason = result.stop_reason
    if reason == "time budget":
        budget = getattr(result, "time_budget", 0.0)
        return f"stopped at its time budget of {budget:g} s" if budget else "stopped at its time budget"
    return {"steps": "ran all its steps", "threshold": "reached the KL threshold"}.get(reason, f"stopped ({reason})")


def continue_command(result: TrainResult) -> str | None:
    """The command that continues a run that stopped short: at its time budget, or at its last step before the
    KL threshold (None when it reached it, or has no run folder)."""
    if result.run_dir is None:
        return None
    run = shlex.quote(str(result.run_dir))
    if result.stop_reason == "time budget":
        return f"nrecur train --resume {run} --time-budget S (S > {result.seconds:.0f}, or 0 for no limit)"
    if result.stop_reason == "steps" and result.grokking is not None and result.grokking.threshold_step is None:
        return f"nrecur train --resume {run} --steps N (N > {result.steps})"
    return None


def resolve_device(device: str) -> torch.device:
    """``auto`` → cuda when available else cpu; asking for cuda without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was asked for but torch sees no CUDA device; use --device cpu or auto")
    return torch.device(device)


def build_model(config: RunConfig, device: torch.device | str = "cpu") -> GPT:
    """A freshly initialized model (seed ``train.init_seed``; the global RNG is left as it was)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.train.init_seed)
        model = GPT(config.model)
    return model.to(device)


def init_weights_from(model: nn.Module, source: str | Path, expected: InitSource | None = None) -> InitSource:
    """Load the weights of a run folder's latest checkpoint (or of one checkpoint file) into ``model``.

    Returns where they came from and their fingerprint. ``expected``: the source recorded when the run
    first started; its checkpoint file is read while it exists, and other weights are refused.
    Raises ValueError naming the architecture settings and tensors that differ when the shapes do not fit.
    """
    source = Path(source)
    if expected is not None and Path(expected.checkpoint).is_file():
        path: Path | None = Path(expected.checkpoint)
    else:
        path = RunFolder(source).latest_checkpoint() if source.is_dir() else source
    if path is None or not path.exists():
        raise FileNotFoundError(f"cannot initialize from {source}: no checkpoint there")
    try:
        tensors = load_model_tensors(path)
        step = checkpoint_step(path)
    except CheckpointError as error:
        raise CheckpointError(None, f"cannot initialize from {source}: {'it' if path == source else error.path} {error.problem}") from None
    fingerprint = tensor_digest(tensors)
    if expected is not None and fingerprint != expected.fingerprint:
        raise CheckpointError(
            None,
            f"cannot initialize from {source}: this run started from {expected.checkpoint} (step {expected.step}, "
            f"weights {expected.fingerprint[:19]}), but {path} (step {step}) now holds other weights "
            f"({fingerprint[:19]}); put the original weights back, or start this run over with --overwrite"
        )
    try:
        load_weights_into(model, tensors, f"cannot initialize from {source}")
    except CheckpointError as error:
        folder = RunFolder(source if source.is_dir() else source.parent.parent)
        own = getattr(model, "config", None)
        if folder.is_run() and own is not None:
            theirs = folder.read_config().model
            differ = [
                f"{name} {getattr(theirs, name)} there, {getattr(own, name)} here"
                for name in type(own).model_fields
                if getattr(theirs, name) != getattr(own, name)
            ]
            if differ:
                raise CheckpointError(None, f"cannot initialize from {source}: the models differ ({'; '.join(differ)}). {error}") from None
        raise
    return InitSource(source=str(source), checkpoint=str(path.absolute()), step=step, fingerprint=fingerprint)


class Trainer:
    """Trains ``GPT(config.model)`` on ``config.task``; see the module docstring."""

    def __init__(
        self,
        config: RunConfig,
        callbacks: Sequence[Callback] = (),
        run_dir: str | Path | None = None,
        load_init_from: bool = True,
        expected_init: InitSource | None = None,
    ) -> None:
        """``load_init_from=False`` skips ``config.init_from`` (when a checkpoint will be restored anyway);
        ``expected_init``: the weights a resumed fine-tune started from (others are refused).

        Nothing is allocated before the memory the run needs has been estimated and found available.
        """
        self.config = config
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.device = resolve_device(config.train.device)
        config.task.check_length(config.length)
        check_training_memory(config, self.device)
        self.model = build_model(config, self.device)
        self.init_source: InitSource | None = None
        """Where the initial weights came from (``config.init_from`` loaded), else None."""
        if config.init_from is not None and load_init_from:
            self.init_source = init_weights_from(self.model, config.init_from, expected_init)
        self.optimizer = make_optimizer(self.model, config.train)
        self.compile_choice = compile_choice(config, self.device)
        """Whether the training step is compiled, and why (:mod:`nrecur.train.compiled`)."""
        self._compiled_loss = compiled_loss(self.model, config.task) if self.compile_choice.compiled else None
        train = config.train
        self.grokfast = GrokfastEMA(self.model, train.grokfast_alpha, train.grokfast_lambda) if train.grokfast_lambda > 0 else None
        self.held_out = held_out_rules(config.task, train.held_out_fraction, train.data_seed)
        # One token more than the context: the model sees n_ctx tokens and predicts the next of each,
        # the last position included (the evaluation scores it too).
        self.data = make_data(config.task, config.length + 1, train, self.held_out)
        self.callbacks: list[Callback] = list(callbacks)
        self.step = 0
        self.seconds = 0.0
        self.stop_reason: str | None = None
        self.last_checkpoint: Path | None = None
        self.evaluations: dict[str, Evaluation] = {}
        """Latest evaluation of each set (filled by the Evaluator callback)."""
        self.grokking: Grokking | None = None
        """Memorization and threshold steps (filled by the Evaluator callback)."""
        self._clock: float | None = None
        self._signal: str | None = None

    # --- the loop

    def fit(self) -> TrainResult:
        """Train until ``steps``, or until a callback asks to stop; returns how it ended. Raises
        :class:`TrainingInterrupted` after a SIGINT or SIGTERM (see the module docstring)."""
        self._clock = time.perf_counter() - self.seconds
        with self._stopping_at_signals():
            for callback in self.callbacks:
                callback.on_start(self)
            while self.step < self.config.train.steps and self.stop_reason is None and self._signal is None:
                info = self.train_step()
                for callback in self.callbacks:
                    callback.on_step(self, info)
            if self._signal is not None:
                self.interrupted()
        if self.stop_reason is None:
            self.stop_reason = "steps"
        self.seconds = self.elapsed()
        for callback in self.callbacks:
            callback.on_end(self)
        return self.result()

    def train_step(self) -> StepInfo:
        """One optimizer step on batch ``self.step``; raises :class:`NonFiniteLossError` on a NaN/inf loss."""
        train = self.config.train
        tokens = torch.from_numpy(np.ascontiguousarray(self.data.batch(self.step))).to(self.device)  # [batch, pos + 1]
        with self.interventions():
            if self._compiled_loss is not None:
                loss = self._compiled_loss(tokens)
            else:
                loss = OBJECTIVES[train.objective](self.model, tokens, self.config.task)
        loss_value = float(loss.detach())
        if not math.isfinite(loss_value):
            self.fail(loss_value)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grokfast is not None:
            self.grokfast.filter_gradients()
        max_norm = train.grad_clip if train.grad_clip > 0 else math.inf
        grad_norm = float(nn.utils.clip_grad_norm_(self.model.parameters(), max_norm, foreach=True))
        lr = train.lr_at(self.step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        self.step += 1
        return StepInfo(step=self.step, loss=loss_value, lr=lr, grad_norm=grad_norm)

    @contextlib.contextmanager
    def interventions(self, step: int | None = None) -> Iterator[None]:
        """Forward passes inside this block get the config's interventions active at ``step`` (default: now)."""
        hooks = intervention_hooks(self.config.train.interventions, self.step if step is None else step)
        with self.model.hooks(hooks):
            yield

    def fail(self, loss_value: float) -> None:
        """Stop on a non-finite loss: tell the callbacks, then raise (no checkpoint of the broken state)."""
        where = f"last good checkpoint: {self.last_checkpoint}" if self.last_checkpoint else "no checkpoint was written yet"
        error = NonFiniteLossError(
            f"training loss became {loss_value} at step {self.step + 1} (lr {self.config.train.lr_at(self.step):.3g}); "
            f"stopped, {where}. Try a lower --lr, --grad-clip, or a longer --warmup-steps"
        )
        self.stop_reason = "non-finite loss"
        self.seconds = self.elapsed()
        for callback in self.callbacks:
            callback.on_abort(self, error)
        raise error

    def interrupted(self) -> None:
        """After a signal: let every callback save what it keeps (``on_interrupt``), then raise
        :class:`TrainingInterrupted`."""
        self.seconds = self.elapsed()
        for callback in self.callbacks:
            callback.on_interrupt(self)
        checkpoint = self.last_checkpoint if self.run_dir is not None else None
        raise TrainingInterrupted(self._signal or "SIGINT", self.step, checkpoint, self.run_dir)

    @contextlib.contextmanager
    def _stopping_at_signals(self) -> Iterator[None]:
        """Inside: SIGINT and SIGTERM ask the loop to stop after the step under way; the same signal again stops at
        once (another one does not: a job ends its workers with SIGTERM after the terminal's Ctrl-C reached them
        too). Only in the main thread (where Python handles signals), and never for a signal the process ignores."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return

        def stop_after_this_step(number: int, frame) -> None:
            name = signal.Signals(number).name
            if self._signal == name:
                raise KeyboardInterrupt  # asked twice: now
            if self._signal is not None:
                return
            self._signal = name
            where = f", then a checkpoint in {self.run_dir}" if self.run_dir is not None else ""
            logger().warning(f"{self._signal}: finishing step {self.step + 1}{where} (again to stop at once)")

        previous = {}
        for number in (signal.SIGINT, signal.SIGTERM):
            handler = signal.getsignal(number)
            if handler is signal.SIG_IGN or handler is None:
                continue
            previous[number] = handler
            signal.signal(number, stop_after_this_step)
        try:
            yield
        finally:
            for number, handler in previous.items():
                signal.signal(number, handler)

    def elapsed(self) -> float:
        """Training seconds so far (summed over resumes)."""
        return self.seconds if self._clock is None else time.perf_counter() - self._clock

    def stop(self, reason: str) -> None:
        """Ask the loop to stop after the current step (the first reason wins)."""
        if self.stop_reason is None:
            self.stop_reason = reason

    def log(self, step: int, metrics: dict) -> None:
        """Hand a batch of metrics to every callback (writers, progress bar, …)."""
        for callback in self.callbacks:
            callback.on_log(self, step, metrics)

    def result(self) -> TrainResult:
        return TrainResult(
            steps=self.step,
            seconds=self.seconds,
            stop_reason=self.stop_reason or "running",
            evaluations=dict(self.evaluations),
            grokking=self.grokking,
            run_dir=self.run_dir,
            time_budget=self.config.train.time_budget,
        )

    # --- checkpoints

    def save(self, path: str | Path) -> Path:
        """Write a checkpoint of the current state (atomically)."""
        state = {
            "seconds": self.elapsed(),
            "stop_reason": self.stop_reason,
            "callbacks": {type(cb).__name__: cb.state_dict() for cb in self.callbacks},
        }
        grokfast = self.grokfast.state_tensors() if self.grokfast is not None else None
        self.last_checkpoint = save_checkpoint(
            path, step=self.step, model=self.model, optimizer=self.optimizer, grokfast=grokfast, state=state
        )
        return self.last_checkpoint

    def restore(self, checkpoint: Checkpoint) -> None:
        """Continue from ``checkpoint`` exactly (weights, optimizer, Grokfast, RNG, callback state)."""
        load_weights_into(self.model, checkpoint.model, f"{checkpoint.path} does not fit the run's config")
        if checkpoint.optimizer:
            load_optimizer_tensors(self.optimizer, checkpoint.optimizer)
        if self.grokfast is not None and checkpoint.grokfast:
            self.grokfast.load_state_tensors(checkpoint.grokfast)
        restore_rng(checkpoint.rng)
        self.step = checkpoint.step
        self.seconds = float(checkpoint.state.get("seconds", 0.0))
        self.stop_reason = renamed_stop_reason(checkpoint.state.get("stop_reason"))
        self.last_checkpoint = checkpoint.path
        states = checkpoint.state.get("callbacks", {})
        for callback in self.callbacks:
            if type(callback).__name__ in states:
                callback.load_state_dict(states[type(callback).__name__])
