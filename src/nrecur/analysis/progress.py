"""Progress measures: what changes inside the model while it learns, checkpoint by checkpoint.

Following the grokking progress-measures work, we follow a run over its saved
(log-spaced) checkpoints with measures that can move before the loss does
(SPEC §5): the total squared weight norm, the training loss and the held-out
loss and KL(observer ‖ model) from the run's own log; at every checkpoint, on
fresh sequences of the run's task, the model's cross-entropy, the best head's
period score for every period (the heads analysis), the held-out R² of ridge
probes for the period and the target (the probes analysis), and two losses
built from the mechanism. The *period heads* are identified once, at the last
checkpoint (heads that beat the uniform baseline by ``margin`` on some period;
at least the best head per period). The **restricted loss** keeps only them: the
``z`` of every other head is replaced by its mean over the sequences at that
position (mean ablation). The **excluded loss** mean-ablates the period heads
and keeps the rest. The memorization and threshold (KL ≤ kl_threshold) steps of the run are marked.

How to read it: a mechanism that forms gradually shows as period scores and
probe R² rising and the restricted loss falling before the test loss drops; a
restricted loss near the clean loss says the period heads carry the solution,
an excluded loss far above it says nothing else does. On finite-mode runs (the
grokking setting) the training loss falls first and the gap to the test loss is
memorization.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from nrecur.analysis.base import OKABE_ITO, cached, plain_log_ticks, progress_bar, pyplot, save_figure
from nrecur.analysis.legacy import register_analysis
from nrecur.analysis.heads import period_heads, score_heads
from nrecur.analysis.probes import best_hooks, probe_inputs, probe_targets, ridge_r2_table, split_sequences
from nrecur.model import GPT
from nrecur.tasks import NRecurrence
from nrecur.train.evaluate import model_log_probs
from nrecur.train.folder import RunFolder
from nrecur.train.interventions import intervention_hooks
from nrecur.train.weights import squared_norms

__all__ = ["ProgressResult", "ablation_hooks", "cross_entropy", "plot_side_by_side", "progress"]

LOGGED = ("weight_norm_sq", "decayed_norm_sq", "train/loss", "eval/model_ce", "eval/kl", "train/model_ce")
"""Curves read from the run's ``metrics.jsonl`` (those it has)."""


def cross_entropy(model: GPT, tokens: np.ndarray) -> float:
    """Mean next-token cross-entropy (nats) of ``model`` on ``tokens [batch, pos]``, every position."""
    tokens_t = torch.as_tensor(np.asarray(tokens), dtype=torch.long)
    log_probs = model_log_probs(model, tokens_t[:, :-1])  # [batch, pos-1, vocab]
    return float(-log_probs.gather(-1, tokens_t[:, 1:, None]).mean())


def ablation_hooks(model: GPT, tokens: np.ndarray, ablated: list[tuple[int, int]]) -> list:
    """Hooks that replace the ``z`` of each ``(layer, head)`` in ``ablated`` by its mean over ``tokens`` at each position."""
    layers = sorted({layer for layer, _ in ablated})
    names = {layer: f"blocks.{layer}.attn.hook_z" for layer in layers}
    means = cached(model, tokens, list(names.values())) if layers else {}
    device = next(model.parameters()).device
    hooks = []
    for layer in layers:
        heads = [head for l, head in ablated if l == layer]
        mean = torch.as_tensor(means[names[layer]].mean(0), device=device)  # [pos, head, d_head]

        def replace(z, hook=None, heads=heads, mean=mean):  # z: [batch, pos, head, d_head]
            z = z.clone()
            z[:, :, heads] = mean[: z.shape[1], heads].to(z.dtype)
            return z

        hooks.append((names[layer], replace))
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


