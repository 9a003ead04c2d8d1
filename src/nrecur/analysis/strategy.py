"""Strategy: does the model predict like a memorizer of its training rules, or like the general solution?

A run that trains on some of a task's rules has two exact observers (SPEC §5):
``O_mem``, the Bayes predictor under the *in-distribution* prior (only the
training rules: n-recurrence with held-out rules, the training task vectors of
modular arithmetic), and ``O_gen``, under the full prior. Following Wurgaft et
al., the model's next-token distribution ``M`` is compared with the mixture of
their predictives, and the **strategy weight** ``w ∈ [0, 1]`` is the one that
brings it closest: it minimizes the mean ``KL(M ‖ w·O_mem + (1 − w)·O_gen)``
over positions and sequences. The objective is convex in ``w`` (minus the log
of an affine function), so the minimizer is found by bisection on its
derivative. It is fitted separately on in-distribution sequences (drawn from
the training prior) and on out-of-distribution ones (their rule is held out at
some position), over all positions and at each position; the KL left at the
best ``w`` is what neither strategy explains. The mixture is smoothed to
``(1 − floor)·mixture + floor/V``, so that a token both observers rule out
costs a finite amount; positions where ``O_mem`` gives the sequence probability
zero (an out-of-distribution sequence that no training rule explains any
more) have no memorizing prediction and are left out (``coverage``), as are
positions where the two observers agree (a per-position ``w`` is NaN there).

This is measured at every saved checkpoint up to the loaded one, with the
observers computed once on the same sequences, and beside it ``KL(O_mem ‖ M)``
on in-distribution and ``KL(O_gen ‖ M)`` on out-of-distribution sequences.
The **fit step** is the first evaluation with ``KL(O_mem ‖ M)`` ≤ the run's
``kl_threshold`` on in-distribution sequences, the **generalization step** the
first with ``KL(O_gen ‖ M)`` ≤ it on out-of-distribution sequences (both from
the run's own evaluations when it logged them, else from the checkpoints), and
their difference is the delay of in-context grokking. Every figure stands
beside the same measurement on the run's own initialization.

How to read it: ``w`` near 1 on in-distribution sequences with a large KL to
``O_gen`` out of distribution is a memorizer; ``w`` falling to 0 on both, with
little KL unexplained, is the general solution. A large unexplained KL says
the model is neither (early in training it is usually far from both).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import pydantic
import torch

from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register, seen_at
from nrecur.analysis.base import progress_bar
from nrecur.runs import load_run
from nrecur.tasks import ModularICL, NRecurrence, Task
from nrecur.train.data import held_out_rules, touches
from nrecur.train.evaluate import model_log_probs

__all__ = ["Fit", "Point", "StrategyOptions", "StrategyResult", "TwoObservers", "compute", "fit_weight", "two_observers"]

SPLITS = ("id", "ood")
"""In-distribution and out-of-distribution sequences."""


# ----------------------------------------------------------------------------------------- the two observers


@dataclass(frozen=True)
class TwoObservers:
    """What the strategy analysis asks of a run with two observers."""

    memorizing: dict
    """Keyword arguments of ``task.posterior`` for ``O_mem``."""
    general: dict
    """… and for ``O_gen``."""
    sample: Callable[[str, int, int, int], np.ndarray]
    """``sample(split, count, length, seed) -> tokens [batch, pos]`` of ``"id"`` or ``"ood"`` sequences."""
    fit_metric: str
    """The run's logged ``KL(O_mem ‖ M)`` on in-distribution sequences."""
    generalization_metric: str
    """The run's logged ``KL(O_gen ‖ M)`` on out-of-distribution sequences."""


OBSERVER_PAIRS: dict[type, Callable] = {}
"""Task class → ``fn(run) -> TwoObservers`` (a ValueError saying why the run has only one)."""


def _pair_for(task_class: type):
    def decorate(fn):
        OBSERVER_PAIRS[task_class] = fn
        return fn

    return decorate


def two_observers(run) -> TwoObservers:
    """The run's two observers and how to draw its two kinds of sequences; ValueError (one line) when it has not two."""
    for task_class, fn in OBSERVER_PAIRS.items():
        if isinstance(run.task, task_class):
            return fn(run)
    raise ValueError(f"task kind {run.task.kind!r} has one observer (two: {', '.join(c.__name__ for c in OBSERVER_PAIRS)})")


