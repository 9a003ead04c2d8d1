"""The analysis contract: what an analysis is, what it takes and what it returns.

An analysis is a name, typed options, ``applies(run) -> reason | None``,
``compute(run, options) -> Result`` and a figure function. Options are a frozen
pydantic model whose field docstrings are their documentation (and the CLI's
help); a field an analysis does not take is refused, naming those it does. A
result is a frozen dataclass: its JSON is its fields (nothing is hand-listed),
and :meth:`Result.from_json` rebuilds it from that JSON, so its figures can be
redrawn from the file alone. Computation never imports matplotlib: the figure
function lives in :mod:`nrecur.analysis.figures` and is named here as
``"module:function"``, imported only when something is drawn.

Adding an analysis is one module (its options, its result, ``compute``,
``applies`` and one :func:`register` call), one figure function, and one import
in :mod:`nrecur.analysis`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import importlib
import math
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator, Mapping, Sequence

import numpy as np
import pydantic
import torch

from nrecur.model import GPT
from nrecur.train.folder import RunFolder
from nrecur.train.interventions import Intervention, intervention_hooks
from nrecur.train.loop import build_model, init_weights_from

__all__ = [
    "ANALYSES", "Analysis", "OptionError", "Options", "Result", "as_training_saw_it", "initial_model", "initialization_of", "json_ready",
    "register", "resolve_reference", "seen_at", "untrained_like",
]  # fmt: skip


class OptionError(ValueError):
    """An option an analysis does not take, or a value it does not accept (one line)."""


class Options(pydantic.BaseModel):
    """Options every analysis takes; each analysis subclasses this with its own (each field documented)."""

    model_config = pydantic.ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    seed: int = pydantic.Field(0, ge=0, lt=2**63)
    """Seed of the fresh sequences the analysis draws (and of any split or control it makes)."""

    @classmethod
    def documented(cls) -> dict[str, tuple[Any, str]]:
        """option → (default, description), in the order they are declared."""
        return {name: (field.default, field.description or "") for name, field in cls.model_fields.items()}


def json_ready(value: Any) -> Any:
    """JSON-ready: dataclasses to dicts, tuples and arrays to lists, NaN and inf to None, numpy scalars to Python."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: json_ready(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_ready(value.tolist())
    if isinstance(value, (np.floating, float)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, pydantic.BaseModel):
        return json_ready(value.model_dump(mode="json"))
    return value


def _from_json(kind: Any, value: Any) -> Any:
    """``value`` as read from JSON, turned back into the annotated type ``kind`` (None → NaN for floats)."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _from_json(inner[0], value) if len(inner) == 1 else value
    if kind is float:
        return math.nan if value is None else float(value)
    if isinstance(kind, type) and issubclass(kind, pydantic.BaseModel) and isinstance(value, dict):
        return kind.model_validate(value)
    if dataclasses.is_dataclass(kind) and isinstance(value, dict):
        hints = typing.get_type_hints(kind)
        return kind(**{f.name: _from_json(hints[f.name], value[f.name]) for f in dataclasses.fields(kind) if f.name in value})
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_from_json(args[0], v) for v in value)
        return tuple(_from_json(a, v) for a, v in zip(args, value)) if args else tuple(value)
    if origin is list and isinstance(value, list):
        return [_from_json(args[0], v) for v in value] if args else value
    if origin is dict and isinstance(value, dict):
        return {k: _from_json(args[1], v) for k, v in value.items()} if args else value
    return value


@dataclass(frozen=True)
class Result:
    """What an analysis returns: a frozen dataclass whose fields are its data.

    Every result has ``headline`` (named figures, each beside its control) and ``options`` (what it ran
    with); subclasses add their own fields. ``to_json`` is derived from the fields.
    """

    name: ClassVar[str] = ""
    """The registered analysis's name (``NAME.json``); set by :func:`register`."""

    def to_json(self) -> dict:
        """The fields as JSON-ready data, ``headline`` first."""
        data = json_ready(self)
        return {"headline": data.pop("headline"), **data} if "headline" in data else data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]):
        """The result again from :meth:`to_json`'s data (extra keys, such as the file's ``name``, ignored)."""
        hints = typing.get_type_hints(cls)
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in data and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
        if missing:
            raise ValueError(f"{cls.__name__} JSON lacks {', '.join(missing)}")
        return cls(**{f.name: _from_json(hints[f.name], data[f.name]) for f in dataclasses.fields(cls) if f.name in data})