@dataclass(frozen=True)
class ProgressResult:
    """Progress measures at every checkpoint, and the run's logged curves."""

    name: str
    steps: tuple[int, ...]
    period_heads: list[str]
    """``"L.H"``: the heads kept by the restricted loss and ablated by the excluded one."""
    loss: dict[str, list[float]]
    """``clean``, ``restricted``, ``excluded`` → per checkpoint, nats/token on the same fresh sequences."""
    loss_bayes: float
    """The observer's cross-entropy on those sequences (no model does better, up to sampling)."""
    period_score_best: dict[int, list[float]]
    period_baseline: dict[int, float]
    probe_r2: dict[str, list[float]]
    """``period``, ``target`` → per checkpoint, held-out R² of the best single-hook ridge probe."""
    weight_norm_sq: list[float]
    """Per checkpoint, the total squared weight norm."""
    decayed_norm_sq: list[float]
    """Per checkpoint, the squared norm of the weights weight decay acts on (matrices and embeddings): in a
    pre-LayerNorm model it can fall while the total rises with the undecayed LayerNorm scales."""
    logged: dict[str, dict[str, list[float]]]
    """The run's own log: name → steps and values."""
    memorization_step: int | None
    threshold_step: int | None
    """First evaluation with KL ≤ the run's threshold (``summary.json``)."""
    n_sequences: int
    interventions: list[str] = field(default_factory=list)
    """The run's training-time interventions (``describe()`` form); empty: it trained without any."""
    measured_with_interventions: bool = False
    """Whether the measures saw them (each at the checkpoints where it was active) or the bare model."""
    intervention_steps: list[tuple[int, int | None]] = field(default_factory=list)
    """``(start, end)`` of each of :attr:`interventions` (``end`` None: to the end of training)."""
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "steps": list(self.steps),
            "n_sequences": self.n_sequences,
            "interventions": self.interventions,
            "measured_with_interventions": self.measured_with_interventions,
            "intervention_steps": self.intervention_steps,
            "period_heads": self.period_heads,
            "loss": self.loss,
            "loss_bayes": self.loss_bayes,
            "period_score_best": self.period_score_best,
            "period_baseline": self.period_baseline,
            "probe_r2": self.probe_r2,
            "weight_norm_sq": self.weight_norm_sq,
            "decayed_norm_sq": self.decayed_norm_sq,
            "memorization_step": self.memorization_step,
            "threshold_step": self.threshold_step,
            "logged": self.logged,
        }

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()

        steps = np.maximum(np.asarray(self.steps), 1)  # step 0 drawn at 1 on the log axis
        fig, axes = plt.subplots(2, 2, figsize=(11, 7), sharex=True)
        ax = axes[0, 0]
        for colour, name in zip(OKABE_ITO, ("clean", "restricted", "excluded")):
            ax.plot(steps, self.loss[name], color=colour, marker="o", ms=3, label=f"{name} loss")
        ax.axhline(self.loss_bayes, color="#999999", ls=":", label="observer (Bayes)")
        for name, style in (("train/loss", "-"), ("train/model_ce", "--"), ("eval/model_ce", ":")):
            if name in self.logged:
                curve = self.logged[name]
                ax.plot(np.maximum(curve["step"], 1), curve["value"], style, color="#CC79A7", lw=0.8, alpha=0.7, label=name)
        ax.set_ylabel("cross-entropy (nats/token)")
        ax.set_title(f"loss; restricted keeps, excluded ablates heads {', '.join(self.period_heads)}", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[0, 1]
        if "eval/kl" in self.logged:
            curve = self.logged["eval/kl"]
            ax.plot(np.maximum(curve["step"], 1), curve["value"], color="#0072B2", label="held-out KL(observer ‖ model)")
        ax.set_yscale("log")
        ax.set_ylabel("nats/token")
        ax.set_title("held-out KL (from the run's log)", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[1, 0]
        for colour, (n, values) in zip(OKABE_ITO * 2, self.period_score_best.items()):
            ax.plot(steps, values, color=colour, marker="o", ms=3, label=f"period score n={n}")
            ax.axhline(self.period_baseline[n], color=colour, ls=":", lw=0.8)
        for style, (quantity, values) in zip(("--", "-."), self.probe_r2.items()):
            ax.plot(steps, values, style, color="#000000", lw=1, label=f"probe R² {quantity}")
        ax.set_ylim(-0.05, 1.02)
        ax.set_ylabel("score / R²")
        ax.set_title("best head's period score (dotted: uniform) and probe R²", fontsize=9)
        ax.legend(fontsize=7)
        ax = axes[1, 1]
        ax.plot(steps, self.weight_norm_sq, color="#D55E00", marker="o", ms=3, label="all parameters")
        ax.plot(steps, self.decayed_norm_sq, color="#0072B2", marker="s", ms=3, label="decayed: matrices, embeddings")
        ax.set_yscale("log")
        plain_log_ticks(ax.yaxis)
        ax.set_ylabel("squared weight norm (log)")
        ax.set_title("weight norm (biases and LayerNorm scales are not decayed)", fontsize=9)
        ax.legend(fontsize=7)
        for ax in axes.ravel():
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            for step, label in ((self.memorization_step, "memorized"), (self.threshold_step, "KL ≤ threshold")):
                if step is not None:
                    ax.axvline(max(step, 1), color="#555555", ls="--", lw=0.8)
                    ax.annotate(label, (max(step, 1), 0.02), xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="bottom", ha="right")
        for ax in axes[1]:
            ax.set_xlabel("training step (log)")
        fig.tight_layout()
        return save_figure(fig, folder, "progress")


def _applies(run) -> str | None:
    if not isinstance(run.task, NRecurrence):
        return f"needs an n-recurrence task (period heads), not {run.task.kind}"
    if len(run.checkpoint_steps) < 2:
        return "the run has one checkpoint: no training dynamics to follow (train with --log-checkpoints N)"
    return None


@register_analysis("progress", applies=_applies, description="progress measures over the saved checkpoints: losses restricted to and without the period heads, head scores, probes, weight norm")
def progress(run, n_sequences: int = 512, seed: int = 0, margin: float = 0.25, load=None, with_interventions: bool = False, show_progress: bool = False) -> ProgressResult:
    """Progress measures of ``run`` at each saved checkpoint; ``load(step)`` gives that step's run (default:
    :func:`nrecur.load_run` of ``run.path`` on the model's device). The period heads are those of the last
    checkpoint, whichever ``run.step`` was loaded. With ``with_interventions``, every measure at a checkpoint
    sees the model as training saw it there: with the run's interventions active at that step."""
    reason = _applies(run)
    if reason is not None:
        raise ValueError(f"progress does not apply: {reason}")
    if load is None:
        from nrecur.runs import load_run

        device = next(run.model.parameters()).device
        load = lambda step: load_run(run.path, step=step, device=device)  # noqa: E731
    task, length = run.task, run.config.length
    steps = run.checkpoint_steps
    interventions = run.config.train.interventions if with_interventions else ()
    final = run.model if run.step == steps[-1] else load(steps[-1]).model
    with final.hooks(intervention_hooks(interventions, steps[-1])):
        scores = score_heads(final, task, length, n_sequences, seed)
    kept = sorted({head for heads in period_heads(scores, margin).values() for head in heads})
    all_heads = [(layer, head) for layer in range(final.config.n_layers) for head in range(final.config.n_heads)]
    others = [h for h in all_heads if h not in kept]

    sample = task.sample(n_sequences, length, seed)
    post = task.posterior(sample.tokens)
    bayes = float(np.mean(post.log_loss))  # the observer's own [batch, pos-1] log-loss
    targets = {q: y for q, y in probe_targets(task, post).items() if q in ("period", "target")}
    train_seq, test_seq = split_sequences(n_sequences, 0.2, seed)

    loss = {"clean": [], "restricted": [], "excluded": []}
    period_best: dict[int, list[float]] = {}
    probe_r2 = {q: [] for q in targets}
    norms, decayed_norms = [], []
    for step in progress_bar(steps, "progress measures", show_progress):
        model = load(step).model
        total, decayed = squared_norms(model)
        norms.append(total)
        decayed_norms.append(decayed)
        with model.hooks(intervention_hooks(interventions, step)):
            loss["clean"].append(cross_entropy(model, sample.tokens))
            for name, ablated in (("restricted", others), ("excluded", kept)):
                with model.hooks(ablation_hooks(model, sample.tokens, ablated)):
                    loss[name].append(cross_entropy(model, sample.tokens))
            step_scores = score_heads(model, task, length, min(n_sequences, 256), seed)
            for n, values in step_scores.period.items():
                period_best.setdefault(n, []).append(float(values.max()))
            acts = probe_inputs(model, sample.tokens)
        table, hooks = ridge_r2_table(acts, targets, train_seq, test_seq), best_hooks(acts, targets, train_seq, seed)
        for quantity in targets:
            probe_r2[quantity].append(table[quantity][hooks[quantity]])
    summary = RunFolder(run.path).read_summary() or {}
    headline = {
        "loss_clean_final": loss["clean"][-1],
        "loss_restricted_final": loss["restricted"][-1],
        "loss_excluded_final": loss["excluded"][-1],
        "loss_bayes": bayes,
        "n_period_heads": float(len(kept)),
        "checkpoints": float(len(steps)),
    }
    for name in ("memorization_step", "threshold_step"):
        if summary.get(name) is not None:
            headline[name] = float(summary[name])
    return ProgressResult(
        name="progress",
        steps=tuple(steps),
        period_heads=[f"{layer}.{head}" for layer, head in kept],
        loss=loss,
        loss_bayes=bayes,
        period_score_best=period_best,
        period_baseline=scores.baseline,
        probe_r2=probe_r2,
        weight_norm_sq=norms,
        decayed_norm_sq=decayed_norms,
        logged=_logged(run.path),
        memorization_step=summary.get("memorization_step"),
        threshold_step=summary.get("threshold_step"),
        n_sequences=n_sequences,
        interventions=[i.describe() for i in run.config.train.interventions],
        intervention_steps=[(i.start, i.end) for i in run.config.train.interventions],
        measured_with_interventions=with_interventions and bool(interventions),
        headline=headline,
    )


def plot_side_by_side(results: dict[str, ProgressResult], folder: str | Path, stem: str = "progress_side_by_side") -> list[Path]:
    """Progress of several runs in columns (label → result), rows on shared axes: the losses against the
    observer, the held-out KL from each run's log, and the best period scores with the probe R². Steps where
    an intervention was active are shaded."""
    import textwrap

    plt = pyplot()
    fig, axes = plt.subplots(3, len(results), figsize=(4.6 * len(results) + 1, 10), sharex=True, sharey="row", squeeze=False, layout="constrained")
    for column, (label, result) in enumerate(results.items()):
        steps = np.maximum(np.asarray(result.steps), 1)
        ax = axes[0, column]
        for colour, name in zip(OKABE_ITO, ("clean", "restricted", "excluded")):
            ax.plot(steps, result.loss[name], color=colour, marker="o", ms=3, label=f"{name} loss")
        ax.axhline(result.loss_bayes, color="#999999", ls=":", label="observer (Bayes)")
        seen = "measured with them where active" if result.measured_with_interventions else "the bare model measured"
        described = f"{', '.join(result.interventions)} ({seen})" if result.interventions else "no intervention"
        ax.set_title(f"{label}\n" + textwrap.fill(described, 60), fontsize=8)
        ax = axes[1, column]
        if "eval/kl" in result.logged:
            curve = result.logged["eval/kl"]
            ax.plot(np.maximum(curve["step"], 1), curve["value"], color="#0072B2", label="held-out KL (the run's log)")
        ax.set_yscale("log")
        ax = axes[2, column]
        for colour, (n, values) in zip(OKABE_ITO * 2, result.period_score_best.items()):
            ax.plot(steps, values, color=colour, marker="o", ms=3, label=f"best period score, n={n}")
        for style, (quantity, values) in zip(("--", "-."), result.probe_r2.items()):
            ax.plot(steps, values, style, color="#000000", lw=1, label=f"probe R² {quantity}")
        ax.set_ylim(-0.05, 1.02)
        ax.set_xlabel("training step (log)")
        for ax in axes[:, column]:
            ax.set_xscale("log")
            ax.grid(alpha=0.3)
            for start, end in dict.fromkeys(result.intervention_steps):
                ax.axvspan(max(start, 1), end if end is not None else steps[-1], color="#999999", alpha=0.15, lw=0)
            for step, text in ((result.memorization_step, "memorized"), (result.threshold_step, "KL ≤ threshold")):
                if step is not None:
                    ax.axvline(max(step, 1), color="#555555", ls="--", lw=0.8)
                    ax.annotate(text, (max(step, 1), 0.02), xycoords=("data", "axes fraction"), fontsize=7, rotation=90, va="bottom", ha="right")
    axes[0, 0].set_ylabel("cross-entropy (nats/token)")
    axes[1, 0].set_ylabel("KL(observer ‖ model), nats/token")
    axes[2, 0].set_ylabel("best head's period score / R²")
    handles = {}
    for ax in axes[[0, 2], -1]:
        for handle, text in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(text, handle)
    handles["intervention active"] = plt.Rectangle((0, 0), 1, 1, color="#999999", alpha=0.3)
    fig.legend(list(handles.values()), list(handles), loc="outside lower center", ncols=5, fontsize=8)
    return save_figure(fig, folder, stem)
