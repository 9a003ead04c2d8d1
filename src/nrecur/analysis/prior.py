"""Static prior: the model's prior over targets and over periods, read from its weights alone.

An n-recurrence model trained with a skewed ``target_prior`` / ``period_prior``
must hold that prior somewhere: before the context says anything, a
Bayes-optimal predictor answers with the prior (SPEC §5). We estimate the prior
*statically* — from the weights, with no forward pass on data — several ways
(:mod:`nrecur.analysis.prior_estimators`), and check each against the task's
true prior and against the *behavioural prior* read from the model's
predictions on fresh sequences.

Static estimators of the **target prior** (each gives the model's output
distribution ``u [vocab]``, turned into a prior by inverting the emission of the
first position, ``u(v) = α·π(v) + β``, the period prior taken uniform):

* ``direct``: the direct path, token embedding → ``ln_final`` → unembed, for
  every input token; the logits averaged over input tokens, then softmaxed;
* ``constant``: the constant path, the position embedding of the first
  positions plus every bias that reaches the residual stream whatever the input
  (each head's value bias through ``W_O``, the output biases, the MLPs on their
  input biases) → ``ln_final`` → unembed;
* ``mean_input``: the whole network evaluated on the token-averaged embedding
  ``mean_v W_E[v] + W_pos[p]`` at the first ``max_period`` positions — an input
  made of weights, not data; the mean log-softmax, softmaxed.

Static estimators of the **period prior** (each a non-negative score per period,
normalized; all-zero scores give the uniform distribution):

* ``qk_pos``: layer 0's attention patterns on the position embeddings alone;
  period ``n`` scores the mass on the key ``n - 1`` back (the nearest earlier
  position in the phase of the one being predicted) above what uniform
  attention puts there, averaged over the queries ``i ≥ max_period - 1`` (the
  same for every period), clipped at 0 per head, summed over heads;
* ``qk_pos_ov``: the same, each head weighted by the Frobenius norm of its OV
  circuit ``W_V W_O`` (a head that writes nothing cannot carry a prior);
* ``mean_input_attn``: the attention patterns of *every* layer on the
  token-averaged input of ``mean_input``, scored like ``qk_pos_ov``.

Every estimator is checked in the same call on hand-built models whose prior is
known (:mod:`nrecur.analysis.prior_validation`): a model that holds a skewed
prior where the estimator looks, and one that holds it reversed, must both come
out right. ``validation`` lists each check and ``validated`` says, per
estimator, whether it passed them all; an estimator that fails is reported, not
hidden (``static_target_validated`` / ``static_period_validated`` in the
headline, for the chosen ones).

The **behavioural prior** — the reference — reads the model's predictions at the
first positions of fresh sequences of the run's task, where the observer's
answer is (almost) the prior: ``first_position`` is the model's mean predictive
at position 0 inverted like the static target estimates; ``fit`` is the pair of
priors ``(target, period)`` for which the exact observer's predictive is closest
to the model's over the first ``2 · max_period`` positions, in mean
KL(observer ‖ model) — a descent on the priors' logits with finite-difference
gradients and backtracking (:func:`fit_prior`). ``fit_kl`` says how well the
best prior explains the model; ``fit_kl_at_true`` is the same at the task's own
prior.

How to read it: per quantity, the Pearson correlation of each estimate with the
true prior (undefined — NaN — when the true prior is uniform, a constant
vector: then only KL(true ‖ estimate) means something), and KL(true ‖
estimate). Every figure stands beside the same measurement on the run's own
initialization (``…_random_init``: its fine-tuning source where it has
``init_from``), and each static estimate beside the behavioural fit
(``static_vs_behavioural_*_corr``). A static estimator works when it passed its
hand-built checks and its correlation is high on a trained model with a skewed
prior while near zero (or undefined) at initialization. The headline names
``static_*`` use the chosen estimators (``target_estimator``,
``period_estimator``); every estimator's correlation is under
``static_*_corr/NAME``.

Which estimators track a skewed prior in trained models is what
``examples/prior_experiment.py`` measures (a Zipf target prior and a skewed
period prior, both reversed, and uniform priors); the numbers are its output,
not part of this module. Read a correlation beside its KL: with four periods a
correlation alone is weak evidence, and an untrained model's ``fit`` can
correlate well with a prior it is far from.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pydantic
import torch

from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.prior_estimators import PERIOD_ESTIMATORS, TARGET_ESTIMATORS, emission_affine, prior_from_marginal, static_priors
from nrecur.analysis.prior_validation import Check, validate
from nrecur.model import GPT
from nrecur.tasks import NRecurrence
from nrecur.train.evaluate import model_log_probs

__all__ = [
    "PERIOD_ESTIMATORS",
    "TARGET_ESTIMATORS",
    "Estimate",
    "Estimates",
    "PriorFit",
    "PriorOptions",
    "PriorResult",
    "compare",
    "compute",
    "emission_affine",
    "estimates_of",
    "fit_prior",
    "prior_applies",
    "prior_from_marginal",
    "static_priors",
]


# ---------------------------------------------------------------------------- behavioural prior


@dataclass(frozen=True)
class PriorFit:
    """The priors that make the exact observer closest to a predictive (:func:`fit_prior`)."""

    target: np.ndarray
    """``[vocab]``"""
    period: np.ndarray
    """``[period]``"""
    kl: float
    """Mean KL(observer ‖ predictive) at the fitted priors (nats per position)."""
    kl_start: float
    """The same at the starting priors (uniform unless given)."""
    iterations: int


def _observer_kl(task: NRecurrence, tokens: np.ndarray, predictive: np.ndarray, target: np.ndarray, period: np.ndarray) -> float:
    observer = task.model_copy(update={"target_prior": tuple(map(float, target)), "period_prior": tuple(map(float, period))})
    p = observer.posterior(tokens).predictive  # [batch, pos, vocab]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(predictive)), 0.0)
    return float(terms.sum(-1).mean())


def fit_prior(
    task: NRecurrence,
    tokens: np.ndarray,
    predictive: np.ndarray,
    fit_target: bool = True,
    fit_period: bool = True,
    iterations: int = 60,
    start: tuple[np.ndarray, np.ndarray] | None = None,
) -> PriorFit:
    """The target and period priors for which ``task``'s exact observer on ``tokens [batch, pos]`` has the
    predictive closest to ``predictive [batch, pos, vocab]`` (index i predicts token i+1), in mean
    KL(observer ‖ predictive). Gradient descent on the priors' logits (finite differences, backtracking);
    a prior not fitted stays at its start (uniform unless ``start`` gives ``(target, period)``)."""
    predictive = np.clip(np.asarray(predictive, float), 1e-12, None)
    V, P = task.vocab_size, task.n_periods
    target0, period0 = start if start is not None else (np.full(V, 1.0 / V), np.full(P, 1.0 / P))
    theta = np.concatenate([np.log(np.clip(target0, 1e-8, None)), np.log(np.clip(period0, 1e-8, None))])
    free = np.array([fit_target] * V + [fit_period] * P)

    def split(values):
        return _softmax(values[:V]), _softmax(values[V:])

    def loss(values):
        return _observer_kl(task, tokens, predictive, *split(values))

    current = loss(theta)
    first, step, eps, done = current, 1.0, 1e-4, 0
    for done in range(1, iterations + 1):
        grad = np.zeros_like(theta)
        for i in np.flatnonzero(free):
            shifted = theta.copy()
            shifted[i] += eps
            grad[i] = (loss(shifted) - current) / eps
        norm = np.linalg.norm(grad)
        if norm < 1e-7:
            break
        while step > 1e-6:
            candidate = theta - step * grad / norm
            value = loss(candidate)
            if value < current:
                theta, improvement, current = candidate, current - value, value
                step *= 1.5
                break
            step *= 0.5
        else:
            break
        if improvement < 1e-9:
            break
    target, period = split(theta)
    return PriorFit(target=target, period=period, kl=current, kl_start=first, iterations=done)


def _softmax(values: np.ndarray) -> np.ndarray:
    e = np.exp(values - values.max())
    return e / e.sum()


def _behavioural(model: GPT, task: NRecurrence, n_sequences: int, n_positions: int, seed: int, iterations: int) -> dict:
    """The model's predictions at the first ``n_positions`` of fresh sequences: the first-position prior and
    the fitted priors (see the module docstring)."""
    with warnings.catch_warnings():  # the first positions are short on purpose: no context-length warning
        warnings.simplefilter("ignore", UserWarning)
        tokens = task.sample(n_sequences, n_positions, seed).tokens  # [batch, pos]
    tokens_t = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    predictive = model_log_probs(model, tokens_t).exp().numpy()  # [batch, pos, vocab]
    first = predictive[:, 0].mean(0)  # [vocab]
    fit = fit_prior(task, tokens, predictive, iterations=iterations)
    at_true = _observer_kl(task, tokens, np.clip(predictive, 1e-12, None), task.target_probs, task.period_probs)
    return {"first_position": prior_from_marginal(task, first), "fit": fit, "kl_at_true": at_true}


# ---------------------------------------------------------------------------- comparison and the analysis


def compare(truth: np.ndarray, estimate: np.ndarray) -> dict[str, float]:
    """``{"corr": Pearson r, "kl": KL(truth ‖ estimate)}``; ``corr`` is NaN when either vector is constant
    (a uniform prior: correlation is undefined)."""
    truth, estimate = np.asarray(truth, float), np.asarray(estimate, float)
    if np.ptp(truth) < 1e-12 or np.ptp(estimate) < 1e-12:
        corr = float("nan")
    else:
        corr = float(np.corrcoef(truth, estimate)[0, 1])
    mask = truth > 0
    kl = float(np.sum(truth[mask] * (np.log(truth[mask]) - np.log(np.clip(estimate[mask], 1e-12, None)))))
    return {"corr": corr, "kl": kl}


def prior_applies(run) -> str | None:
    """None when the analysis applies to ``run``; else why not, in one line."""
    if not isinstance(run.task, NRecurrence):
        return f"needs an n-recurrence task (a prior over targets and periods); this run's task is {run.task.kind}"
    if run.model.config.vocab_size != run.task.vocab_size:
        return f"the model's vocab_size {run.model.config.vocab_size} differs from the task's {run.task.vocab_size}"
    return None


class PriorOptions(Options):
    n_sequences: int = pydantic.Field(2048, ge=8)
    """Fresh sequences whose first positions give the behavioural prior."""
    target_estimator: str = "mean_input"
    """The static estimator of the target prior named in the headline (``static_target_*``); every one is computed."""
    period_estimator: str = "qk_pos_ov"
    """The static estimator of the period prior named in the headline (``static_period_*``); every one is computed."""
    fit_iterations: int = pydantic.Field(60, ge=1, le=1000)
    """Descent steps of the behavioural fit of the priors."""

    @pydantic.field_validator("target_estimator")
    @classmethod
    def _known_target(cls, value: str) -> str:
        if value not in TARGET_ESTIMATORS:
            raise ValueError(f"unknown target estimator {value!r}; choose one of {', '.join(TARGET_ESTIMATORS)}")
        return value

    @pydantic.field_validator("period_estimator")
    @classmethod
    def _known_period(cls, value: str) -> str:
        if value not in PERIOD_ESTIMATORS:
            raise ValueError(f"unknown period estimator {value!r}; choose one of {', '.join(PERIOD_ESTIMATORS)}")
        return value


@dataclass(frozen=True)
class Estimate:
    """One estimate of a prior, against the true prior and against the same model's behavioural fit."""

    values: list[float]
    """``[vocab]`` or ``[period]``."""
    corr: float
    """Pearson correlation with the true prior (NaN when either is uniform)."""
    kl: float
    """KL(true ‖ estimate)."""
    corr_behavioural: float
    """Pearson correlation with the same model's behavioural fit (the reference)."""


