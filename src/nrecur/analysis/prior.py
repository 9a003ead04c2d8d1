"""Static prior: the model's prior over targets and over periods, read from its weights alone.

An n-recurrence model trained with a skewed ``target_prior`` / ``period_prior``
must hold that prior somewhere: before the context says anything, a
Bayes-optimal predictor answers with the prior (SPEC §5). We estimate the prior
*statically* — from the weights, with no forward pass on data — several ways,
and check each against the task's true prior and against the *behavioural
prior* read from the model's predictions on fresh sequences.

Static estimators of the **target prior** (each gives the model's output
distribution ``u [vocab]``, turned into a prior by :func:`prior_from_marginal`,
which inverts the emission of one position, ``u(v) = α·π(v) + β`` — see below):

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

* ``qk_pos``: layer 0's positional QK circuit: ``ln1(W_pos)`` through each head's
  ``W_Q``, ``W_K`` (with biases), scaled and softmaxed causally; period ``n``
  scores the mass on the key ``n - 1`` back (the nearest earlier position in the
  phase of the one being predicted, the first key of the period score of the
  heads analysis) above what uniform attention puts there, averaged over the
  queries ``i ≥ max_period - 1`` (the same for every period), clipped at 0 per
  head, summed over heads;
* ``qk_pos_ov``: the same, each head weighted by the Frobenius norm of its OV
  circuit ``W_V W_O`` (a head that writes nothing cannot carry a prior);
* ``mean_input_attn``: the attention patterns of *every* layer on the
  token-averaged input of ``mean_input``, scored like ``qk_pos_ov``.

The **behavioural prior** reads the model's predictions at the first positions
of fresh sequences of the run's task, where the observer's answer is (almost)
the prior: ``first_position`` is the model's mean predictive at position 0
inverted like the static target estimates; ``fit`` is the pair of priors
``(target, period)`` for which the exact observer's predictive is closest to
the model's over the first ``2 · max_period`` positions, in mean KL(observer ‖
model) — a descent on the priors' logits with finite-difference gradients and
backtracking (:func:`fit_prior`). Its ``fit_kl`` says how well the best prior
explains the model; ``fit_kl_at_true`` is the same at the task's own prior.

The inversion: the first token of a sequence is a target position with
probability ``E_n[1/n]`` and then shows ``t`` with probability ``1 - p_noise(n)``;
so its marginal is affine in the target prior, ``u(v) = α·π(v) + β``
(:func:`emission_affine`, the period prior taken uniform: the analyst does not
know it). Correlation is unchanged by the inversion; KL is not.

How to read it: per quantity, the Pearson correlation of each estimate with the
true prior (undefined — NaN — when the true prior is uniform, a constant
vector: then only KL(true ‖ estimate) means something), and KL(true ‖
estimate); the same numbers for the model before training (the run's own
initialization) are the baseline. A static estimator works when its correlation
is high on a trained model with a skewed prior and near zero (or undefined) at
initialization. The headline names ``static_*`` use the default estimators
(``mean_input`` for targets, ``qk_pos_ov`` for periods); every estimator's
figures are under ``static_*_corr/NAME``.

Which estimators track a skewed prior is what ``examples/prior_experiment.py``
measures: the quick preset trained with a Zipf target prior and a skewed period
prior, with both reversed, and with uniform priors; the numbers are its output,
not part of this module. Read a correlation beside its KL: with four
periods a correlation alone is weak evidence, and an untrained model's ``fit``
can correlate well with a prior it is far from.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nrecur.analysis.base import OKABE_ITO, pyplot, save_figure
from nrecur.analysis.legacy import register_analysis
from nrecur.model import GPT
from nrecur.tasks import NRecurrence
from nrecur.train.evaluate import model_log_probs
from nrecur.train.loop import build_model

__all__ = [
    "PERIOD_ESTIMATORS",
    "TARGET_ESTIMATORS",
    "PriorFit",
    "PriorResult",
    "compare",
    "emission_affine",
    "fit_prior",
    "prior",
    "prior_applies",
    "prior_from_marginal",
    "static_priors",
]

FLOOR = 1e-4
"""The smallest probability an inverted estimate keeps (an inversion can go below zero)."""


# ---------------------------------------------------------------------------- weights → residual pieces


def _final_logits(model: GPT, resid: torch.Tensor) -> torch.Tensor:
    """``resid [..., d_model]`` → ``[..., vocab]`` through ``ln_final`` and the unembedding (position-wise)."""
    logits = model(resid.reshape(-1, 1, resid.shape[-1]), start_at_layer=model.config.n_layers)  # [..., 1, vocab]
    return logits.reshape(*resid.shape[:-1], -1)


def _constant_writes(model: GPT) -> torch.Tensor:
    """``[d_model]``: what the blocks add to the residual stream whatever their input's content — each head's
    value bias through ``W_O`` (attention weights sum to 1) and ``b_O``, and each MLP on its input bias."""
    total = torch.zeros(model.config.d_model)
    for block in model.blocks:
        attn = block.attn
        total = total + torch.einsum("hd,hdm->m", attn.b_V, attn.W_O) + attn.out.bias
        if block.mlp is not None:
            total = total + block.mlp(block.mlp.fc_in.bias.new_zeros(model.config.d_model))
    return total


def _averaged_embedding(model: GPT, length: int) -> torch.Tensor:
    """``[1, pos, d_model]``: the token-averaged embedding plus the position embedding (weights only)."""
    return (model.embed.weight.mean(0) + model.pos_embed.weight[:length])[None]


def _patterns(model: GPT, resid: torch.Tensor, layers: int) -> torch.Tensor:
    """The attention patterns ``[layer, head, query, key]`` of the first ``layers`` blocks run on the residual
    stream ``resid [pos, d_model]`` (made of weights) entering block 0."""
    names = [f"blocks.{layer}.attn.hook_pattern" for layer in range(layers)]
    _, cache = model.run_with_cache(resid[None], start_at_layer=0, stop_at_layer=layers, names_filter=names)
    return torch.stack([cache[name][0] for name in names])


def _ov_norms(model: GPT, layer: int) -> torch.Tensor:
    """``[head]``: Frobenius norm of each head's OV circuit ``W_V[h] @ W_O[h]``."""
    attn = model.blocks[layer].attn
    return torch.linalg.matrix_norm(attn.W_V @ attn.W_O)


