"""Many same-shape models trained at once in one process: stacked parameters, ``functional_call``, ``vmap``.

``train_ensemble(configs, run_dirs)`` trains every config of a group as if
each ran alone with :func:`~nrecur.train.session.train`, and writes the same run
folders (``config.json``, ``metrics.jsonl``, checkpoints, ``summary.json``), so
``load_run``, ``resume`` and the analyses work on them as on any run.
:func:`can_ensemble` says whether a group qualifies: the same model, batch
size and device, AdamW (not Muon), and no interventions; seeds, optimizer and schedule settings
(``lr``, ``weight_decay``, ``betas``, Grokfast, clipping, warm-up), steps, task
parameters, objective and evaluation settings may all differ.

How: the ``M`` models' parameters are rows of one ``[model, param]`` buffer
(:mod:`nrecur.train.vector_adamw`). A step runs one forward pass of all models,
``vmap(functional_call(template, params_m, tokens_m))`` over the rows and the
models' own batches (attention as one fused call with the models folded into
the batch on a CPU without ``compile``, see ``FOLDED_ATTENTION``), then one backward pass and one optimizer step with
per-model hyper-parameters.

What stays each model's own: its initialization (``init_seed``), its batches
(the pure function of its task, ``data_seed`` and the step that
:mod:`nrecur.train.data` provides), its learning-rate schedule, clipping,
Grokfast filter and AdamW state, its loss (its objective of
:mod:`nrecur.train.objectives`: inside the ``vmap`` when it is batchable, see
``BATCHABLE_OBJECTIVES``, else called on its share of the logits), and its
callbacks (evaluation, metrics, checkpoints, stopping rules). Each member is a real
:class:`~nrecur.train.loop.Trainer` whose weights and optimizer state are
views of its row, so its checkpoints hold exactly what a lone run's hold, and
``resume`` continues a member alone.

Evaluation is batched across models where it pays: members with the same
evaluation sets (same task, ``eval_seed``, ``eval_size``, held-out rules and
training set) share one set and its one observer pass, the expensive part. The
models' forward passes on it run in one ``vmap`` on a GPU, with
:func:`~nrecur.train.evaluate.evaluate` turning each member's logits into the
numbers a lone run reports; on the CPU each member's own model runs through
``evaluate`` in turn, which measured faster (see ``VMAPPED_EVALUATION``).

Speed: the next steps' batches are drawn in the background (a thread, or
``data_workers`` processes) while the current step computes; ``compile=True``
runs the training pass through ``torch.compile``. ``benchmarks/bench_ensemble.py``
measures both against the one-by-one loop.

Differences from lone runs: numbers agree to float rounding, not bit for bit
(batched kernels sum in another order). ``seconds`` in metrics and summaries is
the ensemble's wall-clock time, shared by its members. A member whose loss
becomes NaN stops as a lone run would (``summary.json`` says ``diverged``) and
the others go on; a member that stops early (KL threshold, time budget) leaves the
ensemble, which continues with the rest.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.func import functional_call, vmap
from torch.nn.attention import SDPBackend, sdpa_kernel

from nrecur._memory import available_memory, format_bytes
from nrecur.model import GPT
from nrecur.train.callbacks import Evaluator, ProgressBar
from nrecur.train.config import RunConfig
from nrecur.train.ensemble_members import BatchedEvaluator, Batches, Member, Replay
from nrecur.train.evaluate import EvalSet, Evaluation, build_eval_sets, evaluate
from nrecur.train.folded_attention import fold_attention
from nrecur.train.folder import RunFolder
from nrecur.train.loop import NonFiniteLossError, StepInfo, Trainer, TrainResult, resolve_device
from nrecur.train.memory import estimate_training_memory
from nrecur.train.objectives import OBJECTIVES
from nrecur.train.session import default_callbacks
from nrecur.train.vector_adamw import (
    FlatLayout,
    VectorAdamW,
    VectorGrokfast,
    clip_grad_norms,
)

FOLDED_ATTENTION = {"cpu": True, "cuda": False}
"""Device type → whether attention under ``vmap`` is one fused kernel call with the models folded into the
batch (:mod:`nrecur.train.folded_attention`; on a CPU faster than the composite form below, see
``benchmarks/bench_ensemble.py``). Not with ``compile=True``: inductor fuses the composite form, which is
then the faster. Elsewhere (a GPU) attention runs in the composite form of ``ATTENTION_BACKENDS``."""

ATTENTION_BACKENDS = [SDPBackend.MATH]
"""Attention under ``vmap`` where it is not folded: the composite "math" form of
``scaled_dot_product_attention`` (matmuls and a softmax, batched like any op). The fused CPU kernel has
no batching rule (vmap loops over the models), and the batched memory-efficient CUDA kernel fails in its
backward pass (torch 2.11: "LSE is not correctly aligned")."""

BATCHABLE_OBJECTIVES = frozenset({"next_token"})
"""Objectives that are torch functions of the logits and tokens alone (no use of the task): when every
member has the same one, it runs inside the ``vmap`` with the forward pass. Any other (``observer`` runs
the observer in numpy) is called per member on its share of the logits."""

VMAPPED_EVALUATION = {"cpu": False, "cuda": True}
"""Device type → whether an evaluation runs all members' forward passes in one ``vmap`` (a GPU: one
launch instead of one per member) or each member's own model in turn (the CPU, where the lone model's
fused attention over 512 or more sequences is faster than the vmapped form, folded or not). Either way,
members with the same evaluation sets share them and their one observer pass."""

EVAL_SEQUENCES = 1024
"""Sequences (summed over models) per vmapped evaluation forward pass, as ``evaluate``'s chunk."""


