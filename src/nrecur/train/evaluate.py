"""Score a model against the exact Bayes observer on a fixed set of sequences.

The observer's predictive distribution ``P(x[i+1] | x[0..i])`` is the best any
model can do, so ``KL(observer || model)`` at position ``i`` — the model's
logits at ``i`` against the observer's predictive at ``i``, over all positions,
the last one included — measures exactly how far the model is from optimal.
Averaged over sequences drawn from the task it also equals the model's excess
cross-entropy over the Bayes cross-entropy, with far less noise.

Reported per set: model and Bayes cross-entropy (next observed token), mean KL
and KL per position, accuracy of the argmax prediction for the model and the
observer at the positions the task scores (n-recurrence: when the next
position is a target position; HMMs: everywhere; modular arithmetic: when the
next token is a ``z``), and KL and accuracy by the task's hidden-truth stratum
(period, state, slot). Which sets exist is the task's choice
(``task.evaluation_views()``), plus in/out-of-distribution subsets when rules
are held out — against the task's observer and, on the in-distribution
sequences, against the in-distribution observer too, whose prior knows only
the training rules — and the training set in finite mode. :class:`Grokking` records
when a run memorized and when it converged at the KL threshold: grokking is
the second long after the first.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import nrecur.observer  # noqa: F401 - registers every task kind's observer (tasks never import it)
from nrecur.tasks import Sequences, Task
from nrecur.train.data import touches


@dataclass(frozen=True)
class Grokking:
    """When the model memorized its training set and when it converged at the KL threshold (``None``: not
    reached); ``delay`` is the grokking delay from the one to the other."""

    memorization_step: int | None
    """First evaluation where the loss on training data came within memorization_threshold of its Bayes loss."""
    threshold_step: int | None
    """First evaluation where KL(observer || model) on fresh data fell to kl_threshold."""
    threshold_seconds: float | None
    """Training time (seconds) at threshold_step."""
    kl_threshold: float

    @property
    def delay(self) -> int | None:
        """``threshold_step - memorization_step`` when both happened."""
        if self.threshold_step is None or self.memorization_step is None:
            return None
        return self.threshold_step - self.memorization_step


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
    accuracy_mask: Tensor
    """``[batch, pos - 1]`` bool: positions whose next token is scored for accuracy."""
    accuracy_name: str
    """Metric name of the accuracy (``target_acc``, ``next_acc``, ``z_acc``)."""
    strata: Tensor | None
    """``[batch, pos]`` int64: the hidden-truth stratum of each prediction position (or None)."""
    stratum_values: tuple[int, ...] = ()
    stratum_names: tuple[str, ...] = ()
    stratum_title: str = ""
    """What the strata are, in words (``period``, ``state``, …)."""

    @classmethod
    def build(cls, name: str, task: Task, sample: Sequences, **observer) -> "EvalSet":
        """Run the observer of ``task`` (with keyword arguments ``observer``) on ``sample``."""
        tokens = np.asarray(sample.tokens)
        posterior = task.posterior(tokens, **observer)
        predictive = torch.as_tensor(np.asarray(posterior.predictive), dtype=torch.float64)
        log_p = torch.where(predictive > 0, predictive.log(), torch.zeros((), dtype=torch.float64))
        truth = task.truth(sample)
        strata = truth.strata
        return cls(
            name=name,
            tokens=torch.as_tensor(tokens, dtype=torch.long),
            predictive=predictive,
            neg_entropy=(predictive * log_p).sum(-1),
            bayes_log_loss=torch.as_tensor(np.asarray(posterior.log_loss), dtype=torch.float64),
            accuracy_mask=torch.as_tensor(np.asarray(truth.accuracy_mask), dtype=torch.bool),
            accuracy_name=truth.accuracy_name,
            strata=torch.as_tensor(np.asarray(strata.labels), dtype=torch.long) if strata else None,
            stratum_values=strata.values if strata else (),
            stratum_names=strata.names if strata else (),
            stratum_title=strata.title if strata else "",
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
            accuracy_mask=self.accuracy_mask[index],
            accuracy_name=self.accuracy_name,
            strata=self.strata[index] if self.strata is not None else None,
            stratum_values=self.stratum_values,
            stratum_names=self.stratum_names,
            stratum_title=self.stratum_title,
        )

    def __len__(self) -> int:
        return len(self.tokens)


@dataclass(frozen=True)
class StratumEvaluation:
    """Scores restricted to prediction positions of one hidden-truth stratum (a period, a state, …)."""

    name: str
    """Short name, e.g. ``n2`` (metrics ``kl_n2``, ``target_acc_n2``)."""
    value: int
    """The label value (n-recurrence: the period)."""
    share: float
    """Fraction of all positions in this stratum."""
    kl: float
    accuracy: float
    """Model's argmax accuracy at the scored positions of this stratum (NaN if none)."""

    @property
    def period(self) -> int:
        """n-recurrence: the period (the label value)."""
        return self.value

    @property
    def target_accuracy(self) -> float:
        return self.accuracy


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
    accuracy_name: str
    """What the accuracy is called (``target_acc`` for n-recurrence)."""
    accuracy: float
    """How often the model's most likely next token is the observed one, at the positions the task scores."""
    bayes_accuracy: float
    """The same for the observer."""
    by_stratum: tuple[StratumEvaluation, ...]
    stratum_title: str = ""
    """What the strata of ``by_stratum`` are (``period``, ``state``, …)."""

    @property
    def excess_ce(self) -> float:
        """``model_ce - bayes_ce``; negative on training data means memorization."""
        return self.model_ce - self.bayes_ce

    # n-recurrence names of the same numbers
    @property
    def target_accuracy(self) -> float:
        return self.accuracy

    @property
    def bayes_target_accuracy(self) -> float:
        return self.bayes_accuracy

    @property
    def by_period(self) -> tuple[StratumEvaluation, ...]:
        return self.by_stratum

    def metrics(self) -> dict[str, float]:
        """Flat scalar metrics named ``{set}/{quantity}`` (per-position KL not included)."""
        values = {
            "kl": self.kl,
            "model_ce": self.model_ce,
            "bayes_ce": self.bayes_ce,
            "excess_ce": self.excess_ce,
            self.accuracy_name: self.accuracy,
            f"bayes_{self.accuracy_name}": self.bayes_accuracy,
        }
        for part in self.by_stratum:
            values[f"kl_{part.name}"] = part.kl
            values[f"{self.accuracy_name}_{part.name}"] = part.accuracy
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
    scored = eval_set.accuracy_mask
    model_hit = log_q[:, :-1].argmax(-1) == next_tokens  # [batch, pos - 1]
    bayes_hit = p[:, :-1].argmax(-1) == next_tokens
    by_stratum = []
    if eval_set.strata is not None:
        for value, name in zip(eval_set.stratum_values, eval_set.stratum_names):
            here = eval_set.strata == value  # [batch, pos]
            by_stratum.append(
                StratumEvaluation(
                    name=name,
                    value=value,
                    share=float(here.double().mean()),
                    kl=_masked_mean(kl, here),
                    accuracy=_masked_mean(model_hit.double(), scored & here[:, :-1]),
                )
            )
    return Evaluation(
        name=eval_set.name,
        n_sequences=len(eval_set),
        model_ce=float(model_ce.mean()),
        bayes_ce=float(eval_set.bayes_log_loss.mean()),
        kl=float(kl.mean()),
        kl_per_position=tuple(float(v) for v in kl.mean(0)),
        accuracy_name=eval_set.accuracy_name,
        accuracy=_masked_mean(model_hit.double(), scored),
        bayes_accuracy=_masked_mean(bayes_hit.double(), scored),
        by_stratum=tuple(by_stratum),
        stratum_title=eval_set.stratum_title,
    )


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    count = int(mask.sum())
    return float(values[mask].sum() / count) if count else float("nan")