@_pair_for(NRecurrence)
def _nrecurrence(run) -> TwoObservers:
    task, train = run.task, run.config.train
    held_out = held_out_rules(task, train.held_out_fraction, train.data_seed)
    if not held_out:
        raise ValueError("the run holds no rules out of training (train.held_out_fraction 0): one observer")
    memorizing = dict(task.held_out_observer(held_out))  # ValueError when the restricted prior is not valid
    training_task = task.in_distribution(held_out)

    def sample(split: str, count: int, length: int, seed: int) -> np.ndarray:
        if split == "id":
            return training_task.sample(count, length, (seed, 0)).tokens
        return _touching(task, held_out, count, length, (seed, 1))

    return TwoObservers(memorizing, {}, sample, "in_dist_mem/kl", "out_dist/kl")


def _touching(task: Task, rules: frozenset, count: int, length: int, seed: tuple[int, ...], rounds: int = 64) -> np.ndarray:
    """``[count, length]`` tokens of sequences of the full process whose rule is one of ``rules`` at some position."""
    kept, have, drawn, size = [], 0, 0, max(4 * count, 256)
    for attempt in range(rounds):
        batch = task.sample(size, length, (*seed, attempt))
        hits = touches(task, batch, rules)
        kept.append(batch.tokens[hits])
        have, drawn = have + int(hits.sum()), drawn + size
        if have >= count:
            return np.concatenate(kept)[:count]
        rate = max(have / drawn, 1e-4)
        size = int(min(max(1.3 * (count - have) / rate, 256), 1 << 16))
    raise ValueError(f"could not draw {count} out-of-distribution sequences in {rounds} rounds: the held-out rules are too rare")


@_pair_for(ModularICL)
def _modular(run) -> TwoObservers:
    task = run.task
    if task.n_tasks == task.n_vectors:
        raise ValueError("every task vector is a training vector (n_tasks = p²): one observer")
    splits = {"id": "in_distribution", "ood": "out_of_distribution"}

    def sample(split: str, count: int, length: int, seed: int) -> np.ndarray:
        return task.sample(count, length, seed, split=splits[split]).tokens

    return TwoObservers({"prior": "in_distribution"}, {"prior": "universal"}, sample, "eval/kl", "out_dist/kl")


# -------------------------------------------------------------------------------------------- the fit


def _predictive(task: Task, tokens: np.ndarray, observer: dict) -> np.ndarray:
    """``[batch, pos, vocab]`` float64; NaN where the observer gives the sequence probability zero."""
    post = task.posterior(tokens, impossible="inf", **observer)
    predictive = np.array(post.predictive, dtype=np.float64)
    impossible = np.asarray(post.impossible)
    for row in np.flatnonzero(impossible >= 0):  # the prediction of the impossible token is the last one defined
        predictive[row, impossible[row] :] = np.nan
    return predictive


def _mixture(w, mem: np.ndarray, gen: np.ndarray, floor: float) -> np.ndarray:
    return (1.0 - floor) * (w * mem + (1.0 - w) * gen) + floor / mem.shape[-1]


def fit_weight(model: np.ndarray, mem: np.ndarray, gen: np.ndarray, valid: np.ndarray, floor: float, by_position: bool = False, iterations: int = 50):
    """``(w, kl)``: the weight minimizing the mean over ``valid`` ``[batch, pos]`` cells of
    ``KL(model ‖ w·mem + (1 − w)·gen)`` (predictives ``[batch, pos, vocab]``, the mixture smoothed by ``floor``),
    and that KL — scalars, or ``[pos]`` arrays with ``by_position`` (NaN where no cell is valid; ``w`` also
    NaN where the observers agree). Bisection on the derivative, which is increasing in ``w``."""
    mem, gen = np.where(valid[..., None], mem, 0.0), np.where(valid[..., None], gen, 0.0)
    weight = valid.astype(np.float64)  # [batch, pos]
    axis = 0 if by_position else (0, 1)
    count = weight.sum(axis)
    with np.errstate(invalid="ignore", divide="ignore"):
        entropy = (model * np.log(model)).sum(-1)  # [batch, pos]: Σ M log M

        def mean(values):  # [batch, pos] -> [pos] or scalar, over valid cells
            return (values * weight).sum(axis) / count

        def slope(w):
            ww = w if np.ndim(w) == 0 else w[None, :, None]
            return -mean((model * (mem - gen) * (1 - floor) / _mixture(ww, mem, gen, floor)).sum(-1))

        low, high = np.zeros_like(count), np.ones_like(count)
        at_low, at_high = slope(low), slope(high)
        for _ in range(iterations):
            middle = (low + high) / 2
            up = slope(middle) > 0
            high, low = np.where(up, middle, high), np.where(up, low, middle)
        w = np.where(at_low >= 0, 0.0, np.where(at_high <= 0, 1.0, (low + high) / 2))
        ww = w if np.ndim(w) == 0 else w[None, :, None]
        kl = mean(entropy - (model * np.log(_mixture(ww, mem, gen, floor))).sum(-1))
        apart = mean(np.abs(mem - gen).sum(-1)) > 1e-9
    w = np.where(apart & (count > 0), w, np.nan)
    return (float(w), float(kl)) if not by_position else (w, np.where(count > 0, kl, np.nan))