# ---------------------------------------------------------------------------- static estimators

TargetEstimator = Callable[[GPT, NRecurrence], np.ndarray]
PeriodEstimator = Callable[[GPT, NRecurrence], np.ndarray]
TARGET_ESTIMATORS: dict[str, TargetEstimator] = {}
"""name → ``(model, task) -> u [vocab]``, the model's output distribution by that path (before inversion)."""
PERIOD_ESTIMATORS: dict[str, PeriodEstimator] = {}
"""name → ``(model, task) -> [period]`` distribution over ``task.periods``."""


def _register(table: dict):
    def decorate(fn):
        table[fn.__name__.removeprefix("_")] = fn
        return fn

    return decorate


@_register(TARGET_ESTIMATORS)
def _direct(model: GPT, task: NRecurrence) -> np.ndarray:
    logits = _final_logits(model, model.embed.weight)  # [vocab_in, vocab]
    return logits.mean(0).softmax(-1).double().numpy()


@_register(TARGET_ESTIMATORS)
def _constant(model: GPT, task: NRecurrence) -> np.ndarray:
    positions = model.pos_embed.weight[: min(task.max_period, model.config.n_ctx)]  # [pos, d_model]
    logits = _final_logits(model, positions + _constant_writes(model))  # [pos, vocab]
    return logits.log_softmax(-1).mean(0).softmax(-1).double().numpy()


@_register(TARGET_ESTIMATORS)
def _mean_input(model: GPT, task: NRecurrence) -> np.ndarray:
    logits = model(_averaged_embedding(model, min(task.max_period, model.config.n_ctx)), start_at_layer=0)[0]  # [pos, vocab]
    return logits.log_softmax(-1).mean(0).softmax(-1).double().numpy()


def _lag_excess(pattern: torch.Tensor, periods: tuple[int, ...]) -> np.ndarray:
    """``pattern [head, query, key]`` → ``[head, period]``: the mean over queries ``i ≥ max(periods) - 1`` (the
    same queries for every period, so no period gets more short, noisy rows) of the mass on key ``i - (n - 1)``
    minus what uniform causal attention puts there (``1 / (i + 1)``), clipped at 0 per head."""
    length = pattern.shape[-1]
    queries = np.arange(max(periods) - 1, length)
    out = np.zeros((pattern.shape[0], len(periods)))
    if len(queries) == 0:
        return out
    for index, n in enumerate(periods):
        mass = pattern[:, queries, queries - (n - 1)].double().numpy()  # [head, query]
        out[:, index] = np.clip((mass - 1.0 / (queries + 1)).mean(-1), 0, None)
    return out