def _held_out_observer(task: Task, held_out: frozenset) -> tuple | None:
    """``task.held_out_observer(held_out)``, or None with a warning when the in-distribution prior is invalid."""
    try:
        return task.held_out_observer(held_out)
    except ValueError as error:
        warnings.warn(f"no in_dist_mem evaluation for this run: {error}", stacklevel=3)
        return None


def build_eval_sets(
    task: Task,
    length: int,
    size: int,
    seed: int,
    held_out: frozenset = frozenset(),
    train_batch: Sequences | None = None,
) -> dict[str, EvalSet]:
    """The fixed evaluation sets of a run.

    One set per view of ``task.evaluation_views()`` (``eval`` first: ``size``
    fresh sequences, seed ``seed``); with held-out rules also ``in_dist`` /
    ``out_dist``, the ``eval`` sequences whose hidden rule never / at some
    position is held out, and ``in_dist_mem``, the ``in_dist`` sequences
    against the in-distribution observer (``task.held_out_observer``: the
    memorizing one; out-of-distribution sequences may be impossible under it,
    so they are scored against the task's observer only, as for modular
    arithmetic); with a finite training set also ``train``, its first ``size``
    sequences.
    """
    sets: dict[str, EvalSet] = {}
    samples: dict[str, Sequences] = {}
    for index, view in enumerate(task.evaluation_views()):
        split = {} if view.split is None else {"split": view.split}
        # The first view keeps the seed of runs made before views existed, so their numbers stay the same.
        sample = task.sample(size, length, (seed,) if index == 0 else (seed, index), **split)
        samples[view.name] = sample
        sets[view.name] = EvalSet.build(view.name, task, sample, **dict(view.observer))
    if held_out:
        outside = touches(task, samples["eval"], held_out)
        for name, mask in (("in_dist", ~outside), ("out_dist", outside)):
            if mask.any():
                sets[name] = sets["eval"].subset(name, mask)
        memorizing = _held_out_observer(task, held_out) if (~outside).any() else None
        if memorizing is not None:
            sets["in_dist_mem"] = EvalSet.build("in_dist_mem", task, samples["eval"].select(~outside), **dict(memorizing))
    if train_batch is not None:
        # Training sequences carry one token more than the context (the last target); the model sees ``length``.
        first = task.evaluation_views()[0]  # the training data's own observer, as for ``eval``
        train = train_batch.select(slice(0, size), positions=slice(0, length))
        sets["train"] = EvalSet.build("train", task, train, **dict(first.observer))
    return sets
