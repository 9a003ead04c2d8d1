"""Callbacks of the training loop: evaluation, metrics files, checkpoints, progress bar, stopping rules.

A callback sees the start, every step, every batch of metrics and the end of
training. It may ask the trainer to stop (``trainer.stop(reason)``) and may
keep JSON state (``state_dict``) that checkpoints carry, so that a resumed run
behaves as if it had never been interrupted. Order matters: the evaluator logs
before the checkpointer saves, so a checkpoint always follows its metrics. Their base class,
:class:`~nrecur.train.loop.Callback`, is defined beside the loop that calls it (and importable from here).
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import numpy as np

from nrecur._log import PLAIN_EVERY, Ticker, is_terminal, logger
from nrecur._text import seconds_text
from nrecur.train.evaluate import EvalSet, Grokking, build_eval_sets, evaluate
from nrecur.train.folder import RunFolder
from nrecur.train.loop import Callback, StepInfo, Trainer, continue_command, why_stopped
from nrecur.train.renames import renamed_record
from nrecur.train.weights import squared_norms


class Evaluator(Callback):
    """Scores the model against the exact observer on fixed sets; finds when it memorized and when it reached the KL threshold.

    Evaluates at step 0, every ``train.eval_every`` steps and at the end. Logs
    ``train/loss`` (mean over the steps since the last evaluation), ``lr``,
    ``grad_norm``, ``weight_norm_sq`` and ``decayed_norm_sq`` (all parameters, and those weight decay
    acts on: :mod:`nrecur.train.weights`) and every set's metrics
    (``eval/kl``, ``eval/kl_per_position``, ``train/excess_ce``, …).
    """

    def __init__(self, eval_sets: dict[str, EvalSet] | None = None) -> None:
        self.eval_sets = eval_sets
        self.memorization_step: int | None = None
        self.threshold_step: int | None = None
        self.threshold_seconds: float | None = None
        self.last_eval_step = -1
        self._loss_sum = 0.0
        self._loss_count = 0
        self._last: StepInfo | None = None

    def on_start(self, trainer: Trainer) -> None:
        if self.eval_sets is None:
            config = trainer.config
            train_batch = getattr(trainer.data, "sequences", None)
            self.eval_sets = build_eval_sets(
                config.task, config.length, config.train.eval_size, config.train.eval_seed, trainer.held_out, train_batch
            )
        self._publish(trainer)
        if trainer.step == 0 and self.last_eval_step < 0:
            self.run(trainer)
        elif self.last_eval_step == trainer.step:
            # Resumed right after an evaluation: recompute it (it is deterministic) without logging it twice.
            trainer.evaluations = self.evaluate_all(trainer)

    def evaluate_all(self, trainer: Trainer) -> dict:
        # The model as training sees it at this step: with the interventions active now.
        with trainer.interventions():
            return {name: evaluate(trainer.model, eval_set) for name, eval_set in self.eval_sets.items()}

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        self._loss_sum += info.loss
        self._loss_count += 1
        self._last = info
        if trainer.step % trainer.config.train.eval_every == 0:
            self.run(trainer)

    def on_end(self, trainer: Trainer) -> None:
        if self.last_eval_step != trainer.step:
            self.run(trainer)

    def run(self, trainer: Trainer) -> None:
        """Evaluate now, log, update the memorization and threshold steps, maybe stop."""
        train = trainer.config.train
        evaluations = trainer.evaluations = self.evaluate_all(trainer)
        seconds = trainer.elapsed()
        metrics: dict = {"step": trainer.step, "seconds": round(seconds, 3)}
        if self._loss_count:
            metrics["train/loss"] = self._loss_sum / self._loss_count
        if self._last is not None:
            metrics["lr"] = self._last.lr
            metrics["grad_norm"] = self._last.grad_norm
        metrics["weight_norm_sq"], metrics["decayed_norm_sq"] = squared_norms(trainer.model)
        for evaluation in evaluations.values():
            metrics.update(evaluation.metrics())
        metrics["eval/kl_per_position"] = [round(v, 6) for v in evaluations["eval"].kl_per_position]

        # Memorization is about a fixed training set (finite mode); online runs never see a sequence twice.
        memorized = evaluations.get("train")
        if self.memorization_step is None and memorized is not None and memorized.excess_ce <= train.memorization_threshold:
            self.memorization_step = trainer.step
        if self.threshold_step is None and evaluations["eval"].kl <= train.kl_threshold:
            self.threshold_step, self.threshold_seconds = trainer.step, seconds
        self._publish(trainer)
        self._loss_sum, self._loss_count = 0.0, 0
        self.last_eval_step = trainer.step
        trainer.log(trainer.step, metrics)
        if train.stop_at_threshold and self.threshold_step is not None:
            trainer.stop("threshold")

    def _publish(self, trainer: Trainer) -> None:
        trainer.grokking = Grokking(
            memorization_step=self.memorization_step,
            threshold_step=self.threshold_step,
            threshold_seconds=self.threshold_seconds,
            kl_threshold=trainer.config.train.kl_threshold,
        )

    def state_dict(self) -> dict:
        return {
            "memorization_step": self.memorization_step,
            "threshold_step": self.threshold_step,
            "threshold_seconds": self.threshold_seconds,
            "last_eval_step": self.last_eval_step,
            "loss_sum": self._loss_sum,
            "loss_count": self._loss_count,
        }

    def load_state_dict(self, state: dict) -> None:
        state = renamed_record(state)  # a checkpoint written under the old names
        self.memorization_step = state["memorization_step"]
        self.threshold_step = state["threshold_step"]
        self.threshold_seconds = state["threshold_seconds"]
        self.last_eval_step = state["last_eval_step"]
        self._loss_sum = state["loss_sum"]
        self._loss_count = state["loss_count"]


class MetricsWriter(Callback):
    """Appends every batch of metrics as one JSON line to the run folder's ``metrics.jsonl``.

    On resume the file is first cut back to the lines up to the restored step
    (lines written after the checkpoint, or half-written by a killed process, go).
    """

    def __init__(self, folder: RunFolder) -> None:
        self.folder = folder
        self._ready = False

    def on_start(self, trainer: Trainer) -> None:
        self._prepare(trainer)

    def _prepare(self, trainer: Trainer) -> None:
        # Runs at the first of on_start / on_log: the evaluator may log before this callback's on_start.
        if not self._ready:
            kept = [line for line in self.folder.read_metrics() if trainer.step > 0 and line["step"] <= trainer.step]
            self.folder.write_metrics(kept)
            self._ready = True

    def on_log(self, trainer: Trainer, step: int, metrics: dict) -> None:
        self._prepare(trainer)
        self.folder.append_metrics(metrics)


class TensorBoardWriter(Callback):
    """Scalar metrics as TensorBoard events in ``log_dir`` (only when tensorboard is installed)."""

    def __init__(self, log_dir: str | Path) -> None:
        self.log_dir = Path(log_dir)
        self._writer = None

    @staticmethod
    def available() -> bool:
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            return False
        return True

    def on_start(self, trainer: Trainer) -> None:
        self._open(trainer)

    def _open(self, trainer: Trainer) -> None:
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.log_dir), purge_step=trainer.step or None)

    def on_log(self, trainer: Trainer, step: int, metrics: dict) -> None:
        self._open(trainer)
        for name, value in metrics.items():
            if name != "step" and isinstance(value, (int, float)) and math.isfinite(value):
                self._writer.add_scalar(name, value, step)
        self._writer.flush()

    def on_end(self, trainer: Trainer) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def on_abort(self, trainer: Trainer, error) -> None:
        self.on_end(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self.on_end(trainer)


def log_spaced_steps(steps: int, count: int) -> frozenset[int]:
    """``count`` roughly log-spaced steps in ``[1, steps]``, plus step 0 (empty when ``count`` is 0)."""
    if count <= 0:
        return frozenset()
    return frozenset({0} | {int(round(s)) for s in np.geomspace(1, steps, count)})


class Checkpointer(Callback):
    """Saves ``checkpoints/step_XXXXXXXX.safetensors`` every ``checkpoint_every`` steps, at log-spaced steps, at the
    end and when a signal interrupts training.

    The periodic checkpoint replaces the previous one (once the new one is on
    disk), and so does one written at an interrupt; log-spaced ones and the final one stay.
    """

    def __init__(self, folder: RunFolder, every: int, keep_steps: frozenset[int] = frozenset()) -> None:
        self.folder = folder
        self.every = every
        self.keep_steps = keep_steps

    def on_start(self, trainer: Trainer) -> None:
        if trainer.step == 0 and 0 in self.keep_steps:
            self.save(trainer)

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        if trainer.step % self.every == 0 or trainer.step in self.keep_steps:
            self.save(trainer)

    def on_end(self, trainer: Trainer) -> None:
        self.save(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        if trainer.last_checkpoint != self.folder.checkpoint_path(trainer.step):
            self.save(trainer)

    def save(self, trainer: Trainer) -> None:
        path = trainer.save(self.folder.checkpoint_path(trainer.step))
        for step, old in self.folder.checkpoints():
            if old != path and step not in self.keep_steps and step < trainer.step:
                old.unlink(missing_ok=True)


class TimeBudget(Callback):
    """Stops training once ``seconds`` of training time have passed (summed over resumes)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        if trainer.elapsed() >= self.seconds:
            trainer.stop("time budget")


