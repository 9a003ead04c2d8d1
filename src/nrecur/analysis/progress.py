"""Progress measures: what changes inside the model while it learns, checkpoint by checkpoint.

Following the grokking progress-measures work, we follow a run over its saved
(log-spaced) checkpoints up to the one analyzed (the latest, or ``--step``) with
measures that can move before the loss does (SPEC §5): the total squared weight
norm, and at every checkpoint, on fresh
sequences of the run's task, the model's cross-entropy, the best head's period
score for every period (the heads analysis), the held-out R² of ridge probes for
the period and the target (the probes analysis), and two losses built from the
mechanism. The *period heads* are identified once, at the analyzed checkpoint, by
the heads analysis's rule (:func:`nrecur.analysis.heads.period_heads`): each
period's best head, and every other head whose period score beats the uniform
baseline by at least ``margin``. The **restricted loss** keeps only them: the
``z`` of every other head is replaced by its mean over the sequences at that
position (mean ablation). The **excluded loss** mean-ablates the period heads
and keeps the rest. The run's own log (training loss, held-out loss and
KL(observer ‖ model)) and its memorization and threshold (KL ≤ its
``kl_threshold``) steps are drawn beside them.

Every measure is also taken on the run's own initialization (``…_random_init``),
ablating the same heads, and the restricted and excluded losses stand beside
the full model's loss (``…_unablated``): the period heads carry the solution when
the restricted loss stays near the full model's while the excluded loss rises
far above it, and at the initialization all three are alike. The observer's
cross-entropy on the same sequences (``loss_bayes``) is the floor no model
beats. With ``with_interventions`` every measure at a checkpoint sees the model
as training saw it there: with the run's interventions active at that step (the
initialization with those active at step 0).

With ``llc`` the **local learning coefficient** (:mod:`nrecur.analysis.llc`: the
model's effective number of parameters, estimated by SGLD chains started at the
checkpoint) is estimated at every checkpoint and at the initialization, with its
spread over the chains; the loss the chains sample is the model's cross-entropy on
the same fresh sequences. It is drawn beside the loss, the held-out KL and, when the
run's ``strategy`` result exists, the strategy weight ``w``, so that a change in the
model's complexity can be set against a change of strategy.

How to read it: a mechanism that forms gradually shows as period scores and
probe R² rising and the restricted loss falling before the test loss drops. On
finite-mode runs (the grokking setting) the training loss falls first and the
gap to the test loss is memorization.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic
import torch
import torch.nn.functional as F

from nrecur.analysis.base import cached, progress_bar
from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.heads import period_heads, score_heads
from nrecur.analysis.llc import LLCEstimate, SamplerSettings, estimate_llc
from nrecur.analysis.probes import best_hooks, probe_inputs, probe_targets, ridge_r2_table, split_sequences
from nrecur.analysis.strategy import StrategyResult
from nrecur.model import GPT
from nrecur.runs import load_run
from nrecur.tasks import NRecurrence
from nrecur.train.evaluate import model_log_probs
from nrecur.train.interventions import intervention_hooks
from nrecur.train.weights import squared_norms

__all__ = [
    "LLC_DEFAULTS", "Measures", "ProgressOptions", "ProgressResult", "ablation_hooks", "compute", "cross_entropy", "llc_at", "mean_z", "measure",
    "sequence_loss",
]  # fmt: skip

LOGGED = ("weight_norm_sq", "decayed_norm_sq", "train/loss", "eval/model_ce", "eval/kl", "train/model_ce")
"""Curves read from the run's ``metrics.jsonl`` (those it has)."""

PROBED = ("period", "target")
"""The observer's quantities the ridge probes read at every checkpoint."""

LLC_DEFAULTS = SamplerSettings(step_size=3e-5, localization=1.0, nbeta=100.0, chains=4, draws=400, burnin=200, batch_size=32)
"""The LLC sampler's default settings (the ``llc_*`` options), chosen by ``benchmarks/bench_llc_calibration.py``."""


