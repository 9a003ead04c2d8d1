"""The probes themselves: ridge in closed form, and MLP and softmax probes fitted by Adam — one at a time, or
many side by side as one stacked model.

A probe maps activations ``[n, d]`` (rows: positions) to a quantity ``[n, k]``. The ridge probe is solved
exactly. The MLP probe (one hidden layer of :data:`HIDDEN` GELU units) and the softmax probe (a linear map
then a softmax: multinomial logistic regression on soft targets) read standardized inputs and are fitted
with Adam on minibatches of rows; distributions (``k > 1``) are fitted by cross-entropy against the target
distribution (KL up to a constant) through a softmax output, single values by squared error.

The probes analysis fits hundreds of these (every hook × quantity × model × true or shuffled targets), so
:func:`fit_stacked` fits them all at once: the weights of every probe stacked along a leading ``probe``
axis, one batched matmul per layer, one Adam over the stack. Adam is elementwise and the probes share no
parameter, so this is the same arithmetic as fitting each alone (:class:`MLPProbe`, which
``tests/test_analysis_probes.py`` checks it against): the same initial weights (:func:`initial_weights`),
the same minibatches (:func:`batch_rows`), the same updates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from nrecur.analysis.base import progress_bar

__all__ = [
    "FitRecipe", "HIDDEN", "MLPProbe", "RECIPE", "RidgeProbe", "StackedProbes", "batch_rows", "fit_stacked",
    "initial_weights", "kl_rows", "r2_score",
]  # fmt: skip

HIDDEN = 64
"""Hidden units of an MLP probe."""


@dataclass(frozen=True)
class FitRecipe:
    """How an MLP or softmax probe is fitted: Adam, ``steps`` minibatches of ``batch`` rows (full batch when
    there are fewer rows), constant learning rate ``lr``.

    The default is chosen for cost: hundreds of probes are fitted per call, and on the quick preset's models a
    probe fitted this way reads nearly what full-batch fitting to convergence reads (held-out R² a little
    lower) for a small fraction of the arithmetic (``benchmarks/bench_probes.py`` measures both)."""

    steps: int = 150
    batch: int = 1024
    lr: float = 2e-2


RECIPE = FitRecipe()


def r2_score(truth: np.ndarray, predicted: np.ndarray) -> float:
    """Variance-weighted R² over all output dimensions: ``1 - SSE / SST`` (rows ``[n, k]``)."""
    sst = float(((truth - truth.mean(0)) ** 2).sum())
    return float(1.0 - ((truth - predicted) ** 2).sum() / sst) if sst > 0 else float("nan")


def kl_rows(p: np.ndarray, q: np.ndarray) -> float:
    """Mean KL(p ‖ q) over rows of distributions ``[n, k]`` (q clipped away from 0)."""
    q = np.clip(q, 1e-12, None)
    q = q / q.sum(-1, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
    return float(terms.sum(-1).mean())


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


def initial_weights(d: int, k: int, hidden: int, seed: int) -> list[np.ndarray]:
    """A probe's initial weights, ``[d, hidden], [hidden], [hidden, k], [k]`` (``hidden`` 0: a softmax probe,
    ``[d, k], [k]``): normal with variance 1 / fan-in, biases zero."""
    rng = np.random.default_rng(seed)
    widths = [d, hidden, k] if hidden else [d, k]
    weights = []
    for fan_in, fan_out in zip(widths[:-1], widths[1:]):
        weights += [rng.standard_normal((fan_in, fan_out)) / fan_in**0.5, np.zeros(fan_out)]
    return weights


def batch_rows(n: int, recipe: FitRecipe, seed: int) -> list[np.ndarray]:
    """The rows of each of ``recipe.steps`` minibatches out of ``n`` rows: epochs of a fresh permutation cut
    into batches (every row once per epoch); all ``n`` rows each step when ``n <= recipe.batch``."""
    if n <= recipe.batch:
        return [np.arange(n)] * recipe.steps
    rng = np.random.default_rng(seed + 7)
    rows: list[np.ndarray] = []
    while len(rows) < recipe.steps:
        order = rng.permutation(n)
        rows += [order[start : start + recipe.batch] for start in range(0, n - recipe.batch + 1, recipe.batch)]
    return rows[: recipe.steps]


def _loss(out: torch.Tensor, y: torch.Tensor, distribution: bool) -> torch.Tensor:
    """Cross-entropy against the target distribution (softmax output) or squared error, mean over rows."""
    return -(y * torch.log_softmax(out, -1)).sum(-1).mean() if distribution else ((out - y) ** 2).mean()


@dataclass(frozen=True)
class MLPProbe:
    """One MLP probe (``hidden`` GELU units; ``hidden`` 0: a softmax probe, no hidden layer) on standardized
    inputs; softmax output for distributions. The reference that :func:`fit_stacked` is checked against."""

    mean: np.ndarray
    std: np.ndarray
    net: torch.nn.Module
    distribution: bool

    @classmethod
    def fit(
        cls, x: np.ndarray, y: np.ndarray, distribution: bool, seed: int = 0, hidden: int = HIDDEN, recipe: FitRecipe = RECIPE,
        dtype: torch.dtype = torch.float32,
    ) -> "MLPProbe":
        """``x [n, d]`` → ``y [n, k]``, fitted by ``recipe`` from :func:`initial_weights` (seed ``seed``)."""
        mean, std = x.mean(0), x.std(0) + 1e-6
        xt = torch.as_tensor((x - mean) / std, dtype=dtype)
        yt = torch.as_tensor(y, dtype=dtype)
        layers = [torch.nn.Linear(x.shape[1], hidden), torch.nn.GELU(), torch.nn.Linear(hidden, y.shape[1])] if hidden else [torch.nn.Linear(x.shape[1], y.shape[1])]
        net = torch.nn.Sequential(*layers).to(dtype)
        linears = [layer for layer in net if isinstance(layer, torch.nn.Linear)]
        weights = initial_weights(x.shape[1], y.shape[1], hidden, seed)
        with torch.no_grad():
            for layer, weight, bias in zip(linears, weights[::2], weights[1::2]):
                layer.weight.copy_(torch.as_tensor(weight.T))
                layer.bias.copy_(torch.as_tensor(bias))
        optimizer = torch.optim.Adam(net.parameters(), lr=recipe.lr)
        for rows in batch_rows(len(x), recipe, seed):
            rows = torch.as_tensor(rows)
            loss = _loss(net(xt[rows]), yt[rows], distribution)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return cls(mean=mean, std=std, net=net.eval(), distribution=distribution)

    @torch.no_grad()
    def predict(self, x: np.ndarray) -> np.ndarray:
        dtype = next(self.net.parameters()).dtype
        out = self.net(torch.as_tensor((x - self.mean) / self.std, dtype=dtype))
        return (torch.softmax(out, -1) if self.distribution else out).double().numpy()


@dataclass(frozen=True)
class StackedProbes:
    """Probes fitted side by side by :func:`fit_stacked`; probe ``p`` reads input ``inputs[p]`` and predicts
    target ``targets[p]`` (its first ``widths[targets[p]]`` outputs)."""

    inputs: np.ndarray
    """``[probe]``: which input each probe reads."""
    targets: np.ndarray
    """``[probe]``: which target each probe predicts."""
    widths: tuple[int, ...]
    """Per target, its number of outputs ``k``."""
    distribution: tuple[bool, ...]
    """Per target, whether it is a distribution (softmax output)."""
    mean: torch.Tensor
    """``[input, 1, d]``: the training rows' mean, per input."""
    std: torch.Tensor
    weights: tuple[torch.Tensor, ...]
    """``[probe, d, hidden], [probe, 1, hidden], [probe, hidden, k_max], [probe, 1, k_max]`` (or the softmax
    probe's two)."""

    @torch.no_grad()
    def predict(self, x: np.ndarray, chunk: int = 4096) -> list[np.ndarray]:
        """``x [input, n, d]`` → per probe its predictions ``[n, k]`` (probabilities for distributions)."""
        dtype = self.mean.dtype
        outs = []
        for start in range(0, x.shape[1], chunk):
            xb = (torch.as_tensor(x[:, start : start + chunk], dtype=dtype) - self.mean) / self.std
            outs.append(_forward(self.weights, xb[self.inputs]))
        out = torch.cat(outs, 1)  # [probe, n, k_max]
        predictions = []
        for p, target in enumerate(self.targets):
            values = out[p, :, : self.widths[target]]
            predictions.append((torch.softmax(values, -1) if self.distribution[target] else values).double().numpy())
        return predictions


