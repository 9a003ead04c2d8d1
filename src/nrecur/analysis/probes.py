"""Probes: can the observer's posterior be read from the model's activations?

A probe is a small model fitted from the residual stream at one hook point (or,
for the linear probe, all of them concatenated) to a quantity the exact
observer computes for the same prefix: for n-recurrence the marginals over
period and target, the probability that the next position is a target position,
the joint over (period, countdown) and the predictive; for an HMM the belief
over states; for modular arithmetic the posterior marginals over ``a`` and
``b``. Three kinds of probe, each at every hook point: ridge regression in
closed form (the linear probe, scored by R²), a one-hidden-layer MLP (scored by
R², and by KL for distributions) and, for distributions, a softmax probe — a
linear map then a softmax, fitted by cross-entropy — scored by KL (nats) and
R². Sequences, not positions, are split into training and held-out sets, so a
probe never sees any position of a sequence it is scored on.

Every probe is also fitted, in the same call, on the run's own initialization
(``…_random_init``: what the architecture gives for free; a random transformer's
residual stream already holds the recent tokens) and on the trained model with
the training targets shuffled across positions (``…_shuffled``: what a probe
makes of noise, ≈ 0 or below). The headline reads each model at its own best
hook for the quantity (chosen by its ridge probe on validation sequences, so the
held-out sequences play no part in the choice): ``r2_linear/q`` beside
``r2_linear_random_init/q`` and ``r2_linear_shuffled/q``, the same for the
concatenated hooks (``r2_linear_concat/q``), the MLP (``r2_mlp/q``) and the
softmax probe's KL (``kl_softmax/q``).

How to read it: held-out R² near 1 means the quantity is linearly present at
that hook; only the gain over the initialization says that training put it
there. A gap between the MLP and the linear probe says the quantity is there but
not linearly. The MLP and softmax probes, hundreds of them, are fitted at once as
one stacked model (:func:`nrecur.analysis.probe_models.fit_stacked`). Over training
(``--checkpoints all``) the ridge probes and their controls are fitted at every
saved checkpoint.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, Literal

import numpy as np
import pydantic

from nrecur.analysis.base import progress_bar, residual_activations
from nrecur.analysis.contract import Analysis, Options, Result, initial_model, register
from nrecur.analysis.probe_models import HIDDEN, RECIPE, MLPProbe, RidgeProbe, StackedProbes, fit_stacked, kl_rows, r2_score
from nrecur.model import GPT
from nrecur.tasks import HMMTask, NRecurrence, Task
from nrecur.tasks.modular import ModularICL

__all__ = [
    "CONCAT", "MLP_ROWS", "ChosenProbe", "MLPProbe", "ProbeResult", "ProbeTable", "ProbesOptions", "RidgeProbe", "best_hooks",
    "choose_probe", "compute", "kl_rows", "mlp_probe_on", "probe_inputs", "probe_targets", "r2_score", "ridge_r2_table",
    "split_sequences",
]  # fmt: skip

CONCAT = "concat"
"""Name of the probe input that concatenates every residual hook point."""

MLP_ROWS = 20000
"""The most training positions an MLP or softmax probe draws its minibatches from (a random subset when
there are more)."""


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


# ---------------------------------------------------------------------------- splits, inputs, one probe


def split_sequences(n_sequences: int, held_out: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of training and held-out *sequences* (a sequence is wholly on one side)."""
    order = np.random.default_rng(seed).permutation(n_sequences)
    cut = max(1, int(round(n_sequences * (1 - held_out))))
    return np.sort(order[:cut]), np.sort(order[cut:])