@dataclass(frozen=True)
class Estimates:
    """Every estimate of the prior read from one model."""

    static_target: dict[str, Estimate]
    """estimator → its estimate ``[vocab]`` (inverted from the output distribution)."""
    static_target_raw: dict[str, list[float]]
    """estimator → ``[vocab]`` output distribution of that path, before inversion."""
    static_period: dict[str, Estimate]
    """estimator → its estimate ``[period]`` (none for a model without blocks)."""
    behavioural_target: dict[str, Estimate]
    """``first_position`` and ``fit`` → ``[vocab]``."""
    behavioural_period: dict[str, Estimate]
    """``fit`` → ``[period]``."""
    fit_kl: float
    """Mean KL(observer ‖ model) at the fitted priors (nats per position)."""
    fit_kl_uniform: float
    """The same at uniform priors (where the fit starts)."""
    fit_kl_at_true: float
    """The same at the task's own priors."""
    fit_iterations: int

    def of(self, kind: str, what: str) -> dict[str, Estimate]:
        """``kind`` (``static`` / ``behavioural``) estimates of ``what`` (``target`` / ``period``)."""
        return getattr(self, f"{kind}_{what}")


def estimates_of(model: GPT, task: NRecurrence, options: PriorOptions, n_positions: int) -> Estimates:
    """Every static and behavioural estimate of ``model``'s prior, scored against ``task``'s true prior."""
    targets, periods, raw = static_priors(model, task)
    behaviour = _behavioural(model, task, options.n_sequences, n_positions, options.seed, options.fit_iterations)
    fit: PriorFit = behaviour["fit"]

    def scored(values: dict[str, np.ndarray], truth: np.ndarray, behavioural: np.ndarray) -> dict[str, Estimate]:
        return {
            name: Estimate(np.asarray(v, float).tolist(), **compare(truth, v), corr_behavioural=compare(behavioural, v)["corr"])
            for name, v in values.items()
        }

    return Estimates(
        static_target=scored(targets, task.target_probs, fit.target),
        static_target_raw={k: np.asarray(v, float).tolist() for k, v in raw.items()},
        static_period=scored(periods, task.period_probs, fit.period),
        behavioural_target=scored({"first_position": behaviour["first_position"], "fit": fit.target}, task.target_probs, fit.target),
        behavioural_period=scored({"fit": fit.period}, task.period_probs, fit.period),
        fit_kl=fit.kl,
        fit_kl_uniform=fit.kl_start,
        fit_kl_at_true=float(behaviour["kl_at_true"]),
        fit_iterations=fit.iterations,
    )


