"""Score a model against the exact Bayes observer on a fixed set of sequences.

The observer's predictive distribution ``P(x[i+1] | x[0..i])`` is the best any
model can do, so ``KL(observer || model)`` at position ``i`` — the model's
logits at ``i`` against the observer's predictive at ``i``, over all positions,
the last one included — measures exactly how far the model is from optimal.
Averaged over sequences drawn from the task it also equals the model's excess
cross-entropy over the Bayes cross-entropy, with far less noise.

Reported per set: model and Bayes cross-entropy (next observed token), mean KL
and KL per position, accuracy of the argmax prediction at target positions
(next token is a target position) for the model and the observer, and KL and
accuracy by the period in force.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nrecur.tasks import Batch, NRecurrence
from nrecur.train.data import select, touches


@dataclass(frozen=True)
class EvalSet:
    """Fixed sequences and the exact observer's answers on them (CPU tensors)."""

    name: str
    tokens: Tensor
    """``[batch, pos]`` int64."""
    predictive: Tensor
    """``[batch, pos, vocab]`` float64: the observer's P(x[i+1] | x[0..i])."""
    neg_entropy: Tensor
    """``[batch, pos]`` float64: sum_v p log p of the predictive (0 log 0 = 0)."""
    bayes_log_loss: Tensor
    """``[batch, pos - 1]`` float64: -log P(x[i+1] | x[0..i]) under the observer."""
    next_is_target: Tensor
    """``[batch, pos - 1]`` bool: position i+1 is a target position."""
    period: Tensor
    """``[batch, pos]`` int64: period of the rule in force at position i."""
    periods: tuple[int, ...]

    @classmethod
    def build(cls, name: str, task: NRecurrence, batch: Batch) -> "EvalSet":
        """Run the observer of ``task`` on ``batch`` (sampled from any n-recurrence task of the same vocabulary)."""
        tokens = torch.as_tensor(np.asarray(batch.tokens), dtype=torch.long)
        posterior = task.posterior(np.asarray(batch.tokens))
        predictive = torch.as_tensor(np.asarray(posterior.predictive), dtype=torch.float64)
        log_p = torch.where(predictive > 0, predictive.log(), torch.zeros((), dtype=torch.float64))
        return cls(
            name=name,
            tokens=tokens,
            predictive=predictive,
            neg_entropy=(predictive * log_p).sum(-1),
            bayes_log_loss=torch.as_tensor(np.asarray(posterior.log_loss), dtype=torch.float64),
            next_is_target=torch.as_tensor(np.asarray(batch.is_target_position)[:, 1:], dtype=torch.bool),
            period=torch.as_tensor(np.asarray(batch.period), dtype=torch.long),
            periods=tuple(int(n) for n in task.periods),
        )

    def subset(self, name: str, mask: np.ndarray | Tensor) -> "EvalSet":
        """The sequences where ``mask [batch]`` is true."""
        index = torch.as_tensor(np.asarray(mask), dtype=torch.bool)
        return EvalSet(
            name=name,
            tokens=self.tokens[index],
            predictive=self.predictive[index],
            neg_entropy=self.neg_entropy[index],
            bayes_log_loss=self.bayes_log_loss[index],
            next_is_target=self.next_is_target[index],
            period=self.period[index],
            periods=self.periods,
        )

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class PeriodEvaluation:
    """Scores restricted to positions where the rule in force has period ``period``."""

    period: int
    share: float
    """Fraction of all positions with this period."""
    kl: float
    target_accuracy: float
    """Model's argmax accuracy at target positions of this period (NaN if none)."""