@dataclass(frozen=True)
class Eligibility:
    """Whether a group of configs can train as one ensemble; ``bool(eligibility)`` is ``ok``."""

    ok: bool
    reason: str
    """Why not (empty when ``ok``)."""

    def __bool__(self) -> bool:
        return self.ok


def can_ensemble(configs: Sequence[RunConfig]) -> Eligibility:
    """Whether ``configs`` can train as one ensemble: the same model, batch size (sequences per step) and
    device, AdamW, and no interventions. Everything else may differ between members (seeds, optimizer and
    schedule settings, steps, task parameters, objective, evaluation and stopping rules)."""
    if not configs:
        return Eligibility(False, "no configs")
    for index, config in enumerate(configs):
        if config.train.interventions:
            return Eligibility(False, f"config {index} has interventions, which hook the model; the vmapped forward pass runs none")
        if config.train.optimizer != "adamw":
            return Eligibility(False, f"config {index} has train.optimizer {config.train.optimizer!r}; the ensemble supports only 'adamw'")
    common = _shape(configs[0])
    for index, config in enumerate(configs[1:], start=1):
        shape = _shape(config)
        differ = [key for key in common if shape[key] != common[key]]
        if differ:
            return Eligibility(False, f"config {index} differs from config 0 in {', '.join(differ)}")
    return Eligibility(True, "")


def _shape(config: RunConfig) -> dict:
    """What members must share: the stacked tensors' shapes and their device."""
    train = config.train
    batch = train.sequences_per_step
    return {"model": config.model, "batch size": batch, "train.device": train.device}