@dataclass(frozen=True)
class Analysis:
    """A registered analysis (see the module docstring)."""

    name: str
    description: str
    """One line: what it measures (``nrecur analyze --help``, the report)."""
    options: type[Options]
    result: type[Result]
    compute: Callable[[Any, Options], Result]
    """``compute(run, options) -> result``; draws nothing."""
    applies: Callable[[Any], str | None]
    """``applies(run) -> None`` when the analysis applies to the run, else why not (one line)."""
    figures: str
    """``"module:function"`` that draws the result: ``function(result, folder) -> [paths]`` (PNG and SVG)."""
    over_training: Mapping[str, Any] | None = None
    """Options for the run over saved checkpoints (``--checkpoints all``, :func:`over_checkpoints`), where it
    makes sense there (e.g. no MLP probes at every checkpoint); None: the analysis is not run over training."""
    snapshot: Callable[[Result], dict] | None = None
    """Over training: the small part of each checkpoint's result kept beside its headline (a figure's points)."""
    over_training_figures: str | None = None
    """``"module:function"`` drawing the over-training result beside the generic headline curves, if any."""
    in_all: bool = True
    """Runs under ``--what all`` (every analysis that applies); False for a search that costs minutes: it runs
    only when named (``--what NAME``)."""

    @property
    def module_doc(self) -> str:
        """The analysis module's opening paragraphs: the technique and how to read it."""
        return importlib.import_module(self.compute.__module__).__doc__ or ""

    def make_options(self, given: Mapping[str, Any] | None = None) -> Options:
        """Typed options from ``given`` (defaults for the rest); an unknown option or a bad value is an
        :class:`OptionError` naming the options this analysis takes."""
        given = dict(given or {})
        unknown = [key for key in given if key not in self.options.model_fields]
        if unknown:
            raise OptionError(
                f"{self.name} takes no option {', '.join(unknown)}; it takes {', '.join(self.options.model_fields)}"
            )
        try:
            return self.options(**given)
        except pydantic.ValidationError as error:
            problem = error.errors()[0]
            where = ".".join(str(part) for part in problem["loc"])
            raise OptionError(f"{self.name} option {where}: {problem['msg']} (got {problem.get('input')!r})") from None

    def draw(self, result: Result, folder: str | Path) -> list[Path]:
        """Draw ``result``'s figures into ``folder`` (imports matplotlib)."""
        return resolve_reference(self.figures)(result, Path(folder))


def resolve_reference(reference: str) -> Callable:
    module, _, function = reference.partition(":")
    return getattr(importlib.import_module(module), function)


ANALYSES: dict[str, Analysis] = {}
"""Analyses by name, in the order they were registered (``--what all`` runs those that apply)."""


def register(analysis: Analysis) -> Analysis:
    """Add ``analysis`` to :data:`ANALYSES` (its result class learns its name); returns it."""
    if analysis.name in ANALYSES:
        raise ValueError(f"an analysis named {analysis.name!r} is already registered")
    if analysis.result.name and analysis.result.name != analysis.name and analysis.result.name in ANALYSES:
        raise ValueError(f"{analysis.result.__name__} is already the result of {analysis.result.name}; each analysis has its own result class")
    analysis.result.name = analysis.name
    ANALYSES[analysis.name] = analysis
    return analysis


def initial_model(run) -> GPT:
    """The run's own initialization, in eval mode on the run's device: the weights it started training from —
    its fine-tuning source's where it has ``init_from``, else a fresh model from its ``init_seed``. The
    controls of every analysis are computed on it (their headline names end in ``_random_init`` either way;
    :func:`initialization_of` says which it is, and every result file repeats it). Inside :func:`as_training_saw_it` it runs with the
    interventions active at step 0."""
    device = next(run.model.parameters()).device
    model = build_model(run.config, device)
    if run.config.init_from:
        init_weights_from(model, run.config.init_from, RunFolder(run.path).read_init_source())
    return seen_at(model.eval(), 0)


def initialization_of(config) -> dict:
    """What a run's initialization (the control model of every analysis, ``…_random_init``) is, from its config:
    ``init_from`` (a fine-tune's source; None for a fresh model) and ``init_seed`` (a fresh model's seed)."""
    return {"init_from": config.init_from, "init_seed": config.train.init_seed}


@torch.no_grad()
def untrained_like(model: GPT, seed: int) -> GPT:
    """A freshly initialized model of ``model``'s shape (seed ``seed``), in eval mode on its device (inside
    :func:`as_training_saw_it`: with the interventions active at step 0)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fresh = GPT(model.config)
    return seen_at(fresh.to(next(model.parameters()).device).eval(), 0)


_SEEN = contextvars.ContextVar("nrecur_analysis_interventions", default=None)
"""Inside :func:`as_training_saw_it`: ``(interventions, exit stack)``, else None."""


@contextlib.contextmanager
def as_training_saw_it(interventions: Sequence[Intervention]) -> Iterator[None]:
    """Inside the ``with``, every model an analysis runs is seen as training saw it at its own step:
    :func:`seen_at` attaches the interventions active at a step, :func:`initial_model` (every control) gets
    those active at step 0. Every hook added is removed on exit, also on error. No interventions: no change."""
    with contextlib.ExitStack() as stack:
        token = _SEEN.set((tuple(interventions), stack))
        try:
            yield
        finally:
            _SEEN.reset(token)


def seen_at(model: GPT, step: int) -> GPT:
    """``model``, with the interventions active at ``step`` attached until the enclosing
    :func:`as_training_saw_it` ends (unchanged outside one, or with none active)."""
    scope = _SEEN.get()
    if scope is not None:
        interventions, stack = scope
        hooks = intervention_hooks(interventions, step)
        if hooks:
            stack.enter_context(model.hooks(hooks))
    return model