@dataclass(frozen=True)
class Evaluation:
    """A model scored against the exact observer on one :class:`EvalSet` (nats per token)."""

    name: str
    n_sequences: int
    model_ce: float
    """Mean -log q(x[i+1] | x[0..i]) of the model over observed next tokens."""
    bayes_ce: float
    """The same for the exact observer: the floor on this data."""
    kl: float
    """Mean KL(observer || model) over all sequences and all positions."""
    kl_per_position: tuple[float, ...]
    """``[pos]``: mean KL at each position i (predicting token i+1)."""
    target_accuracy: float
    """How often the model's most likely next token is the observed one when the next position is a target position."""
    bayes_target_accuracy: float
    """The same for the observer."""
    by_period: tuple[PeriodEvaluation, ...]

    @property
    def excess_ce(self) -> float:
        """``model_ce - bayes_ce``; negative on training data means memorization."""
        return self.model_ce - self.bayes_ce

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics named ``{set}/{quantity}`` (per-position KL not included)."""
        values = {
            "kl": self.kl,
            "model_ce": self.model_ce,
            "bayes_ce": self.bayes_ce,
            "excess_ce": self.excess_ce,
            "target_acc": self.target_accuracy,
            "bayes_target_acc": self.bayes_target_accuracy,
        }
        for part in self.by_period:
            values[f"kl_n{part.period}"] = part.kl
            values[f"target_acc_n{part.period}"] = part.target_accuracy
        return {f"{self.name}/{key}": float(value) for key, value in values.items()}


@torch.no_grad()
def model_log_probs(model: nn.Module, tokens: Tensor, chunk: int = 1024) -> Tensor:
    """``tokens [batch, pos]`` → ``[batch, pos, vocab]`` float64 log-probabilities on the CPU (eval mode, restored after)."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        parts = [
            F.log_softmax(model(tokens[start : start + chunk].to(device)).double(), dim=-1).cpu()
            for start in range(0, len(tokens), chunk)
        ]
    finally:
        model.train(was_training)
    return torch.cat(parts)


def evaluate(model: nn.Module, eval_set: EvalSet, chunk: int = 1024) -> Evaluation:
    """Score ``model`` (tokens ``[batch, pos]`` → logits ``[batch, pos, vocab]``) on ``eval_set``."""
    log_q = model_log_probs(model, eval_set.tokens, chunk)  # [batch, pos, vocab]
    p = eval_set.predictive
    kl = eval_set.neg_entropy - (p * log_q).sum(-1)  # [batch, pos]
    next_tokens = eval_set.tokens[:, 1:]  # [batch, pos - 1]
    model_ce = -log_q[:, :-1].gather(-1, next_tokens[..., None]).squeeze(-1)  # [batch, pos - 1]
    targets = eval_set.next_is_target
    model_hit = log_q[:, :-1].argmax(-1) == next_tokens  # [batch, pos - 1]
    bayes_hit = p[:, :-1].argmax(-1) == next_tokens
    by_period = []
    for n in eval_set.periods:
        here = eval_set.period == n  # [batch, pos]
        at_target = targets & here[:, :-1]
        by_period.append(
            PeriodEvaluation(
                period=n,
                share=float(here.double().mean()),
                kl=_masked_mean(kl, here),
                target_accuracy=_masked_mean(model_hit.double(), at_target),
            )
        )
    return Evaluation(
        name=eval_set.name,
        n_sequences=len(eval_set),
        model_ce=float(model_ce.mean()),
        bayes_ce=float(eval_set.bayes_log_loss.mean()),
        kl=float(kl.mean()),
        kl_per_position=tuple(float(v) for v in kl.mean(0)),
        target_accuracy=_masked_mean(model_hit.double(), targets),
        bayes_target_accuracy=_masked_mean(bayes_hit.double(), targets),
        by_period=tuple(by_period),
    )


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    count = int(mask.sum())
    return float(values[mask].sum() / count) if count else float("nan")


def build_eval_sets(
    task: NRecurrence,
    length: int,
    size: int,
    seed: int,
    held_out: frozenset = frozenset(),
    train_batch: Batch | None = None,
) -> dict[str, EvalSet]:
    """The fixed evaluation sets of a run.

    ``eval``: ``size`` fresh sequences (seed ``seed``); with held-out rules also
    ``in_dist`` / ``out_dist``, the ones whose hidden rule never / at some
    position is held out; with a finite training set also ``train``, its first
    ``size`` sequences.
    """
    fresh = task.sample(size, length, (seed,))
    sets = {"eval": EvalSet.build("eval", task, fresh)}
    if held_out:
        outside = touches(fresh, held_out)
        for name, mask in (("in_dist", ~outside), ("out_dist", outside)):
            if mask.any():
                sets[name] = sets["eval"].subset(name, mask)
    if train_batch is not None:
        # Training sequences carry one token more than the context (the last target); the model sees ``length``.
        sets["train"] = EvalSet.build("train", task, select(train_batch, (slice(0, size), slice(0, length))))
    return sets