def _normalized(scores: np.ndarray) -> np.ndarray:
    total = scores.sum()
    return scores / total if total > 0 else np.full(len(scores), 1.0 / len(scores))


def _positional_pattern(model: GPT) -> torch.Tensor:
    """``[head, query, key]``: layer 0's pattern on the position embeddings alone."""
    return _patterns(model, model.pos_embed.weight, 1)[0]


@_register(PERIOD_ESTIMATORS)
def _qk_pos(model: GPT, task: NRecurrence) -> np.ndarray:
    return _normalized(_lag_excess(_positional_pattern(model), task.periods).sum(0))


@_register(PERIOD_ESTIMATORS)
def _qk_pos_ov(model: GPT, task: NRecurrence) -> np.ndarray:
    weights = _ov_norms(model, 0).double().numpy()[:, None]
    return _normalized((weights * _lag_excess(_positional_pattern(model), task.periods)).sum(0))


@_register(PERIOD_ESTIMATORS)
def _mean_input_attn(model: GPT, task: NRecurrence) -> np.ndarray:
    patterns = _patterns(model, _averaged_embedding(model, model.config.n_ctx)[0], model.config.n_layers)
    scores = sum((_ov_norms(model, layer).double().numpy()[:, None] * _lag_excess(p, task.periods)).sum(0)
                 for layer, p in enumerate(patterns))  # fmt: skip
    return _normalized(np.asarray(scores))


def emission_affine(task: NRecurrence, period_probs: np.ndarray | None = None) -> tuple[float, float]:
    """``(α, β)`` with ``P(x_0 = v) = α·π(v) + β`` for target prior ``π``: the first token is a target position
    with probability ``E_n[1/n]`` (``period_probs``, uniform by default) and there shows ``t`` with probability
    ``1 - p_noise(n)``, else a fake uniform over the other ``V - 1`` tokens; other positions are uniform over
    ``V \\ {t}`` (over all ``V`` with ``target_outside``)."""
    V = task.vocab_size
    probs = np.full(task.n_periods, 1.0 / task.n_periods) if period_probs is None else np.asarray(period_probs, float)
    inv_n = 1.0 / np.asarray(task.periods, float)
    noise = task.noise_by_period
    # target position: (1-p)[v=t] + p[v≠t]/(V-1) = [v=t](1-p-p/(V-1)) + p/(V-1)
    alpha = float(np.sum(probs * inv_n * (1 - noise - noise / (V - 1))))
    beta = float(np.sum(probs * inv_n * noise / (V - 1)))
    if task.target_outside:
        beta += float(np.sum(probs * (1 - inv_n))) / V
    else:  # [v≠t]/(V-1) = 1/(V-1) - [v=t]/(V-1)
        alpha -= float(np.sum(probs * (1 - inv_n))) / (V - 1)
        beta += float(np.sum(probs * (1 - inv_n))) / (V - 1)
    return alpha, beta


def prior_from_marginal(task: NRecurrence, marginal: np.ndarray, period_probs: np.ndarray | None = None) -> np.ndarray:
    """``marginal [vocab]`` (a distribution of one token) → the target prior ``[vocab]`` that gives it, by inverting
    :func:`emission_affine`; clipped at :data:`FLOOR` and renormalized."""
    alpha, beta = emission_affine(task, period_probs)
    if abs(alpha) < 1e-12:
        return np.full(task.vocab_size, 1.0 / task.vocab_size)
    raw = (np.asarray(marginal, float) - beta) / alpha
    clipped = np.clip(raw, FLOOR, None)
    return clipped / clipped.sum()


