"""Probes: can the observer's posterior be read from the model's activations?

A probe is a small model fitted from the residual stream at one hook point (or
all of them concatenated) to a quantity the exact observer computes for the
same prefix: for n-recurrence the marginals over period and target, the
probability that the next position is a target position, the joint over
(period, countdown) and the predictive; for an HMM the belief over states; for
modular arithmetic the posterior marginals over ``a`` and ``b``. The linear
probe is ridge regression in closed form; the non-linear one a one-hidden-layer
MLP with a softmax output for distributions (scored by R² and by KL), fitted at
the best linear hook and at every layer output. Sequences,
not positions, are split into training and held-out sets, so a probe never sees
any position of a sequence it is scored on.

How to read it: held-out R² near 1 means the quantity is linearly present at
that hook. Two baselines keep the number honest: the same probe on a freshly
initialized model of the same shape (what the architecture gives for free) and
on shuffled targets (≈ 0). A gap between the MLP and the linear probe says the
quantity is there but not linearly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from nrecur.analysis.base import OKABE_ITO, progress_bar, pyplot, residual_activations, save_figure
from nrecur.analysis.legacy import register_analysis
from nrecur.model import GPT
from nrecur.tasks import HMMTask, NRecurrence, Task
from nrecur.tasks.modular import ModularICL

CONCAT = "concat"
"""Name of the probe input that concatenates every residual hook point."""


# ---------------------------------------------------------------------------- what to probe for


def _nrecurrence_targets(task: NRecurrence, post) -> dict[str, np.ndarray]:
    B, L = post.period.shape[:2]
    cells = [k * task.max_period + c for k, n in enumerate(task.periods) for c in range(n)]
    return {
        "period": post.period,
        "target": post.target,
        "next_is_target": post.p_target_next[..., None],
        "countdown": post.countdown.reshape(B, L, -1)[..., cells],
        "predictive": post.predictive,
    }


PROBE_TARGETS: dict[type, Callable[[Task, object], dict[str, np.ndarray]]] = {
    NRecurrence: _nrecurrence_targets,
    HMMTask: lambda task, post: {"belief": post.belief, "predictive": post.predictive},
    ModularICL: lambda task, post: {"a": post.a, "b": post.b, "predictive": post.predictive},
}
"""Task class → ``fn(task, posterior) -> {quantity: [batch, pos, k]}`` (distributions over k, or k = 1)."""


def probe_targets(task: Task, post) -> dict[str, np.ndarray]:
    for cls in type(task).__mro__:
        if cls in PROBE_TARGETS:
            return {name: np.asarray(value, dtype=np.float64) for name, value in PROBE_TARGETS[cls](task, post).items()}
    raise ValueError(f"probes do not know the posterior quantities of task kind {task.kind!r}")


# ---------------------------------------------------------------------------- the probes


def split_sequences(n_sequences: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out *sequences* (a sequence is wholly on one side)."""
    order = np.random.default_rng(seed).permutation(n_sequences)
    cut = max(1, int(round(n_sequences * (1 - held_out))))
    return np.sort(order[:cut]), np.sort(order[cut:])