def _kl(observer: np.ndarray, log_model: np.ndarray, valid: np.ndarray) -> float:
    """Mean ``KL(observer ‖ model)`` over the ``valid`` ``[batch, pos]`` cells."""
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(observer > 0, observer * (np.log(np.where(observer > 0, observer, 1.0)) - log_model), 0.0).sum(-1)
    return float(terms[valid].mean()) if valid.any() else math.nan


# ------------------------------------------------------------------------------------------ the result


class StrategyOptions(Options):
    n_sequences: int = pydantic.Field(256, ge=8)
    """Fresh sequences of each kind (in- and out-of-distribution), the same at every checkpoint."""
    floor: float = pydantic.Field(1e-6, gt=0, lt=0.1)
    """The mixture is (1 − floor)·mixture + floor/V: a token both observers rule out costs a finite amount."""
    over_training: bool = True
    """Measure every saved checkpoint up to the loaded one (False: the loaded weights only)."""


@dataclass(frozen=True)
class Fit:
    """The strategy of one model on one kind of sequence."""

    w: float
    """The weight of ``O_mem`` in the mixture closest to the model (NaN where the observers agree everywhere)."""
    kl_unexplained: float
    """Mean ``KL(M ‖ mixture)`` at that weight (nats/token)."""
    kl_mem: float
    """Mean ``KL(O_mem ‖ M)`` where ``O_mem`` is defined."""
    kl_gen: float
    """Mean ``KL(O_gen ‖ M)``."""
    w_by_position: tuple[float, ...]
    """The weight fitted at each position alone (NaN where the observers agree or ``O_mem`` is undefined)."""
    kl_unexplained_by_position: tuple[float, ...]


@dataclass(frozen=True)
class Point:
    """One model (a checkpoint, or the run's initialization) on both kinds of sequence."""

    step: int
    id: Fit
    ood: Fit


@dataclass(frozen=True)
class StrategyResult(Result):
    """The strategy weight over training, on in- and out-of-distribution sequences, beside the initialization's."""

    headline: dict[str, float]
    """Named figures; ``icl_grokking_delay`` is ``generalization_step - fit_step`` when positive (the delay of
    in-context grokking, SPEC §5) and NaN otherwise: when either step is missing, or when the run generalized
    no later than it fitted (no grokking to time)."""
    options: StrategyOptions
    step: int
    checkpoints: tuple[Point, ...]
    """Every measured checkpoint, in order of step."""
    random_init: Point
    """The same on the run's own initialization (the control)."""
    kl_threshold: float
    fit_step: int | None
    generalization_step: int | None
    steps_from: str
    """Where the two steps were read: ``log`` (the run's evaluations) or ``checkpoints``."""
    coverage: dict[str, float]
    """Per kind of sequence, the share of positions where ``O_mem`` is defined (1 in distribution)."""
    separation: dict[str, float]
    """Per kind, the mean total-variation distance between the two observers' predictives (0: nothing to tell apart)."""
    logged: dict[str, dict[str, list[float]]]
    """``fit`` and ``generalization``: the run's logged KL curves (``step``, ``value``) behind the two steps."""

    @property
    def steps(self) -> list[int]:
        return [p.step for p in self.checkpoints]

    def series(self, split: str, name: str) -> list[float]:
        """One figure of one kind of sequence over the checkpoints: ``series("ood", "w")``."""
        return [getattr(getattr(p, split), name) for p in self.checkpoints]


def _applies(run) -> str | None:
    try:
        two_observers(run)
    except ValueError as error:
        return str(error)
    return None


def icl_grokking_delay(fit_step: int | None, generalization_step: int | None) -> float:
    """``generalization_step - fit_step`` when both exist and the difference is positive, else NaN: the delay
    of in-context grokking is defined only when generalization comes after the fit (SPEC §5)."""
    if fit_step is None or generalization_step is None or generalization_step <= fit_step:
        return math.nan
    return float(generalization_step - fit_step)


def _first_at_or_below(steps, values, threshold: float) -> int | None:
    return next((int(s) for s, v in zip(steps, values) if v is not None and np.isfinite(v) and v <= threshold), None)