def probe_inputs(model: GPT, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """``{hook: [batch, pos, d_model]}`` at every residual hook point, plus ``concat`` (all of them side by side)."""
    acts = residual_activations(model, tokens)
    acts[CONCAT] = np.concatenate(list(acts.values()), axis=-1)
    return acts


def _flat(x: np.ndarray, sequences: np.ndarray) -> np.ndarray:
    """``x [batch, pos, k]`` → the positions of ``sequences`` as rows ``[n, k]``."""
    return x[sequences].reshape(-1, x.shape[-1])


def mlp_probe_on(x: np.ndarray, y: np.ndarray, train_seq: np.ndarray, seed: int = 0, max_rows: int = MLP_ROWS) -> MLPProbe:
    """An :class:`MLPProbe` from ``x [batch, pos, d]`` to ``y [batch, pos, k]`` fitted on (at most ``max_rows``
    random) positions of the ``train_seq`` sequences."""
    x_train, y_train = _flat(x, train_seq), _flat(y, train_seq)
    rows = _fit_rows(len(x_train), max_rows, seed)
    return MLPProbe.fit(x_train[rows], y_train[rows], distribution=y.shape[-1] > 1, seed=seed)


def _fit_rows(n: int, max_rows: int, seed: int) -> np.ndarray:
    """The training rows an MLP or softmax probe is fitted on: all ``n``, or ``max_rows`` of them at random."""
    return np.random.default_rng(seed).choice(n, size=min(max_rows, n), replace=False)


def ridge_r2_table(
    acts: dict[str, np.ndarray], targets: dict[str, np.ndarray], train_seq: np.ndarray, test_seq: np.ndarray,
    shuffle: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """quantity → hook → held-out R² of a ridge probe fitted on the ``train_seq`` sequences (their positions'
    targets permuted by ``shuffle``, if given: the shuffled-target control).

    The same as a :class:`RidgeProbe` per quantity and hook (the penalty does not depend on the target), but
    with one Gram matrix and one solve per hook for all quantities side by side.
    """
    names = list(targets)
    y = np.concatenate([targets[q] for q in names], axis=-1)
    y_train, y_test = _flat(y, train_seq), _flat(y, test_seq)
    if shuffle is not None:
        y_train = y_train[shuffle]
    columns = np.split(np.arange(y.shape[-1]), np.cumsum([targets[q].shape[-1] for q in names])[:-1])
    table: dict[str, dict[str, float]] = {q: {} for q in names}
    for hook, x in acts.items():
        predicted = RidgeProbe.fit(_flat(x, train_seq), y_train).predict(_flat(x, test_seq))
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
    y_val = _flat(y, validation)
    candidates = []
    for hook, x in acts.items():
        probe = RidgeProbe.fit(_flat(x, fit), _flat(y, fit))
        candidates.append((r2_score(y_val, probe.predict(_flat(x, validation))), hook, "linear", probe))
    best = max(candidates, key=lambda c: c[0])
    if mlp:
        probe = mlp_probe_on(acts[best[1]], y, fit, seed, mlp_rows)
        candidates.append((r2_score(y_val, probe.predict(_flat(acts[best[1]], validation))), best[1], "mlp", probe))
        best = max(candidates, key=lambda c: c[0])
    _, hook, kind, probe = best
    return ChosenProbe(hook=hook, kind=kind, r2=r2_score(_flat(y, test_seq), probe.predict(_flat(acts[hook], test_seq))), probe=probe)


# ---------------------------------------------------------------------------- the analysis


class ProbesOptions(Options):
    n_sequences: int = pydantic.Field(2048, ge=8)
    """Fresh sequences to fit and score the probes on."""
    held_out: float = pydantic.Field(0.2, gt=0, lt=1)
    """Share of the sequences held out for scoring (split by sequence)."""
    mlp: bool = True
    """Fit the MLP probes (on the trained model, its initialization and shuffled targets, at every hook)."""
    softmax: bool = True
    """Fit the softmax probes of the distributions (likewise)."""
    mlp_rows: int = pydantic.Field(MLP_ROWS, ge=16)
    """The most training positions each MLP or softmax probe draws its minibatches from."""
    mlp_steps: int = pydantic.Field(RECIPE.steps, ge=1)
    """Adam steps each MLP or softmax probe is fitted with (minibatches of
    :attr:`~nrecur.analysis.probe_models.FitRecipe.batch` positions)."""


@dataclass(frozen=True)
class ProbeTable:
    """One score of one kind of probe at every hook point: quantity → hook → value, on the trained model, on
    its initialization, and on the trained model with shuffled targets."""

    trained: dict[str, dict[str, float]]
    random_init: dict[str, dict[str, float]]
    shuffled: dict[str, dict[str, float]]


@dataclass(frozen=True)
class Scatter:
    """A sample of held-out positions: the observer's value and the trained model's linear probe's (first
    component), at the best hook."""

    truth: list[float]
    linear: list[float]


@dataclass(frozen=True)
class ProbeResult(Result):
    """Held-out scores of ridge, MLP and softmax probes from every residual hook point to every quantity, on the
    trained model and on its controls."""

    headline: dict[str, float]
    options: ProbesOptions
    step: int
    hooks: tuple[str, ...]
    """Probe inputs: each residual hook point, then ``concat`` (ridge probes only)."""
    quantities: tuple[str, ...]
    distributions: tuple[str, ...]
    """The quantities that are distributions (softmax probes, KL)."""
    best_hook: dict[str, str]
    """quantity → the trained model's best hook (chosen by its ridge probe on validation sequences)."""
    best_hook_random_init: dict[str, str]
    """The same for the initialization."""
    r2_linear: ProbeTable
    """Held-out R² of the ridge probes."""
    r2_mlp: ProbeTable | None
    """Held-out R² of the MLP probes (None: not fitted)."""
    kl_mlp: ProbeTable | None
    """Mean held-out KL(observer ‖ MLP probe) of the distributions (nats)."""
    r2_softmax: ProbeTable | None
    """Held-out R² of the softmax probes of the distributions (None: not fitted)."""
    kl_softmax: ProbeTable | None
    """Mean held-out KL(observer ‖ softmax probe) of the distributions (nats)."""
    r2_by_position: dict[str, list[float]]
    """quantity → held-out R² of the trained model's ridge probe at its best hook, per position."""
    scatter: dict[str, Scatter]
    """quantity → held-out values for the figure."""

    def at_read_hook(self, figure: str, column: Column) -> dict[str, float]:
        """quantity → the headline figure ``figure`` (one of :data:`FIGURES`) of ``column`` (the trained model,
        its initialization or shuffled targets), at the hook the headline reads it: the model's best hook (the
        trained model's for shuffled targets), or the concatenated hooks; empty where that probe was not fitted."""
        table, hook = FIGURES[figure]
        best = {"trained": self.best_hook, "random_init": self.best_hook_random_init}
        return read_at(getattr(self, table), column, best, hook)


def _applies(run) -> str | None:
    if not any(cls in PROBE_TARGETS for cls in type(run.task).__mro__):
        return f"probes do not know the posterior quantities of task kind {run.task.kind!r}"
    return None


MODELS = ("trained", "random_init")
Column = Literal["trained", "random_init", "shuffled"]
"""A column of a :class:`ProbeTable`: the trained model, its initialization (the ``_random_init`` control) or
shuffled targets on the trained model (``_shuffled``)."""
FIGURES = {"r2_linear": ("r2_linear", None), "r2_linear_concat": ("r2_linear", CONCAT), "r2_mlp": ("r2_mlp", None), "kl_softmax": ("kl_softmax", None)}
"""Headline figure → (the :class:`ProbeResult` table it reads, the hook: None for each model's best hook)."""


def read_at(table: ProbeTable | None, column: Column, best: dict[str, dict[str, str]], hook: str | None = None) -> dict[str, float]:
    """quantity → ``table``'s ``column`` at ``hook``, or (None) at the best hook of the model the column is of
    (``best``: model → quantity → hook; shuffled targets are the trained model's); empty for no table."""
    if table is None:
        return {}
    at = best["random_init" if column == "random_init" else "trained"]
    return {q: values[hook or at[q]] for q, values in getattr(table, column).items()}


def _fitted_tables(
    acts: dict[str, dict[str, np.ndarray]], targets: dict[str, np.ndarray], train_seq, test_seq, shuffle: np.ndarray,
    options: ProbesOptions, hidden: int, quantities: list[str],
) -> tuple[ProbeTable, ProbeTable]:
    """R² and KL tables of the MLP (``hidden`` units) or softmax (``hidden`` 0) probes of ``quantities`` at every
    single hook of every model, and with shuffled targets on the trained model: all fitted as one stack."""
    hooks = [hook for hook in acts["trained"] if hook != CONCAT]
    inputs = [(model, hook) for model in MODELS for hook in hooks]
    n_train = len(train_seq) * next(iter(targets.values())).shape[1]
    rows = _fit_rows(n_train, options.mlp_rows, options.seed)
    x_fit = np.stack([_flat(acts[model][hook], train_seq)[rows] for model, hook in inputs])  # [input, row, d_model]
    y_train = {q: _flat(targets[q], train_seq) for q in quantities}
    fits = [(q, False) for q in quantities] + [(q, True) for q in quantities]  # (quantity, shuffled)
    y_fit = [y_train[q][shuffle][rows] if shuffled else y_train[q][rows] for q, shuffled in fits]
    pairs = [
        (i, t) for i, (model, _) in enumerate(inputs) for t, (_, shuffled) in enumerate(fits) if model == "trained" or not shuffled
    ]
    kind = "MLP" if hidden else "softmax"
    recipe = dataclasses.replace(RECIPE, steps=options.mlp_steps)
    stack: StackedProbes = fit_stacked(
        x_fit, y_fit, pairs, seed=options.seed, hidden=hidden, recipe=recipe, describe=f"probes: {len(pairs)} {kind} probes at once"
    )
    predictions = stack.predict(np.stack([_flat(acts[model][hook], test_seq) for model, hook in inputs]))
    r2 = {"trained": {}, "random_init": {}, "shuffled": {}}
    kl = {"trained": {}, "random_init": {}, "shuffled": {}}
    for (i, t), predicted in zip(pairs, predictions):
        (model, hook), (quantity, shuffled) = inputs[i], fits[t]
        control = "shuffled" if shuffled else model
        truth = _flat(targets[quantity], test_seq)
        r2[control].setdefault(quantity, {})[hook] = r2_score(truth, predicted)
        if truth.shape[-1] > 1:
            kl[control].setdefault(quantity, {})[hook] = kl_rows(truth, predicted)
    return ProbeTable(**r2), ProbeTable(**kl)


def compute(run, options: ProbesOptions) -> ProbeResult:
    """Probe every residual hook point of ``run.model`` (and, linearly, all of them concatenated) for every
    posterior quantity of ``run.task``, and the same on the run's initialization and on shuffled targets; see
    the module docstring."""
    task, length, seed = run.task, run.config.length, options.seed
    sample = task.sample(options.n_sequences, length, seed)
    targets = probe_targets(task, task.posterior(sample.tokens))  # {quantity: [batch, pos, k]}
    quantities = list(targets)
    distributions = [q for q in quantities if targets[q].shape[-1] > 1]
    train_seq, test_seq = split_sequences(options.n_sequences, options.held_out, seed)
    shuffle = np.random.default_rng(seed + 3).permutation(len(train_seq) * length)  # training positions' targets, permuted

    models = {"trained": run.model, "random_init": initial_model(run)}
    acts = {name: probe_inputs(model, sample.tokens) for name, model in progress_bar(models.items(), "probes: activations", total=2)}
    best = {name: best_hooks(acts[name], targets, train_seq, seed) for name in MODELS}
    r2_linear = ProbeTable(
        trained=ridge_r2_table(acts["trained"], targets, train_seq, test_seq),
        random_init=ridge_r2_table(acts["random_init"], targets, train_seq, test_seq),
        shuffled=ridge_r2_table(acts["trained"], targets, train_seq, test_seq, shuffle),
    )
    r2_mlp = kl_mlp = r2_softmax = kl_softmax = None
    if options.mlp:
        r2_mlp, kl_mlp = _fitted_tables(acts, targets, train_seq, test_seq, shuffle, options, HIDDEN, quantities)
    if options.softmax and distributions:
        r2_softmax, kl_softmax = _fitted_tables(acts, targets, train_seq, test_seq, shuffle, options, 0, distributions)

    rng = np.random.default_rng(seed)
    by_position, scatter = {}, {}
    for quantity, y in targets.items():
        x = acts["trained"][best["trained"][quantity]]
        predicted = RidgeProbe.fit(_flat(x, train_seq), _flat(y, train_seq)).predict(_flat(x, test_seq))
        per_position = predicted.reshape(len(test_seq), length, -1)
        by_position[quantity] = [r2_score(y[test_seq, i], per_position[:, i]) for i in range(length)]
        truth = _flat(y, test_seq)
        shown = rng.choice(len(truth), size=min(2000, len(truth)), replace=False)
        scatter[quantity] = Scatter(truth=truth[shown, 0].tolist(), linear=predicted[shown, 0].tolist())

    return ProbeResult(
        headline=_headline(quantities, best, r2_linear, r2_mlp, kl_softmax),
        options=options,
        step=run.step,
        hooks=tuple(acts["trained"]),
        quantities=tuple(quantities),
        distributions=tuple(distributions),
        best_hook=best["trained"],
        best_hook_random_init=best["random_init"],
        r2_linear=r2_linear,
        r2_mlp=r2_mlp,
        kl_mlp=kl_mlp,
        r2_softmax=r2_softmax,
        kl_softmax=kl_softmax,
        r2_by_position=by_position,
        scatter=scatter,
    )


def _headline(quantities, best, r2_linear: ProbeTable, r2_mlp: ProbeTable | None, kl_softmax: ProbeTable | None) -> dict[str, float]:
    """Each figure beside its controls: the trained model at its best hook, the initialization at its own, and
    shuffled targets at the trained model's (the concatenated hooks are one input for all three)."""
    tables = {"r2_linear": r2_linear, "r2_mlp": r2_mlp, "kl_softmax": kl_softmax}
    read = {
        (figure, column): read_at(tables[table], column, best, hook) for figure, (table, hook) in FIGURES.items() for column in ("trained", "random_init", "shuffled")
    }  # fmt: skip
    suffixes = {"trained": "", "random_init": "_random_init", "shuffled": "_shuffled"}
    headline = {}
    for quantity in quantities:
        for figure in FIGURES:
            for column, suffix in suffixes.items():
                if quantity in read[(figure, column)]:
                    headline[f"{figure}{suffix}/{quantity}"] = read[(figure, column)][quantity]
    return headline


PROBES = register(
    Analysis(
        name="probes",
        description="ridge, MLP and softmax probes from every residual hook point to the observer's posterior, beside the "
        "same probes on the run's initialization and on shuffled targets",
        options=ProbesOptions,
        result=ProbeResult,
        compute=compute,
        applies=_applies,
        figures="nrecur.analysis.figures.probes:draw",
        over_training={"mlp": False, "softmax": False},
    )
)