class ProgressBar(Callback):
    """Progress on stderr: a tqdm bar on a terminal (step, training loss, evaluation KL, time left by steps or by
    the time budget); elsewhere (a file, a pipe, a notebook) a plain line every ``every_seconds`` instead, with no
    control codes. Either way, through the ``nrecur`` logger (:mod:`nrecur._log`), a line at the start that names
    a time budget the run has, and one at the end: why it stopped, and the command that continues it when it
    stopped short."""

    def __init__(self, description: str = "train", every: int = 10, file=None, every_seconds: float = PLAIN_EVERY) -> None:
        self.description = description
        self.every = every
        self.file = file
        self.every_seconds = every_seconds
        self._bar = None
        self._ticker: Ticker | None = None
        self._kl = float("nan")
        self._loss = float("nan")

    def on_start(self, trainer: Trainer) -> None:
        train = trainer.config.train
        start = f"from step {trainer.step:,} " if trainer.step else ""
        line = f"{self.description}: training {start}to step {train.steps:,}"
        if train.time_budget > 0:
            line += f"; stops at a time budget of {train.time_budget:g} s of training (train.time_budget; 0: none)"
        logger().info(line)
        # The default (an eager step where compiling is not measured faster) goes to the debug level: a line on
        # every run's console only where the step is compiled or the setting was chosen.
        choice = trainer.compile_choice
        (logger().info if choice.compiled or train.compile != "auto" else logger().debug)(f"{self.description}: {choice.reason}")
        evaluation = trainer.evaluations.get("eval")
        if evaluation is not None:
            self._kl = evaluation.kl
        if self.file is not None or is_terminal():
            from tqdm import tqdm

            self._bar = tqdm(
                total=train.steps, initial=trainer.step, desc=self.description, file=self.file or sys.stderr,
                dynamic_ncols=True, smoothing=0.05,
            )  # fmt: skip
        else:
            self._ticker = Ticker(self.every_seconds)
            self._start_step, self._start_time = trainer.step, time.perf_counter()

    def on_step(self, trainer: Trainer, info: StepInfo) -> None:
        self._loss = info.loss if math.isnan(self._loss) else 0.9 * self._loss + 0.1 * info.loss
        if self._bar is not None and trainer.step % self.every == 0:
            self._bar.update(trainer.step - self._bar.n)
            self._bar.set_postfix_str(self._postfix(trainer), refresh=False)
        elif self._ticker is not None and self._ticker.due():
            logger().info(self._line(trainer))

    def on_log(self, trainer: Trainer, step: int, metrics: dict) -> None:
        self._kl = metrics.get("eval/kl", self._kl)
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(trainer))

    def _postfix(self, trainer: Trainer) -> str:
        text = f"loss {self._loss:.4f} KL {self._kl:.4f}"
        budget = trainer.config.train.time_budget
        if budget > 0:
            text += f" budget left {max(0.0, budget - trainer.elapsed()):.0f}s"
        return text

    def _line(self, trainer: Trainer) -> str:
        """A plain progress line: step, share done, loss, KL, time so far and time left."""
        steps, step = trainer.config.train.steps, trainer.step
        seconds = time.perf_counter() - self._start_time
        rate = (step - self._start_step) / seconds if seconds > 0 else 0.0
        left = (steps - step) / rate if rate > 0 else float("nan")
        budget = trainer.config.train.time_budget
        if budget > 0:
            left = min(left, max(0.0, budget - trainer.elapsed()))
        left_text = f", about {left:.0f} s left" if math.isfinite(left) else ""
        return f"{self.description}: step {step:,}/{steps:,} ({100 * step / steps:.0f} %), {self._postfix(trainer)}, {trainer.elapsed():.0f} s{left_text}"

    def _close(self, trainer: Trainer) -> None:
        if self._bar is not None:
            self._bar.update(trainer.step - self._bar.n)
            self._bar.set_postfix_str(self._postfix(trainer))
            self._bar.close()
            self._bar = None

    def on_end(self, trainer: Trainer) -> None:
        self._close(trainer)
        result = trainer.result()
        line = f"{self.description}: {why_stopped(result)} at step {result.steps:,} of {trainer.config.train.steps:,} ({seconds_text(result.seconds)} s)"
        evaluation = result.evaluations.get("eval")
        if evaluation is not None:
            line += f", KL {evaluation.kl:.4f} (threshold {trainer.config.train.kl_threshold:g})"
        command = continue_command(result)
        logger().info(line + (f"; continue it: {command}" if command else ""))

    def on_abort(self, trainer: Trainer, error) -> None:
        self._close(trainer)

    def on_interrupt(self, trainer: Trainer) -> None:
        self._close(trainer)