def train_ensemble(
    configs: Sequence[RunConfig],
    run_dirs: Sequence[str | os.PathLike] | None = None,
    *,
    overwrite: bool = False,
    progress: bool | str = False,
    compile: bool = False,
    data_workers: int = 0,
) -> list[TrainResult]:
    """Train every config of ``configs`` at once (see the module docstring); one result per config, in order.

    ``run_dirs``: one run folder per config (each missing or empty unless ``overwrite``), or None to
    write nothing. Raises ValueError when the group does not qualify (:func:`can_ensemble`).
    ``progress``: a progress bar of the first member (a string names it). ``compile``: run the training
    forward and backward passes through ``torch.compile`` (faster steps after a compilation of tens of
    seconds; see benchmarks/bench_ensemble.py). ``data_workers``: processes that draw the training batches
    ahead (0: one background thread); worth it when drawing them takes longer than a step, e.g. on a GPU.
    """
    eligibility = can_ensemble(configs)
    if not eligibility:
        raise ValueError(f"these runs cannot train as one ensemble: {eligibility.reason}")
    folders = [RunFolder(path) for path in run_dirs] if run_dirs is not None else [None] * len(configs)
    if len(folders) != len(configs):
        raise ValueError(f"got {len(configs)} configs but {len(folders)} run folders; give one folder per config")
    if len({folder.path.resolve() for folder in folders if folder is not None}) < sum(f is not None for f in folders):
        raise ValueError("two configs of the ensemble have the same run folder; give each its own")
    writing = [folder for folder in folders if folder is not None]
    for folder in writing:
        if folder.path.exists() and not folder.path.is_dir():
            folder.check_new(overwrite)  # a file: say so (the lock lives in the folder)
    with contextlib.ExitStack() as locks:  # every member's folder, one writer each, until the ensemble ends
        for folder in writing:
            locks.enter_context(folder.writing(doing="an ensemble training", refused="wait for it to end, or pick other folders"))
        for folder in writing:
            folder.check_new(overwrite)  # under the lock: what another process is writing there is not taken for a run
        ensemble = Ensemble(configs, folders, progress, compile=compile, data_workers=data_workers)
        for member, folder in zip(ensemble.members, folders):
            if folder is not None:
                _prepare_folder(folder, member, overwrite)
        return ensemble.fit()


def _prepare_folder(folder: RunFolder, member: Trainer, overwrite: bool) -> None:
    """Write the config (and a fine-tune's source) as :func:`~nrecur.train.session.train` does."""
    try:
        if overwrite:
            folder.clear()
        folder.write_config(member.config)
        if member.init_source is not None:
            folder.write_init_source(member.init_source)
    except BaseException:
        folder.clear()
        raise


def check_ensemble_memory(configs: Sequence[RunConfig], device: torch.device) -> None:
    """Refuse (ValueError) a group whose runs together need more memory than is available.

    The sum of the runs' own estimates (:mod:`nrecur.train.memory`): the stacked weights, optimizer
    state and activations are the members' own, side by side.
    """
    estimates = [estimate_training_memory(config) for config in configs]
    needs = [(sum(e.total if device.type == "cpu" else e.host_bytes for e in estimates), available_memory(), "memory")]
    if device.type == "cuda":
        needs.append((sum(e.device_bytes for e in estimates), torch.cuda.mem_get_info(device)[0], f"GPU memory on {device}"))
    for need, available, where in needs:
        if available is not None and need > available:
            raise ValueError(
                f"these {len(configs)} runs together need about {format_bytes(need)} of {where} but only "
                f"{format_bytes(available)} is available; train fewer of them at once"
            )


class Functional:
    """The ensemble's model with the given parameters, called as a model: ``tokens [batch, pos] -> logits``."""

    def __init__(self, ensemble: "Ensemble", params: dict[str, Tensor]) -> None:
        self.ensemble, self.params = ensemble, params

    def __call__(self, tokens: Tensor) -> Tensor:
        return self.ensemble._forward_one(self.params, tokens)