@dataclass(frozen=True)
class PriorResult(Result):
    """Static and behavioural estimates of the prior over targets and periods, on the trained model and on its
    initialization, against the true prior; and every static estimator's check on hand-built models."""

    headline: dict[str, float]
    options: PriorOptions
    step: int
    periods: tuple[int, ...]
    true_target: list[float]
    true_period: list[float]
    n_positions: int
    """Positions of the fresh sequences the behavioural prior reads."""
    trained: Estimates
    random_init: Estimates
    """The same estimates on the run's own initialization (the control)."""
    validation: tuple[Check, ...]
    """Every static estimator on every hand-built model of known prior it reads."""
    validated: dict[str, bool]
    """estimator → it returned the known prior of every hand-built model it reads, both ways round."""


def _headline(trained: Estimates, control: Estimates, options: PriorOptions, validated: dict[str, bool]) -> dict[str, float]:
    headline: dict[str, float] = {}
    chosen = {"target": options.target_estimator, "period": options.period_estimator}
    for what in ("target", "period"):
        for suffix, estimates in (("", trained), ("_random_init", control)):
            static = estimates.of("static", what).get(chosen[what])
            if static is not None:
                headline[f"static_{what}_corr{suffix}"] = static.corr
                headline[f"static_{what}_kl{suffix}"] = static.kl
                headline[f"static_vs_behavioural_{what}_corr{suffix}"] = static.corr_behavioural
        headline[f"static_{what}_validated"] = float(validated[chosen[what]])
        for suffix, estimates in (("", trained), ("_random_init", control)):
            behavioural = estimates.of("behavioural", what)["fit"]
            headline[f"behavioural_{what}_corr{suffix}"] = behavioural.corr
            headline[f"behavioural_{what}_kl{suffix}"] = behavioural.kl
    for what in ("target", "period"):
        for kind in ("static", "behavioural"):
            for name in trained.of(kind, what):
                if kind == "static" or name == "first_position":
                    for suffix, estimates in (("", trained), ("_random_init", control)):
                        headline[f"{kind}_{what}_corr{suffix}/{name}"] = estimates.of(kind, what)[name].corr
    for suffix, estimates in (("", trained), ("_random_init", control)):
        headline[f"fit_kl{suffix}"] = estimates.fit_kl
        headline[f"fit_kl_at_true{suffix}"] = estimates.fit_kl_at_true
    return headline