def _forward(weights, x: torch.Tensor) -> torch.Tensor:
    """``x [probe, n, d]`` → ``[probe, n, k_max]`` (logits for distributions)."""
    if len(weights) == 2:
        return torch.baddbmm(weights[1], x, weights[0])
    hidden = torch.nn.functional.gelu(torch.baddbmm(weights[1], x, weights[0]))
    return torch.baddbmm(weights[3], hidden, weights[2])


def fit_stacked(
    x: np.ndarray, y: list[np.ndarray], pairs: list[tuple[int, int]], seed: int = 0, hidden: int = HIDDEN,
    recipe: FitRecipe = RECIPE, dtype: torch.dtype = torch.float32, describe: str = "probes",
) -> StackedProbes:
    """Fit one probe per ``(input, target)`` in ``pairs`` at once: ``x [input, n, d]`` (the same rows in every
    input), ``y`` a list of targets ``[n, k]`` (``k > 1``: a distribution). Each probe is the one
    :meth:`MLPProbe.fit` fits on ``x[input]`` and ``y[target]`` with the same ``seed``, ``hidden`` and
    ``recipe``; the stack pads every target to the widest with outputs that get no gradient. ``describe``
    labels the progress bar."""
    inputs = np.array([i for i, _ in pairs])
    targets = np.array([t for _, t in pairs])
    widths = tuple(target.shape[1] for target in y)
    distribution = tuple(k > 1 for k in widths)
    k_max, n, d = max(widths), x.shape[1], x.shape[2]
    mean = torch.as_tensor(x.mean(1, keepdims=True), dtype=dtype)
    std = torch.as_tensor(x.std(1, keepdims=True) + 1e-6, dtype=dtype)
    xt = (torch.as_tensor(x, dtype=dtype) - mean) / std  # [input, n, d]
    yt = torch.zeros(len(y), n, k_max, dtype=dtype)  # [target, n, k_max]
    for t, target in enumerate(y):
        yt[t, :, : widths[t]] = torch.as_tensor(target, dtype=dtype)
    # Per probe: which outputs are its own, and whether it is a distribution.
    own = torch.arange(k_max)[None, None, :] < torch.as_tensor(widths)[targets][:, None, None]  # [probe, 1, k_max]
    is_distribution = torch.as_tensor(distribution)[targets]  # [probe]
    width = torch.as_tensor(widths, dtype=dtype)[targets][:, None]  # [probe, 1]

    initial = {k: initial_weights(d, k, hidden, seed) for k in set(widths)}
    stacked = []
    for t in targets:
        *inner, w_out, b_out = initial[widths[t]]
        pad = k_max - widths[t]
        stacked.append([*inner, np.pad(w_out, ((0, 0), (0, pad))), np.pad(b_out, (0, pad))])
    # Weights [probe, fan_in, fan_out], biases [probe, 1, fan_out].
    weights = tuple(torch.tensor(np.stack(parts)[:, None] if parts[0].ndim == 1 else np.stack(parts), dtype=dtype).requires_grad_() for parts in zip(*stacked))
    optimizer = torch.optim.Adam(weights, lr=recipe.lr)
    for rows in progress_bar(batch_rows(n, recipe, seed), describe, total=recipe.steps):
        rows = torch.as_tensor(rows)
        out = _forward(weights, xt[:, rows][inputs])  # [probe, batch, k_max]
        yb = yt[:, rows][targets]  # [probe, batch, k_max]
        log_p = torch.log_softmax(out.masked_fill(~own, -torch.inf), -1).masked_fill(~own, 0.0)
        cross_entropy = -(yb * log_p).sum(-1).mean(-1)  # [probe]
        squared = (((out - yb) ** 2) * own).sum(-1).mean(-1) / width[:, 0]  # [probe]
        loss = torch.where(is_distribution, cross_entropy, squared).sum()  # the probes share no parameter
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return StackedProbes(inputs, targets, widths, distribution, mean, std, tuple(w.detach() for w in weights))