def cross_entropy(model: GPT, tokens: np.ndarray) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` on ``tokens [batch, pos]``, every position."""
    tokens_t = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    log_probs = model_log_probs(model, tokens_t[:, :-1])  # [batch, pos-1, vocab]
    return float(-log_probs.gather(-1, tokens_t[:, 1:, None]).mean())


def mean_z(model: GPT, tokens: np.ndarray, layers: list[int]) -> dict[int, np.ndarray]:
    """layer → ``[pos, head, d_head]``: the mean over ``tokens [batch, pos]`` of each head's ``z`` at each position."""
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    acts = cached(model, tokens, list(names.values())) if layers else {}
    return {layer: acts[name].mean(0) for layer, name in names.items()}


def ablation_hooks(model: GPT, tokens: np.ndarray, ablated: list[tuple[int, int]], means: dict[int, np.ndarray] | None = None) -> list:
    """Hooks for ``model.hooks(...)`` that replace the ``z`` ``[batch, pos, head, d_head]`` of each ``(layer, head)``
    in ``ablated`` by its mean over ``tokens [batch, pos]`` at each position (``means``: :func:`mean_z`'s, if
    computed already)."""
    layers = sorted({layer for layer, _ in ablated})
    means = mean_z(model, tokens, layers) if means is None else means
    device = next(model.parameters()).device
    hooks = []
    for layer in layers:
        heads = [head for l, head in ablated if l == layer]
        mean = torch.as_tensor(means[layer], device=device)  # [pos, head, d_head]

        def replace(z, hook=None, heads=heads, mean=mean):  # z: [batch, pos, head, d_head]
            z = z.clone()
            z[:, :, heads] = mean[: z.shape[1], heads].to(z.dtype)
            return z

        hooks.append((f"blocks.{layer}.attn.hook_z", replace))
    return hooks


def _logged(folder: Path) -> dict[str, dict[str, list[float]]]:
    """name → {"step": [...], "value": [...]} for each of :data:`LOGGED` in ``metrics.jsonl``."""
    curves: dict[str, dict[str, list[float]]] = {}
    path = folder / "metrics.jsonl"
    if not path.exists():
        return curves
    for line in path.read_text().splitlines():
        record = json.loads(line)
        for name in LOGGED:
            if isinstance(record.get(name), (int, float)):
                curves.setdefault(name, {"step": [], "value": []})
                curves[name]["step"].append(record["step"])
                curves[name]["value"].append(float(record[name]))
    return curves


class ProgressOptions(Options):
    n_sequences: int = pydantic.Field(512, ge=8)
    """Fresh sequences of the run's task the losses and probes read at every checkpoint (and the period heads are identified on)."""
    head_sequences: int = pydantic.Field(256, ge=8)
    """Sequences of each kind the head scores read at every checkpoint."""
    margin: float = pydantic.Field(0.25, ge=0, le=1)
    """A head whose period score beats the uniform baseline by at least this is a period head (each period's best head is one whatever its score)."""
    held_out: float = pydantic.Field(0.2, gt=0, lt=1)
    """Share of the sequences the probes are scored on (split by sequence)."""
    with_interventions: bool = False
    """Measure every checkpoint with the run's interventions active at its step (default: the bare model)."""
    llc: bool = False
    """Also estimate the local learning coefficient at every checkpoint and at the initialization (SGLD chains:
    several times the other measures' time, so off unless asked). The sampler's defaults below are those the
    calibration ``benchmarks/bench_llc_calibration.py`` shows recovering a known λ (tests/test_analysis_llc.py)."""
    llc_step_size: float = pydantic.Field(LLC_DEFAULTS.step_size, gt=0)
    """ε: the SGLD step size."""
    llc_localization: float = pydantic.Field(LLC_DEFAULTS.localization, ge=0)
    """γ: the pull of the chains toward the checkpoint's weights."""
    llc_nbeta: float = pydantic.Field(LLC_DEFAULTS.nbeta, gt=0)
    """nβ: the inverse temperature times the number of samples."""
    llc_chains: int = pydantic.Field(LLC_DEFAULTS.chains, ge=1)
    """Independent chains per checkpoint (their spread is the estimate's)."""
    llc_draws: int = pydantic.Field(LLC_DEFAULTS.draws, ge=2)
    """Draws per chain after the burn-in (one per step)."""
    llc_burnin: int = pydantic.Field(LLC_DEFAULTS.burnin, ge=0)
    """Steps dropped at the start of each chain."""
    llc_batch_size: int = pydantic.Field(LLC_DEFAULTS.batch_size, ge=1)
    """Sequences in each SGLD step's minibatch (drawn from the fresh sequences)."""

    @property
    def sampler(self) -> SamplerSettings:
        """The LLC sampler's settings."""
        return SamplerSettings(
            step_size=self.llc_step_size, localization=self.llc_localization, nbeta=self.llc_nbeta, chains=self.llc_chains,
            draws=self.llc_draws, burnin=self.llc_burnin, batch_size=self.llc_batch_size,
        )  # fmt: skip


@dataclass(frozen=True)
class Measures:
    """The progress measures of one model: a checkpoint, or the run's initialization."""

    step: int
    loss: float
    """Cross-entropy of the full model on the fresh sequences (nats/token)."""
    loss_restricted: float
    """The same with every head but the period heads mean-ablated."""
    loss_excluded: float
    """The same with the period heads mean-ablated."""
    period_score: tuple[float, ...]
    """Per period (in the order of :attr:`ProgressResult.periods`), the best head's period score."""
    probe_r2: dict[str, float]
    """``period``, ``target`` → held-out R² of the best single-hook ridge probe."""
    weight_norm_sq: float
    """The total squared weight norm."""
    decayed_norm_sq: float
    """The squared norm of the weights weight decay acts on (matrices and embeddings): in a pre-LayerNorm model it
    can fall while the total rises with the undecayed LayerNorm scales."""


@dataclass(frozen=True)
class ProgressResult(Result):
    """Progress measures at every checkpoint and at the initialization, and the run's logged curves."""

    headline: dict[str, float]
    options: ProgressOptions
    step: int
    """The analyzed checkpoint's step: the last one followed."""
    periods: tuple[int, ...]
    period_heads: tuple[str, ...]
    """``"L.H"``: the heads kept by the restricted loss and ablated by the excluded one."""
    period_baseline: tuple[float, ...]
    """Per period, what uniform attention scores."""
    loss_bayes: float
    """The observer's cross-entropy on the fresh sequences (no model does better, up to sampling)."""
    checkpoints: tuple[Measures, ...]
    """The measures at every saved checkpoint, in order of step."""
    random_init: Measures
    """The same measures on the run's own initialization (the control), ablating the same heads."""
    logged: dict[str, dict[str, list[float]]]
    """The run's own log: name → ``step`` and ``value`` lists."""
    memorization_step: int | None
    threshold_step: int | None
    """First evaluation with KL ≤ the run's threshold (``summary.json``)."""
    interventions: tuple[str, ...] = ()
    """The run's training-time interventions (``describe()`` form); empty: it trained without any."""
    intervention_steps: tuple[tuple[int, int | None], ...] = ()
    """``(start, end)`` of each of :attr:`interventions` (``end`` None: to the end of training)."""
    measured_with_interventions: bool = False
    """Whether the measures saw them (each at the checkpoints where it was active) or the bare model."""
    llc: tuple[LLCEstimate, ...] = ()
    """With the ``llc`` option: the local learning coefficient at every checkpoint (in order of step); else empty."""
    llc_random_init: LLCEstimate | None = None
    """The same at the run's initialization (the control)."""
    strategy_weight: dict[str, dict[str, list[float]]] = dataclasses.field(default_factory=dict)
    """``id``, ``ood`` → ``step``, ``value``: the strategy weight ``w`` over training from the run's ``strategy``
    result, where it was written before (empty: none)."""

    @property
    def steps(self) -> list[int]:
        return [m.step for m in self.checkpoints]

    def series(self, name: str) -> list:
        """One measure at every checkpoint: ``series("loss_restricted")``."""
        return [getattr(m, name) for m in self.checkpoints]


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"needs an n-recurrence task (period heads), not {run.task.kind}"
    if run.model.config.n_layers == 0:
        return "the model has no attention layers: no period heads to keep or ablate"
    if len(followed_steps(run)) < 2:
        return f"the run has one checkpoint up to step {run.step}: no training dynamics to follow (train with --log-checkpoints N)"
    return None


def followed_steps(run) -> list[int]:
    """The saved checkpoints progress follows: those up to the loaded one (``run.step``), so that a result is
    always of the checkpoint it says it is."""
    return [step for step in run.checkpoint_steps if step <= run.step]


def measure(model: GPT, step: int, run, options: ProgressOptions, sample, targets, split, kept, periods) -> Measures:
    """The measures of ``model`` (at ``step``) on ``sample``'s tokens, with the heads ``kept`` as the period heads."""
    tokens = sample.tokens
    all_heads = [(layer, head) for layer in range(model.config.n_layers) for head in range(model.config.n_heads)]
    others = [h for h in all_heads if h not in kept]
    total, decayed = squared_norms(model)
    interventions = run.config.train.interventions if options.with_interventions else ()
    with model.hooks(intervention_hooks(interventions, step)):
        loss = cross_entropy(model, tokens)
        means = mean_z(model, tokens, list(range(model.config.n_layers)))  # one pass for both ablations
        ablated = {}
        for name, heads in (("restricted", others), ("excluded", kept)):
            with model.hooks(ablation_hooks(model, tokens, heads, means)):
                ablated[name] = cross_entropy(model, tokens)
        scores = score_heads(model, run.task, run.config.length, options.head_sequences, options.seed)
        acts = probe_inputs(model, tokens)
    train_seq, test_seq = split
    table, hooks = ridge_r2_table(acts, targets, train_seq, test_seq), best_hooks(acts, targets, train_seq, options.seed)
    return Measures(
        step=step,
        loss=loss,
        loss_restricted=ablated["restricted"],
        loss_excluded=ablated["excluded"],
        period_score=tuple(float(scores.period[n].max()) if n in scores.period else float("nan") for n in periods),
        probe_r2={q: float(table[q][hooks[q]]) for q in targets},
        weight_norm_sq=total,
        decayed_norm_sq=decayed,
    )


def sequence_loss(model: GPT, tokens: torch.Tensor) -> torch.Tensor:
    """``[batch]``: each sequence's mean next-token cross-entropy (nats) under ``model``, ``tokens [batch, pos]``
    (differentiable: the loss the LLC sampler descends)."""
    logits = model(tokens[:, :-1])  # [batch, pos-1, vocab]
    return F.cross_entropy(logits.transpose(1, 2).float(), tokens[:, 1:], reduction="none").mean(-1)


def llc_at(model: GPT, step: int, run, options: ProgressOptions, tokens: np.ndarray) -> LLCEstimate:
    """The LLC of ``model`` (at ``step``) on ``tokens [batch, pos]``, with the run's interventions active at
    ``step`` when ``options.with_interventions``."""
    interventions = run.config.train.interventions if options.with_interventions else ()
    device = next(model.parameters()).device
    pool = (torch.as_tensor(np.asarray(tokens), dtype=torch.long, device=device),)
    with model.hooks(intervention_hooks(interventions, step)), torch.enable_grad():
        return estimate_llc(model, sequence_loss, pool, options.sampler, seed=options.seed)


def _strategy_weight(run) -> dict[str, dict[str, list[float]]]:
    """The strategy weight over the checkpoints up to ``run.step`` from the run's ``strategy`` result of that
    checkpoint (``analysis/`` or ``analysis/step_NNNNNNNN/``), if one was written; else empty."""
    folder = run.path / "analysis"
    for path in (folder / f"step_{run.step:08d}" / "strategy.json", folder / "strategy.json"):
        if path.exists():
            result = StrategyResult.from_json(json.loads(path.read_text()))
            if result.step != run.step:
                continue
            return {split: {"step": result.steps, "value": result.series(split, "w")} for split in ("id", "ood")}
    return {}


def compute(run, options: ProgressOptions) -> ProgressResult:
    """Progress measures of ``run`` at each saved checkpoint up to the loaded one (each loaded on the model's
    device) and on its initialization. The period heads are those of the loaded checkpoint (``run.step``)."""
    reason = _applies(run)
    if reason is not None:
        raise ValueError(f"progress does not apply: {reason}")
    device = next(run.model.parameters()).device
    load = lambda step: load_run(run.path, step=step, device=device).model  # noqa: E731
    task, length, seed = run.task, run.config.length, options.seed
    steps = followed_steps(run)
    interventions = run.config.train.interventions if options.with_interventions else ()
    final = run.model
    with final.hooks(intervention_hooks(interventions, steps[-1])):
        scores = score_heads(final, task, length, options.n_sequences, seed)
    periods = tuple(scores.period)
    kept = sorted({head for heads in period_heads(scores.period, scores.baseline, options.margin).values() for head in heads})

    sample = task.sample(options.n_sequences, length, seed)
    post = task.posterior(sample.tokens)
    bayes = float(np.mean(post.log_loss))  # the observer's own [batch, pos-1] log-loss
    targets = {q: y for q, y in probe_targets(task, post).items() if q in PROBED}
    split = split_sequences(options.n_sequences, options.held_out, seed)
    args = (run, options, sample, targets, split, kept, periods)
    checkpoints, llcs = [], []
    for step in progress_bar(steps, "progress measures", total=len(steps)):
        model = final if step == steps[-1] else load(step)
        checkpoints.append(measure(model, step, *args))
        if options.llc:
            llcs.append(llc_at(model, step, run, options, sample.tokens))
    initial = initial_model(run)
    control = measure(initial, 0, *args)
    llc_control = llc_at(initial, 0, run, options, sample.tokens) if options.llc else None
    last = checkpoints[-1]
    headline = {
        "loss": last.loss,
        "loss_random_init": control.loss,
        "loss_bayes": bayes,
        "loss_restricted": last.loss_restricted,
        "loss_restricted_random_init": control.loss_restricted,
        "loss_restricted_unablated": last.loss,
        "loss_excluded": last.loss_excluded,
        "loss_excluded_random_init": control.loss_excluded,
        "loss_excluded_unablated": last.loss,
        **{f"probe_r2/{q}": last.probe_r2[q] for q in targets},
        **{f"probe_r2_random_init/{q}": control.probe_r2[q] for q in targets},
        "n_period_heads": float(len(kept)),
        "checkpoints": float(len(steps)),
    }
    if options.llc:
        headline.update(llc=llcs[-1].mean, llc_std=llcs[-1].std, llc_random_init=llc_control.mean, llc_std_random_init=llc_control.std)
    summary = run.summary or {}
    for name in ("memorization_step", "threshold_step"):
        if summary.get(name) is not None:
            headline[name] = float(summary[name])
    return ProgressResult(
        headline=headline,
        options=options,
        step=run.step,
        periods=periods,
        period_heads=tuple(f"{layer}.{head}" for layer, head in kept),
        period_baseline=tuple(scores.baseline[n] for n in periods),
        loss_bayes=bayes,
        checkpoints=tuple(checkpoints),
        random_init=control,
        logged=_logged(run.path),
        memorization_step=summary.get("memorization_step"),
        threshold_step=summary.get("threshold_step"),
        interventions=tuple(i.describe() for i in run.config.train.interventions),
        intervention_steps=tuple((i.start, i.end) for i in run.config.train.interventions),
        measured_with_interventions=options.with_interventions and bool(interventions),
        llc=tuple(llcs),
        llc_random_init=llc_control,
        strategy_weight=_strategy_weight(run),
    )


PROGRESS = register(
    Analysis(
        name="progress",
        description="progress measures over the saved checkpoints: losses restricted to and without the period heads, head scores, probes, "
        "weight norm; each beside the run's initialization",
        options=ProgressOptions,
        result=ProgressResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.progress:draw",
    )
)