def r2_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Variance-weighted R² over all output dimensions: ``1 - SSE / SST`` (rows ``[n, k]``)."""
    sst = float(((truth - truth.mean(0)) ** 2).sum())
    return float(1.0 - ((truth - predicted) ** 2).sum() / sst) if sst > 0 else float("nan")


@dataclass(frozen=True)
class RidgeProbe:
    """``y ≈ (x - mean) @ weight + bias``, fitted in closed form."""

    mean: np.ndarray
    weight: np.ndarray
    bias: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alpha: float = 1e-3) -> "RidgeProbe":
        """``x [n, d_model]``, ``y [n, k]``; ``alpha`` scales the penalty with the mean feature variance."""
        x = x.astype(np.float64)
        mean = x.mean(0)
        xc = x - mean
        gram = xc.T @ xc
        penalty = alpha * np.trace(gram) / max(1, gram.shape[0])
        weight = np.linalg.solve(gram + penalty * np.eye(gram.shape[0]), xc.T @ (y - y.mean(0)))
        return cls(mean=mean, weight=weight, bias=y.mean(0))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return (x.astype(np.float64) - self.mean) @ self.weight + self.bias


@dataclass(frozen=True)
class MLPProbe:
    """A one-hidden-layer MLP (64 GELU units) on standardized inputs; softmax output for distributions."""

    mean: np.ndarray
    std: np.ndarray
    net: torch.nn.Module
    distribution: bool

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, distribution: bool, steps: int = 300, seed: int = 0) -> "MLPProbe":
        """Adam, full batch. Distributions are trained by cross-entropy against the target distribution (KL
        up to a constant), single values by squared error."""
        generator = torch.Generator().manual_seed(seed)
        mean, std = x.mean(0), x.std(0) + 1e-6
        xt = torch.as_tensor((x - mean) / std, dtype=torch.float32)
        yt = torch.as_tensor(y, dtype=torch.float32)
        hidden = 64
        net = torch.nn.Sequential(torch.nn.Linear(xt.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, yt.shape[1]))
        with torch.no_grad():
            for layer in (net[0], net[2]):
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) / layer.weight.shape[1] ** 0.5)
                layer.bias.zero_()
        optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
        for _ in range(steps):
            out = net(xt)
            loss = -(yt * torch.log_softmax(out, -1)).sum(-1).mean() if distribution else ((out - yt) ** 2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return cls(mean=mean, std=std, net=net.eval(), distribution=distribution)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.net(torch.as_tensor((x - self.mean) / self.std, dtype=torch.float32))
        return (torch.softmax(out, -1) if self.distribution else out).double().numpy()


MLP_ROWS = 20000
"""The most training positions an MLP probe is fitted on (a random subset when there are more)."""


def mlp_probe_on(x: np.ndarray, y: np.ndarray, train_seq: np.ndarray, seed: int = 0, max_rows: int = MLP_ROWS) -> MLPProbe:
    """An :class:`MLPProbe` from ``x [batch, pos, d]`` to ``y [batch, pos, k]`` fitted on (at most ``max_rows``
    random) positions of the ``train_seq`` sequences."""
    x_train = x[train_seq].reshape(-1, x.shape[-1])
    rows = np.random.default_rng(seed).choice(len(x_train), size=min(max_rows, len(x_train)), replace=False)
    return MLPProbe.fit(x_train[rows], y[train_seq].reshape(-1, y.shape[-1])[rows], distribution=y.shape[-1] > 1, seed=seed)


def _mlp_predictions(x: np.ndarray, y: np.ndarray, train_seq: np.ndarray, test_seq: np.ndarray, seed: int, rows: int) -> np.ndarray:
    """Held-out predictions ``[n, k]`` of :func:`mlp_probe_on`."""
    return mlp_probe_on(x, y, train_seq, seed, rows).predict(x[test_seq].reshape(-1, x.shape[-1]))


def kl_rows(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p ‖ q) over rows of distributions ``[n, k]`` (q clipped away from 0)."""
    q = np.clip(q, 1e-12, None)
    q = q / q.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return float(terms.sum(-1).mean())