@torch.no_grad()
def static_priors(model: GPT, task: NRecurrence) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Every static estimate: ``(targets, periods, raw_targets)``, each name → distribution (targets: inverted by
    :func:`prior_from_marginal`; raw: the output distribution before inversion). No data goes through the model."""
    was_training = model.training
    model.eval()
    try:
        model_cpu = model if next(model.parameters()).device.type == "cpu" else _cpu_copy(model)
        raw = {name: fn(model_cpu, task) for name, fn in TARGET_ESTIMATORS.items()}
        periods = {name: fn(model_cpu, task) for name, fn in PERIOD_ESTIMATORS.items()} if model.config.n_layers else {}
    finally:
        model.train(was_training)
    targets = {name: prior_from_marginal(task, u) for name, u in raw.items()}
    return targets, periods, raw


def _cpu_copy(model: GPT) -> GPT:
    copy = GPT(model.config)
    copy.load_state_dict({k: v.cpu() for k, v in model.state_dict().items()})
    return copy.eval()


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


def _behavioural(model: GPT, task: NRecurrence, n_sequences: int, n_positions: int, seed: int) -> dict:
    """The model's predictions at the first ``n_positions`` of fresh sequences: the first-position prior and
    the fitted priors (see the module docstring)."""
    with warnings.catch_warnings():  # the first positions are short on purpose: no context-length warning
        warnings.simplefilter("ignore", UserWarning)
        tokens = task.sample(n_sequences, n_positions, seed).tokens  # [batch, pos]
    predictive = model_log_probs(model, torch.as_tensor(np.asarray(tokens), dtype=torch.long)).exp().numpy()
    first = predictive[:, 0].mean(0)  # [vocab]
    fit = fit_prior(task, tokens, predictive)
    at_true = _observer_kl(task, tokens, np.clip(predictive, 1e-12, None), task.target_probs, task.period_probs)
    return {"first_position_raw": first, "first_position": prior_from_marginal(task, first), "fit": fit, "kl_at_true": at_true}


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


@dataclass(frozen=True)
class PriorResult:
    """Static and behavioural estimates of the prior over targets and periods, against the true prior."""

    name: str
    periods: tuple[int, ...]
    true_target: list[float]
    true_period: list[float]
    static_target: dict[str, list[float]]
    """estimator → ``[vocab]`` estimate (inverted from the output distribution)."""
    static_target_raw: dict[str, list[float]]
    """estimator → ``[vocab]`` output distribution of that path, before inversion."""
    static_period: dict[str, list[float]]
    """estimator → ``[period]``"""
    behavioural_target: dict[str, list[float]]
    """``first_position`` and ``fit`` → ``[vocab]``"""
    behavioural_period: dict[str, list[float]]
    """``fit`` → ``[period]``"""
    scores: dict[str, dict[str, dict[str, float]]]
    """``"target"``/``"period"`` → estimate (``static/NAME``, ``behavioural/NAME``, ``untrained/static/NAME``, …)
    → ``{"corr", "kl", "corr_behavioural"}`` (the last: correlation with the behavioural fit)."""
    fit: dict[str, float]
    """``kl`` at the fitted priors, ``kl_uniform`` at uniform priors, ``kl_at_true`` at the task's priors,
    ``iterations``."""
    n_sequences: int
    n_positions: int
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in ("periods", "true_target", "true_period", "static_target", "static_target_raw",
                                              "static_period", "behavioural_target", "behavioural_period", "scores", "fit",
                                              "n_sequences", "n_positions")}  # fmt: skip

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()
        fig, axes = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [len(self.true_target), len(self.periods) + 1]})
        panels = (
            (axes[0], "target", [str(v) for v in range(len(self.true_target))], self.true_target, self.static_target, self.behavioural_target),
            (axes[1], "period", [str(n) for n in self.periods], self.true_period, self.static_period, self.behavioural_period),
        )
        for ax, what, labels, truth, static, behavioural in panels:
            bars = [("true prior", truth)] + [(f"static {k}", v) for k, v in static.items()] + [(f"behavioural {k}", v) for k, v in behavioural.items()]
            width = 0.85 / len(bars)
            x = np.arange(len(labels))
            for index, (label, values) in enumerate(bars):
                colour = "#000000" if index == 0 else OKABE_ITO[(index - 1) % 7]
                score = self.scores[what].get(label.replace(" ", "/"), {})
                corr = score.get("corr", float("nan"))
                suffix = "" if index == 0 else f" (r={corr:.2f}, KL={score.get('kl', float('nan')):.3f})" if np.isfinite(corr) else f" (r undefined: uniform; KL={score.get('kl', float('nan')):.3f})"
                ax.bar(x + (index - (len(bars) - 1) / 2) * width, values, width, color=colour, label=label + suffix,
                       hatch="//" if label.startswith("behavioural") else None, edgecolor="white" if index else None)  # fmt: skip
            ax.set_xticks(x, labels)
            ax.set_xlabel(what)
            ax.set_ylabel("probability")
            ax.set_title(f"prior over {what}s: true, static (weights only), behavioural", fontsize=9)
            ax.legend(fontsize=7, frameon=False, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)
        fig.tight_layout()
        return save_figure(fig, folder, "prior")


def prior(run, n_sequences: int = 2048, seed: int = 0, target_estimator: str = "mean_input", period_estimator: str = "qk_pos_ov") -> PriorResult:
    """Static (weights only) and behavioural priors of ``run.model`` over targets and periods, compared with the
    true prior of ``run.task``, and the same for the model at its initialization; see the module docstring."""
    why = prior_applies(run)
    if why is not None:
        raise ValueError(f"the prior analysis does not apply: {why}")
    for name, table in ((target_estimator, TARGET_ESTIMATORS), (period_estimator, PERIOD_ESTIMATORS)):
        if name not in table:
            raise ValueError(f"unknown estimator {name!r}; choose one of {', '.join(table)}")
    task: NRecurrence = run.task
    n_positions = min(2 * task.max_period, run.model.config.n_ctx)
    truth = {"target": task.target_probs, "period": task.period_probs}

    estimates: dict[str, dict[str, np.ndarray]] = {"target": {}, "period": {}}
    models = {"": run.model, "untrained/": build_model(run.config)}
    raw_targets = {}
    fits = {}
    for prefix, model in models.items():
        targets, periods, raw = static_priors(model, task)
        if not prefix:
            raw_targets = raw
        estimates["target"].update({f"{prefix}static/{k}": v for k, v in targets.items()})
        estimates["period"].update({f"{prefix}static/{k}": v for k, v in periods.items()})
        behaviour = _behavioural(model, task, n_sequences, n_positions, seed)
        fits[prefix] = behaviour
        estimates["target"][f"{prefix}behavioural/first_position"] = behaviour["first_position"]
        estimates["target"][f"{prefix}behavioural/fit"] = behaviour["fit"].target
        estimates["period"][f"{prefix}behavioural/fit"] = behaviour["fit"].period

    scores = {}
    for what, table in estimates.items():
        scores[what] = {}
        for label, values in table.items():
            prefix = "untrained/" if label.startswith("untrained/") else ""
            behavioural = table[f"{prefix}behavioural/fit"]
            scores[what][label] = {**compare(truth[what], values), "corr_behavioural": compare(behavioural, values)["corr"]}

    headline = {}
    chosen = {"target": target_estimator, "period": period_estimator}
    for what in ("target", "period"):
        for prefix, key in (("", ""), ("untrained/", "untrained_")):
            static = scores[what].get(f"{prefix}static/{chosen[what]}")
            behavioural = scores[what][f"{prefix}behavioural/fit"]
            if static is not None:
                headline[f"{key}static_{what}_corr"] = static["corr"]
                headline[f"{key}static_{what}_kl"] = static["kl"]
                headline[f"{key}static_vs_behavioural_{what}_corr"] = static["corr_behavioural"]
            headline[f"{key}behavioural_{what}_corr"] = behavioural["corr"]
            headline[f"{key}behavioural_{what}_kl"] = behavioural["kl"]
    for what in ("target", "period"):
        for label, score in scores[what].items():
            if label.startswith("static/") or label == "behavioural/first_position":
                headline[f"{label.split('/')[0]}_{what}_corr/{label.split('/')[1]}"] = score["corr"]
                headline[f"{label.split('/')[0]}_{what}_kl/{label.split('/')[1]}"] = score["kl"]
    fit = fits[""]["fit"]
    headline["fit_kl"] = fit.kl
    headline["fit_kl_at_true"] = fits[""]["kl_at_true"]

    plain = lambda what, kind: {k.split("/", 1)[1]: v.tolist() for k, v in estimates[what].items() if k.startswith(kind + "/")}
    return PriorResult(
        name="prior",
        periods=tuple(task.periods),
        true_target=truth["target"].tolist(),
        true_period=truth["period"].tolist(),
        static_target=plain("target", "static"),
        static_target_raw={k: v.tolist() for k, v in raw_targets.items()},
        static_period=plain("period", "static"),
        behavioural_target=plain("target", "behavioural"),
        behavioural_period=plain("period", "behavioural"),
        scores=scores,
        fit={"kl": fit.kl, "kl_uniform": fit.kl_start, "kl_at_true": fits[""]["kl_at_true"], "iterations": fit.iterations},
        n_sequences=n_sequences,
        n_positions=n_positions,
        headline=headline,
    )


register_analysis(
    "prior",
    applies=prior_applies,
    description="the model's prior over targets and periods read from its weights alone (static) and from its "
    "first predictions (behavioural), against the task's true prior",
)(prior)