def _measure(model, step: int, task: Task, tokens: dict, observers: dict, valid: dict, floor: float) -> Point:
    fits = {}
    for split in SPLITS:
        log_m = model_log_probs(model, torch.as_tensor(tokens[split])).numpy()  # [batch, pos, vocab]
        m, (mem, gen), ok = np.exp(log_m), observers[split], valid[split]
        w, kl = fit_weight(m, mem, gen, ok, floor)
        w_pos, kl_pos = fit_weight(m, mem, gen, ok, floor, by_position=True)
        fits[split] = Fit(w, kl, _kl(mem, log_m, ok), _kl(gen, log_m, np.ones_like(ok)), tuple(w_pos.tolist()), tuple(kl_pos.tolist()))
    return Point(step, fits["id"], fits["ood"])


def compute(run, options: StrategyOptions) -> StrategyResult:
    """The strategy of ``run`` at each saved checkpoint up to the loaded step (each loaded on the model's
    device, seen as training saw it there; the loaded one is ``run.model``) and at its initialization."""
    pair = two_observers(run)
    task, length = run.task, run.config.length
    tokens = {split: pair.sample(split, options.n_sequences, length, options.seed) for split in SPLITS}
    observers, valid = {}, {}
    for split in SPLITS:
        mem, gen = _predictive(task, tokens[split], pair.memorizing), _predictive(task, tokens[split], pair.general)
        observers[split], valid[split] = (mem, gen), np.isfinite(mem).all(-1) & np.isfinite(gen).all(-1)
    args = (task, tokens, observers, valid, options.floor)
    device = next(run.model.parameters()).device
    steps = [s for s in run.checkpoint_steps if s < run.step] if options.over_training else []
    points = [_measure(seen_at(load_run(run.path, step=s, device=device).model, s), s, *args) for s in progress_bar(steps, "strategy", total=len(steps))]
    points.append(_measure(run.model, run.step, *args))
    control = _measure(initial_model(run), 0, *args)

    threshold = run.config.train.kl_threshold
    logged = {role: dict(zip(("step", "value"), run.metric(name))) for role, name in (("fit", pair.fit_metric), ("generalization", pair.generalization_metric))}
    if all(curve["step"] for curve in logged.values()):
        steps_from = "log"
        fit_step = _first_at_or_below(logged["fit"]["step"], logged["fit"]["value"], threshold)
        general_step = _first_at_or_below(logged["generalization"]["step"], logged["generalization"]["value"], threshold)
    else:
        steps_from = "checkpoints"
        fit_step = _first_at_or_below([p.step for p in points], [p.id.kl_mem for p in points], threshold)
        general_step = _first_at_or_below([p.step for p in points], [p.ood.kl_gen for p in points], threshold)
    last = points[-1]
    headline = {}
    for split in SPLITS:
        mine, theirs = getattr(last, split), getattr(control, split)
        headline |= {f"w_final/{split}": mine.w, f"w_final_random_init/{split}": theirs.w}
        headline |= {f"kl_unexplained/{split}": mine.kl_unexplained, f"kl_unexplained_random_init/{split}": theirs.kl_unexplained}
    headline |= {"kl_mem/id": last.id.kl_mem, "kl_mem_random_init/id": control.id.kl_mem}
    headline |= {"kl_gen/ood": last.ood.kl_gen, "kl_gen_random_init/ood": control.ood.kl_gen}
    headline |= {
        "fit_step": math.nan if fit_step is None else float(fit_step),
        "generalization_step": math.nan if general_step is None else float(general_step),
        "icl_grokking_delay": icl_grokking_delay(fit_step, general_step),
        "checkpoints": float(len(points)),
    }
    return StrategyResult(
        headline=headline,
        options=options,
        step=run.step,
        checkpoints=tuple(points),
        random_init=control,
        kl_threshold=threshold,
        fit_step=fit_step,
        generalization_step=general_step,
        steps_from=steps_from,
        coverage={split: float(valid[split].mean()) for split in SPLITS},
        separation={split: float(np.nanmean(np.abs(observers[split][0] - observers[split][1]).sum(-1)[valid[split]]) / 2) for split in SPLITS},
        logged=logged,
    )


STRATEGY = register(
    Analysis(
        name="strategy",
        description="the weight w of the memorizing observer in the mixture of the two observers closest to the model, in and out of "
        "distribution, over the saved checkpoints; the KL neither explains; fit and generalization steps; beside the initialization",
        options=StrategyOptions,
        result=StrategyResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.strategy:draw",
    )
)