def probe_inputs(model: GPT, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """``{hook: [batch, pos, d_model]}`` at every residual hook point, plus ``concat`` (all of them side by side)."""
    acts = residual_activations(model, tokens)
    acts[CONCAT] = np.concatenate(list(acts.values()), axis=-1)
    return acts


def ridge_r2_table(
    acts: dict[str, np.ndarray], targets: dict[str, np.ndarray], train_seq: np.ndarray, test_seq: np.ndarray
) -> dict[str, dict[str, float]]:
    """quantity → hook → held-out R² of a ridge probe fitted on the ``train_seq`` sequences.

    The same as a :class:`RidgeProbe` per quantity and hook (the penalty does not depend on the target), but
    with one Gram matrix and one solve per hook for all quantities side by side.
    """
    names = list(targets)
    widths = [targets[q].shape[-1] for q in names]
    y = np.concatenate([targets[q] for q in names], axis=-1)
    y_train, y_test = y[train_seq].reshape(-1, y.shape[-1]), y[test_seq].reshape(-1, y.shape[-1])
    columns = np.split(np.arange(y.shape[-1]), np.cumsum(widths)[:-1])
    table: dict[str, dict[str, float]] = {q: {} for q in names}
    for hook, x in acts.items():
        predicted = RidgeProbe.fit(x[train_seq].reshape(-1, x.shape[-1]), y_train).predict(x[test_seq].reshape(-1, x.shape[-1]))
        for quantity, cols in zip(names, columns):
            table[quantity][hook] = r2_score(y_test[:, cols], predicted[:, cols])
    return table


def best_single_hook(scores: dict[str, float]) -> str:
    """The hook point (not ``concat``) with the highest score."""
    return max((h for h in scores if h != CONCAT), key=lambda h: scores[h])


def best_hooks(acts: dict[str, np.ndarray], targets: dict[str, np.ndarray], train_seq: np.ndarray, seed: int) -> dict[str, str]:
    """quantity → the hook point (not ``concat``) whose ridge probe scores best on a validation fifth of the
    ``train_seq`` sequences, fitted on the rest. The held-out sequences play no part in the choice, so the
    R² reported for the chosen hook is not the best of several held-out scores."""
    fit, validation = _validation_split(train_seq, seed)
    table = ridge_r2_table({hook: x for hook, x in acts.items() if hook != CONCAT}, targets, fit, validation)
    return {quantity: best_single_hook(scores) for quantity, scores in table.items()}


def _validation_split(train_seq: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The training sequences split 80/20 into fitting and validation sequences."""
    fit, validation = split_sequences(len(train_seq), 0.2, seed + 2)
    return train_seq[fit], train_seq[validation]


@dataclass(frozen=True)
class ChosenProbe:
    """The probe that reads a quantity best: where, which kind, its held-out R², and the fitted probe."""

    hook: str
    kind: str
    """``linear`` or ``mlp``."""
    r2: float
    probe: RidgeProbe | MLPProbe

    def predict(self, acts: dict[str, np.ndarray]) -> np.ndarray:
        """``acts`` as :func:`probe_inputs` gives them → ``[batch, pos, k]``."""
        x = acts[self.hook]
        return self.probe.predict(x.reshape(-1, x.shape[-1])).reshape(*x.shape[:2], -1)


def choose_probe(
    acts: dict[str, np.ndarray], y: np.ndarray, train_seq: np.ndarray, test_seq: np.ndarray, mlp: bool = True, seed: int = 0,
    mlp_rows: int = MLP_ROWS,
) -> ChosenProbe:
    """The best probe for ``y [batch, pos, k]``: ridge at every hook (``concat`` included) and, with ``mlp``, the
    MLP (fitted on at most ``mlp_rows`` positions) at the best ridge hook, chosen by R² on a validation fifth of
    the ``train_seq`` sequences and fitted on the rest; ``r2`` is the chosen probe's R² on the ``test_seq``
    sequences."""
    fit, validation = _validation_split(train_seq, seed)
    y_val = y[validation].reshape(-1, y.shape[-1])
    flat = lambda x, rows: x[rows].reshape(-1, x.shape[-1])  # noqa: E731
    candidates = []
    for hook, x in acts.items():
        probe = RidgeProbe.fit(flat(x, fit), flat(y, fit))
        candidates.append((r2_score(y_val, probe.predict(flat(x, validation))), hook, "linear", probe))
    best = max(candidates, key=lambda c: c[0])
    if mlp:
        probe = mlp_probe_on(acts[best[1]], y, fit, seed, mlp_rows)
        candidates.append((r2_score(y_val, probe.predict(flat(acts[best[1]], validation))), best[1], "mlp", probe))
        best = max(candidates, key=lambda c: c[0])
    _, hook, kind, probe = best
    return ChosenProbe(hook=hook, kind=kind, r2=r2_score(flat(y, test_seq), probe.predict(flat(acts[hook], test_seq))), probe=probe)


# ---------------------------------------------------------------------------- the analysis


@dataclass(frozen=True)
class ProbeResult:
    """Held-out R² (and KL for distributions) of probes from every residual hook point to every quantity."""

    name: str
    hooks: tuple[str, ...]
    """Probe inputs: each residual hook point, then ``concat``."""
    quantities: tuple[str, ...]
    r2_linear: dict[str, dict[str, float]]
    """quantity → hook → held-out R² of the ridge probe."""
    r2_random_init: dict[str, dict[str, float]]
    """The same on a freshly initialized model of the same shape."""
    r2_shuffled: dict[str, float]
    """quantity → R² of the ridge probe at the best hook fitted to shuffled targets (≈ 0)."""
    r2_mlp: dict[str, float]
    """quantity → held-out R² of the MLP probe at the best linear hook."""
    kl_mlp: dict[str, float]
    """distribution quantity → mean KL(observer ‖ MLP probe) on held-out positions (nats)."""
    r2_mlp_by_layer: dict[str, dict[str, float]]
    """quantity (all but the predictive) → layer output (``embed`` and each block's ``hook_resid_post``) →
    held-out R² of the MLP probe there: which layer holds it, linearly or not."""
    best_hook: dict[str, str]
    r2_by_position: dict[str, list[float]]
    """quantity → held-out R² of the ridge probe at the best hook, per position."""
    scatter: dict[str, dict[str, list[float]]]
    """quantity → {"truth", "linear"}: a sample of held-out values (the first component) for the figure."""
    step: int
    n_sequences: int
    mlp_rows: int | None = MLP_ROWS
    """The most positions each MLP probe was fitted on (None: no MLP probes)."""
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "step": self.step,
            "n_sequences": self.n_sequences,
            "mlp_rows": self.mlp_rows,
            "hooks": list(self.hooks),
            "quantities": list(self.quantities),
            "best_hook": self.best_hook,
            "r2_linear": self.r2_linear,
            "r2_random_init": self.r2_random_init,
            "r2_shuffled": self.r2_shuffled,
            "r2_mlp": self.r2_mlp,
            "kl_mlp": self.kl_mlp,
            "r2_mlp_by_layer": self.r2_mlp_by_layer,
            "r2_by_position": self.r2_by_position,
            "scatter": self.scatter,
        }

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()

        paths = []
        panels = [("linear, trained model", self.r2_linear), ("linear, random init", self.r2_random_init)]
        if self.r2_mlp:
            mlp = {q: {**self.r2_mlp_by_layer.get(q, {}), self.best_hook[q]: r2} for q, r2 in self.r2_mlp.items()}
            panels.append(("MLP, trained model\n(layer outputs and the best linear hook)", mlp))
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 0.45 * len(self.hooks) + 2), sharey=True)
        for ax, (title, table) in zip(axes, panels):
            grid = np.array([[table.get(q, {}).get(h, np.nan) for q in self.quantities] for h in self.hooks], dtype=float)
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
            ax.set_xticks(range(len(self.quantities)), self.quantities, rotation=30, ha="right")
            ax.set_yticks(range(len(self.hooks)), self.hooks)
            ax.set_title(f"held-out R²: {title}", fontsize=10)
            for (i, j), value in np.ndenumerate(grid):
                if not np.isnan(value):
                    ax.text(j, i, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black", fontsize=8)
        fig.colorbar(image, ax=axes, shrink=0.8, label="R²")
        paths += save_figure(fig, folder, "probes_r2")

        fig, axes = plt.subplots(1, len(self.quantities), figsize=(3.2 * len(self.quantities), 3.2), squeeze=False)
        for ax, quantity in zip(axes[0], self.quantities):
            data = self.scatter[quantity]
            ax.scatter(data["truth"], data["linear"], s=3, alpha=0.3, color="#0072B2")
            ax.plot([0, 1], [0, 1], color="#999999", lw=1)
            ax.set_xlabel("observer (probability)")
            ax.set_ylabel("linear probe")
            ax.set_title(f"{quantity} @ {self.best_hook[quantity]}\nR² {self.r2_linear[quantity][self.best_hook[quantity]]:.3f}", fontsize=9)
        fig.tight_layout()
        paths += save_figure(fig, folder, "probes_scatter")

        fig, ax = plt.subplots(figsize=(6, 3.5))
        for colour, quantity in zip(OKABE_ITO * 2, self.quantities):
            ax.plot(self.r2_by_position[quantity], color=colour, label=quantity)
        ax.set_xlabel("position (having seen tokens 0..i)")
        ax.set_ylabel("held-out R² (best hook)")
        ax.set_ylim(-0.1, 1.02)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        paths += save_figure(fig, folder, "probes_by_position")
        return paths


def _applies(run) -> str | None:
    if not any(cls in PROBE_TARGETS for cls in type(run.task).__mro__):
        return f"probes do not know the posterior quantities of task kind {run.task.kind!r}"
    return None


def probes(
    run, n_sequences: int = 2048, seed: int = 0, held_out: float = 0.2, mlp: bool = True, mlp_rows: int = MLP_ROWS, show_progress: bool = False
) -> ProbeResult:
    """Probe every residual hook point of ``run.model`` (and all of them concatenated) for every posterior
    quantity of ``run.task`` on ``n_sequences`` fresh sequences; see the module docstring. The MLP probes are
    fitted on at most ``mlp_rows`` positions (they take most of the time: fewer rows, faster and a little
    weaker — on the quick deterministic run, R² of the period 0.82 at 20,000 rows, 0.79 at 8,000)."""
    task, length = run.task, run.config.length
    sample = task.sample(n_sequences, length, seed)
    post = task.posterior(sample.tokens)
    targets = probe_targets(task, post)  # {quantity: [batch, pos, k]}
    train_seq, test_seq = split_sequences(n_sequences, held_out, seed)

    acts = probe_inputs(run.model, sample.tokens)
    r2_linear = ridge_r2_table(acts, targets, train_seq, test_seq)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed + 1)
        fresh = GPT(run.model.config).to(next(run.model.parameters()).device)
    r2_random = ridge_r2_table(probe_inputs(fresh, sample.tokens), targets, train_seq, test_seq)
    hooks = tuple(acts)
    rng = np.random.default_rng(seed)
    chosen_hooks = best_hooks(acts, targets, train_seq, seed)
    best_hook, r2_shuffled, r2_mlp, kl_mlp, by_position, scatter, r2_mlp_by_layer = {}, {}, {}, {}, {}, {}, {}
    layer_outputs = ["embed", *(f"blocks.{layer}.hook_resid_post" for layer in range(run.model.config.n_layers))]
    for quantity, y in progress_bar(targets.items(), "probes: MLP per quantity", show_progress, total=len(targets)):
        hook = best_hook[quantity] = chosen_hooks[quantity]
        x = acts[hook]
        x_train, x_test = x[train_seq].reshape(-1, x.shape[-1]), x[test_seq].reshape(-1, x.shape[-1])
        y_train, y_test = y[train_seq].reshape(-1, y.shape[-1]), y[test_seq].reshape(-1, y.shape[-1])
        probe = RidgeProbe.fit(x_train, y_train)
        predicted = probe.predict(x_test)
        shuffled = RidgeProbe.fit(x_train, y_train[rng.permutation(len(y_train))])
        r2_shuffled[quantity] = r2_score(y_test, shuffled.predict(x_test))
        per_position = predicted.reshape(len(test_seq), length, -1)
        truth = y[test_seq]
        by_position[quantity] = [r2_score(truth[:, i], per_position[:, i]) for i in range(length)]
        shown = rng.choice(len(y_test), size=min(2000, len(y_test)), replace=False)
        scatter[quantity] = {"truth": y_test[shown, 0].tolist(), "linear": predicted[shown, 0].tolist()}
        if mlp:
            predictions = {hook: _mlp_predictions(x, y, train_seq, test_seq, seed, mlp_rows)}
            if quantity != "predictive":
                for layer in layer_outputs:
                    if layer not in predictions:
                        predictions[layer] = _mlp_predictions(acts[layer], y, train_seq, test_seq, seed, mlp_rows)
                r2_mlp_by_layer[quantity] = {layer: r2_score(y_test, predictions[layer]) for layer in layer_outputs}
            r2_mlp[quantity] = r2_score(y_test, predictions[hook])
            if y.shape[-1] > 1:
                kl_mlp[quantity] = kl_rows(y_test, predictions[hook])
    headline = {}
    for quantity in targets:
        headline[f"r2_linear/{quantity}"] = r2_linear[quantity][best_hook[quantity]]
        headline[f"r2_linear_concat/{quantity}"] = r2_linear[quantity][CONCAT]
        if quantity in r2_mlp:
            headline[f"r2_mlp/{quantity}"] = r2_mlp[quantity]
        headline[f"r2_random_init/{quantity}"] = r2_random[quantity][best_single_hook(r2_random[quantity])]
        headline[f"r2_shuffled/{quantity}"] = r2_shuffled[quantity]
    return ProbeResult(
        name="probes",
        hooks=hooks,
        quantities=tuple(targets),
        r2_linear=r2_linear,
        r2_random_init=r2_random,
        r2_shuffled=r2_shuffled,
        r2_mlp=r2_mlp,
        kl_mlp=kl_mlp,
        r2_mlp_by_layer=r2_mlp_by_layer,
        best_hook=best_hook,
        r2_by_position=by_position,
        scatter=scatter,
        step=run.step,
        n_sequences=n_sequences,
        mlp_rows=mlp_rows if mlp else None,
        headline=headline,
    )


# ---------------------------------------------------------------------------- over training


@dataclass(frozen=True)
class ProbeTrainingResult:
    """Held-out R² of ridge probes at every saved checkpoint (``--checkpoints all``)."""

    name: str
    steps: tuple[int, ...]
    quantities: tuple[str, ...]
    r2_best: dict[str, list[float]]
    """quantity → per checkpoint, the best single hook's held-out R²."""
    r2_concat: dict[str, list[float]]
    """quantity → per checkpoint, the held-out R² from all hooks concatenated."""
    n_sequences: int
    headline: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {
            "steps": list(self.steps),
            "quantities": list(self.quantities),
            "r2_best": self.r2_best,
            "r2_concat": self.r2_concat,
            "n_sequences": self.n_sequences,
        }

    def plot(self, folder: Path) -> list[Path]:
        plt = pyplot()

        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        steps = np.maximum(np.asarray(self.steps), 1)  # step 0 drawn at 1 on the log axis
        for colour, quantity in zip(OKABE_ITO * 2, self.quantities):
            ax.plot(steps, self.r2_best[quantity], color=colour, marker="o", ms=3, label=f"{quantity} (best hook)")
            ax.plot(steps, self.r2_concat[quantity], ls="--", color=colour, lw=1)
        ax.set_xscale("log")
        ax.set_xlabel("training step (log)")
        ax.set_ylabel("held-out R² (dashed: all hooks)")
        ax.set_ylim(-0.05, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        return save_figure(fig, folder, "probes_over_training")


def probes_over_training(
    run, steps, load, n_sequences: int = 2048, seed: int = 0, held_out: float = 0.2, show_progress: bool = False
) -> ProbeTrainingResult:
    """Ridge probes (every hook, and concatenated) at each checkpoint step; ``load(step)`` gives that step's run.

    The same sequences and split at every step, so the curves differ only by the weights.
    """
    task, length = run.task, run.config.length
    sample = task.sample(n_sequences, length, seed)
    targets = probe_targets(task, task.posterior(sample.tokens))
    train_seq, test_seq = split_sequences(n_sequences, held_out, seed)
    best = {q: [] for q in targets}
    concat = {q: [] for q in targets}
    for step in progress_bar(steps, "probes over training", show_progress):
        acts = probe_inputs(load(step).model, sample.tokens)
        scores, hooks = ridge_r2_table(acts, targets, train_seq, test_seq), best_hooks(acts, targets, train_seq, seed)
        for quantity in targets:
            best[quantity].append(scores[quantity][hooks[quantity]])
            concat[quantity].append(scores[quantity][CONCAT])
    headline = {f"r2_final/{q}": best[q][-1] for q in targets}
    headline["checkpoints"] = float(len(steps))
    return ProbeTrainingResult(
        name="probes_over_training",
        steps=tuple(steps),
        quantities=tuple(targets),
        r2_best=best,
        r2_concat=concat,
        n_sequences=n_sequences,
        headline=headline,
    )


register_analysis(
    "probes",
    applies=_applies,
    description="linear and MLP probes from the residual stream to the observer's posterior",
    over_training=probes_over_training,
)(probes)