class Ensemble:
    """Members trained together; see the module docstring. ``fit()`` runs them all to their end."""

    def __init__(
        self,
        configs: Sequence[RunConfig],
        folders: Sequence[RunFolder | None] | None = None,
        progress: bool | str = False,
        compile: bool = False,
        data_workers: int = 0,
        vmapped_evaluation: bool | None = None,
    ) -> None:
        """See :func:`train_ensemble`; ``vmapped_evaluation``: None for the device's default (``VMAPPED_EVALUATION``)."""
        folders = [None] * len(configs) if folders is None else folders
        check_ensemble_memory(configs, resolve_device(configs[0].train.device))
        self.members: list[Member] = []
        shared_sets: dict[tuple, dict[str, EvalSet]] = {}
        for index, (config, folder) in enumerate(zip(configs, folders)):
            member = Member(config, [], run_dir=folder.path if folder is not None else None)
            train = config.train
            finite = getattr(member.data, "sequences", None)
            finite_key = (train.data_seed, train.train_size) if finite is not None else None
            key = (config.task.model_dump_json(), train.eval_size, train.eval_seed, member.held_out, finite_key)
            if key not in shared_sets:
                shared_sets[key] = build_eval_sets(config.task, config.length, train.eval_size, train.eval_seed, member.held_out, finite)
            bar = progress if index == 0 else False
            callbacks = default_callbacks(config, folder, bar if isinstance(bar, str) else bool(bar))
            callbacks = [BatchedEvaluator(self, shared_sets[key]) if isinstance(c, Evaluator) else c for c in callbacks]
            if bar and not isinstance(bar, str):
                callbacks = [ProgressBar(f"ensemble of {len(configs)}") if isinstance(c, ProgressBar) else c for c in callbacks]
            member.callbacks = callbacks
            self.members.append(member)
        first = self.members[0]
        self.config = first.config
        self.device = first.device
        self.template = GPT(self.config.model).to(self.device).requires_grad_(False)
        self.folded_attention = FOLDED_ATTENTION.get(self.device.type, False) and not compile
        if self.folded_attention:
            fold_attention(self.template)
        self.layout = FlatLayout.of(first.model)
        self.compile = compile
        self.vmapped_evaluation = VMAPPED_EVALUATION.get(self.device.type, True) if vmapped_evaluation is None else vmapped_evaluation
        self._vmapped = vmap(self._forward_one)
        # Training passes only: evaluation (other shapes, no gradients) stays eager rather than compile again.
        self._train_forward = torch.compile(self._vmapped) if compile else self._vmapped
        self._train_losses: dict[str, Callable] = {}
        self.batches = Batches(self.members, data_workers)
        self.step_count = torch.zeros((), dtype=torch.float32)  # AdamW's "step" state of every member
        self.active: list[Member] = list(self.members)
        params = torch.stack([self.layout.flatten(m.model) for m in self.active])  # [model, param]
        trains = [m.config.train for m in self.active]
        self.optimizer = VectorAdamW(params, self.layout.decayed, [t.weight_decay for t in trains], [t.betas for t in trains])
        self.grokfast = (
            VectorGrokfast([t.grokfast_alpha for t in trains], [t.grokfast_lambda if m.grokfast else 0.0 for t, m in zip(trains, self.active)], params)
            if any(m.grokfast is not None for m in self.active)
            else None
        )
        self._bind()
        self.results: dict[int, TrainResult] = {}
        """How each member ended (``id(member) -> result``), filled as they end."""
        self._pending: dict[int, tuple[int, dict[str, Evaluation]]] = {}
        """Scores computed in a batch for members that have not asked yet: ``id(member) -> (step, scores)``."""

    # --- the flat buffers and the members' views of them

    def _bind(self) -> None:
        """Point every active member's weights, optimizer and Grokfast state at its row; set up the grad buffer."""
        optimizer = self.optimizer
        self.params = optimizer.params  # [model, param]
        self.grad = torch.zeros_like(self.params)  # [model, param]
        self.leaves = {name: view.detach().requires_grad_() for name, view in self.layout.views(self.params).items()}
        for name, grad in self.layout.views(self.grad).items():
            self.leaves[name].grad = grad  # backward accumulates into the flat buffer in place
        for row, member in enumerate(self.active):
            self.layout.alias(member.model, self.params[row])
            moments = (self.layout.views(optimizer.exp_avg[row]), self.layout.views(optimizer.exp_avg_sq[row]))
            for name, param in member.model.named_parameters():
                member.optimizer.state[param] = {"step": self.step_count, "exp_avg": moments[0][name], "exp_avg_sq": moments[1][name]}
            if member.grokfast is not None and self.grokfast is not None and self.grokfast.ema is not None:
                member.grokfast.ema = self.layout.views(self.grokfast.ema[row])

    def _keep(self, rows: list[int]) -> None:
        """Continue with the members ``rows`` of the active ones only (the others have ended).

        The ended ones keep their weights and state in the old buffers, which are no longer written,
        and a step count of their own.
        """
        for row, member in enumerate(self.active):
            if row not in rows:
                own = self.step_count.clone()
                for state in member.optimizer.state.values():
                    state["step"] = own
        self.active = [self.active[row] for row in rows]
        if not rows:
            return
        self.optimizer = self.optimizer.select(self.params[rows].clone(), rows)
        if self.grokfast is not None:
            self.grokfast = self.grokfast.select(rows)
        self._bind()

    # --- training

    def fit(self) -> list[TrainResult]:
        """Train every member to its end; their results in config order."""
        started = time.perf_counter()
        for member in self.members:
            member.start_clock(started)
        for member in self.members:
            for callback in member.callbacks:
                callback.on_start(member)
        try:
            self._retire()
            while self.active:
                self.step()
                self._retire()
        finally:
            self.close()
        return [self.results[id(member)] for member in self.members]

    def close(self) -> None:
        """End the thread that draws batches ahead (``fit`` does it when it ends)."""
        self.batches.close()

    def _retire(self) -> None:
        """End the members that have reached their steps or were asked to stop."""
        done = [row for row, m in enumerate(self.active) if m.stop_reason is not None or m.step >= m.config.train.steps]
        if not done:
            return
        for row in done:
            member = self.active[row]
            self.results[id(member)] = member.finish()
        self._keep([row for row in range(len(self.active)) if row not in done])

    def step(self) -> None:
        """One optimizer step of every active member (members whose loss is not finite leave first)."""
        step = self.active[0].step
        tokens = torch.from_numpy(self.batches.get(self.active, step)).to(self.device)  # [model, batch, pos + 1]
        losses = self._losses(tokens)  # [model]
        values = losses.tolist()
        failed = [row for row, value in enumerate(values) if not math.isfinite(value)]
        if failed:
            for row in failed:
                member = self.active[row]
                try:
                    member.fail(values[row])
                except NonFiniteLossError:
                    self.results[id(member)] = member.result()
            self._keep([row for row in range(len(self.active)) if row not in failed])
            return  # the others take this step again (batches depend on the step only)
        self.grad.zero_()
        with warnings.catch_warnings():
            # The flat buffer's row views have gaps between models, which torch flags as a layout mismatch.
            warnings.filterwarnings("ignore", message="grad and param do not obey the gradient layout contract")
            losses.sum().backward()
        trains = [member.config.train for member in self.active]
        if self.grokfast is not None:
            self.grokfast.filter(self.grad)
        norms = clip_grad_norms(self.grad, [t.grad_clip if t.grad_clip > 0 else math.inf for t in trains]).tolist()
        lrs = [t.lr_at(step) for t in trains]
        self.optimizer.step(self.grad, lrs)
        self.step_count.fill_(self.optimizer.steps)
        if self.grokfast is not None and self.grokfast.ema is not None:
            self._bind_grokfast()
        for member in self.active:  # all first: an evaluation then batches every member due at this step
            member.step = step + 1
        for row, member in enumerate(self.active):
            info = StepInfo(step=step + 1, loss=values[row], lr=lrs[row], grad_norm=norms[row])
            for callback in member.callbacks:
                callback.on_step(member, info)

    def _bind_grokfast(self) -> None:
        for row, member in enumerate(self.active):
            if member.grokfast is not None and not member.grokfast.ema:
                member.grokfast.ema = self.layout.views(self.grokfast.ema[row])

    def _losses(self, tokens: Tensor) -> Tensor:
        """``tokens [model, batch, pos + 1]`` → each member's training loss ``[model]``, differentiable."""
        if tokens.numel():
            low, high = (int(v) for v in torch.aminmax(tokens))
            if low < 0 or high >= self.config.model.vocab_size:
                raise ValueError(f"training tokens must lie in 0..{self.config.model.vocab_size - 1}, got {low}..{high}")
        objectives = {member.config.train.objective for member in self.active}
        if len(objectives) == 1 and objectives <= BATCHABLE_OBJECTIVES:
            with self._attention_backends():
                return self._batched_losses(objectives.pop())(self.leaves, tokens)
        inputs = tokens[:, :, :-1]  # [model, batch, pos]
        logits = self.forward(self.leaves, inputs, train=True)  # [model, batch, pos, vocab]
        return torch.stack(
            [
                OBJECTIVES[member.config.train.objective](Replay(inputs[row], logits[row]), tokens[row], member.config.task)
                for row, member in enumerate(self.active)
            ]
        )

    def forward(self, params: dict[str, Tensor], tokens: Tensor, train: bool = False) -> Tensor:
        """``params {name: [model, *shape]}``, ``tokens [model, batch, pos]`` → ``logits [model, batch, pos, vocab]``.

        ``train``: the training pass (compiled when the ensemble compiles).
        """
        with self._attention_backends():
            return (self._train_forward if train else self._vmapped)(params, tokens)

    def _attention_backends(self) -> contextlib.AbstractContextManager:
        """Where attention is not folded, its composite form (``ATTENTION_BACKENDS``)."""
        return contextlib.nullcontext() if self.folded_attention else sdpa_kernel(ATTENTION_BACKENDS)

    def _forward_one(self, params: dict[str, Tensor], tokens: Tensor) -> Tensor:
        return functional_call(self.template, params, (tokens,), {"check": False})

    def _batched_losses(self, objective: str) -> Callable:
        """``(params {name: [model, *shape]}, tokens [model, batch, pos + 1]) -> losses [model]`` for one objective."""
        if objective not in self._train_losses:
            task = self.config.task  # unused by a batchable objective

            def loss_one(params: dict[str, Tensor], tokens: Tensor) -> Tensor:
                return OBJECTIVES[objective](Functional(self, params), tokens, task)

            batched = vmap(loss_one)
            self._train_losses[objective] = torch.compile(batched) if self.compile else batched
        return self._train_losses[objective]

    # --- evaluation

    def evaluations(self, member: Trainer) -> dict[str, Evaluation]:
        """``member``'s scores on its evaluation sets now, computed in one batch with every member due now."""
        step = member.step
        if self._pending.get(id(member), (None,))[0] != step:
            due = [member] + [
                m for m in self.active
                if m is not member and m.step == step and self._pending.get(id(m), (None,))[0] != step
                and (step % m.config.train.eval_every == 0 or step >= m.config.train.steps or m.stop_reason is not None)
            ]  # fmt: skip
            self._pending.update({key: (step, scores) for key, scores in self._evaluate(due).items()})
        return self._pending.pop(id(member))[1]

    @torch.no_grad()
    def _evaluate(self, members: list[Trainer]) -> dict[int, dict[str, Evaluation]]:
        if not self.vmapped_evaluation:  # each member's own model (its weights are views of its row)
            return {id(m): {name: evaluate(m.model, eval_set) for name, eval_set in self._sets(m).items()} for m in members}
        rows = {id(m): row for row, m in enumerate(self.active)}
        groups: dict[tuple[str, int], list[tuple[Trainer, EvalSet]]] = {}
        for member in members:
            for name, eval_set in self._sets(member).items():
                groups.setdefault((name, len(eval_set)), []).append((member, eval_set))
        scores: dict[int, dict[str, Evaluation]] = {id(m): {} for m in members}
        self.template.eval()
        for (name, size), items in groups.items():
            index = [rows[id(m)] for m, _ in items]
            params = self.layout.views(self.params[index])  # [model, param] copy of the rows
            sets = [eval_set for _, eval_set in items]
            logits = self._eval_logits(params, sets)  # [model, batch, pos, vocab]
            for (member, eval_set), member_logits in zip(items, logits):
                scores[id(member)][name] = evaluate(Replay(eval_set.tokens, member_logits), eval_set, chunk=size)
        self.template.train()
        return {id(m): {name: scores[id(m)][name] for name in self._sets(m)} for m in members}  # each in its sets' order

    def _eval_logits(self, params: dict[str, Tensor], sets: list[EvalSet]) -> Tensor:
        size = len(sets[0])
        if all(s is sets[0] for s in sets):
            tokens = sets[0].tokens.expand(len(sets), *sets[0].tokens.shape)  # one set, shared: no copies
        else:
            tokens = torch.stack([s.tokens for s in sets])  # [model, batch, pos]
        chunk = max(1, EVAL_SEQUENCES // len(sets))
        parts = [self.forward(params, tokens[:, start : start + chunk].to(self.device)) for start in range(0, size, chunk)]
        return torch.cat(parts, dim=1)

    @staticmethod
    def _sets(member: Trainer) -> dict[str, EvalSet]:
        evaluator = next(c for c in member.callbacks if isinstance(c, BatchedEvaluator))
        return evaluator.eval_sets