def compute(run, options: PriorOptions) -> PriorResult:
    """Static (weights only) and behavioural priors of ``run.model`` over targets and periods against the true
    prior of ``run.task``, the same on the run's own initialization, and every static estimator checked on
    hand-built models; see the module docstring."""
    why = prior_applies(run)
    if why is not None:
        raise ValueError(f"the prior analysis does not apply: {why}")
    task: NRecurrence = run.task
    n_positions = min(2 * task.max_period, run.model.config.n_ctx)
    trained = estimates_of(run.model, task, options, n_positions)
    control = estimates_of(initial_model(run), task, options, n_positions)
    checks = validate(task, max(run.model.config.n_ctx, task.max_period))
    validated = {name: all(c.passed for c in checks if c.estimator == name) for name in (*TARGET_ESTIMATORS, *PERIOD_ESTIMATORS)}
    return PriorResult(
        headline=_headline(trained, control, options, validated),
        options=options,
        step=run.step,
        periods=tuple(task.periods),
        true_target=task.target_probs.tolist(),
        true_period=task.period_probs.tolist(),
        n_positions=n_positions,
        trained=trained,
        random_init=control,
        validation=checks,
        validated=validated,
    )


PRIOR = register(
    Analysis(
        name="prior",
        description="the model's prior over targets and periods read from its weights alone (static, each estimator "
        "checked on hand-built models) and from its first predictions (behavioural), beside the run's initialization",
        options=PriorOptions,
        result=PriorResult,
        compute=compute,
        applies=prior_applies,
        figures="nrecur.analysis.figures.prior:draw",
    )
)
