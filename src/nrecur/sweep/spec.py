"""A sweep spec: one TOML or YAML file that describes a grid of training runs.

Example (TOML; the YAML form has the same keys)::

    name = "width-vs-decay"
    preset = "tiny"                 # the base run config (optional; default: RunConfig())
    seeds = 3                       # seeds 0, 1, 2 (or a list: [0, 7])

    [base.train]                    # fields of the base config to change for every trial
    steps = 60

    [grid]                          # every combination of these values
    "model.d_model" = [16, 32]
    "train.weight_decay" = [0.0, 1.0]

    [[zip]]                         # lists of equal length, taken together (one axis)
    "model.n_heads" = [2, 4]
    "model.d_head" = [8, 4]

    [random]                        # `samples` points drawn from ranges (one axis)
    samples = 4
    seed = 0
    fields."train.lr" = { low = 1e-4, high = 1e-2, log = true }

    [record]
    metrics = ["eval/target_acc"]   # final metrics added as columns

A field is named by its dotted path in :class:`~nrecur.train.config.RunConfig`:
``task.<field>``, ``model.<field>``, ``train.<field>`` or ``init_from``. The
trials are the product of the grid's axes, each zip group, the random points
and the seeds; each seed sets every field of ``seed_fields``. The model's
``vocab_size`` follows the task's unless the spec sets it. Everything is
checked here and when the trials are expanded (:mod:`nrecur.sweep.expand`),
before anything runs.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path
from typing import Any, Literal

import pydantic
from pydantic import field_validator, model_validator

from nrecur._config import Config, format_error
from nrecur.model import GPTConfig
from nrecur.tasks import Task
from nrecur.train.config import RunConfig, TrainConfig
from nrecur.train.presets import PRESETS
from nrecur.train.renames import RENAMED_TRAIN_FIELDS, renamed_fields, warn_old_names

class SpecError(ValueError):
    """A sweep spec that cannot run; the message names the entry (and the file, once it is known)."""


SECTIONS: dict[str, type[pydantic.BaseModel] | None] = {"task": None, "model": GPTConfig, "train": TrainConfig}
"""The parts of a RunConfig a path may name (task fields depend on the task's kind)."""

RENAMED_PATHS = {f"train.{old}": f"train.{new}" for old, new in RENAMED_TRAIN_FIELDS.items()}
"""Old dotted path → its field's name (:mod:`nrecur.train.renames`)."""


class RandomField(Config):
    """How one field is drawn: uniformly from ``[low, high]`` (log-uniformly with ``log``), or from ``choices``."""

    low: float | None = None
    """Lower end of the range (inclusive)."""
    high: float | None = None
    """Upper end of the range (inclusive for integers)."""
    log: bool = False
    """Draw log-uniformly (low and high must then be > 0)."""
    integer: bool = False
    """Round to an integer (uniform over low..high)."""
    choices: tuple[Any, ...] | None = None
    """Draw one of these values uniformly instead of a range."""

    @model_validator(mode="after")
    def _check(self) -> "RandomField":
        if self.choices is not None:
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low/high, not both")
            if not self.choices:
                raise ValueError("choices is empty")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give low and high (or choices)")
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low <= self.high):
            raise ValueError(f"needs finite low <= high, got low {self.low}, high {self.high}")
        if self.log and self.low <= 0:
            raise ValueError(f"log needs low > 0, got {self.low}")
        return self


class RandomAxes(Config):
    """``samples`` points, each field drawn independently (seeded: the same spec draws the same points)."""

    samples: int
    """Number of points drawn."""
    seed: int = 0
    """Seed of the draws."""
    fields: dict[str, RandomField]
    """Dotted path → how it is drawn."""

    @field_validator("samples")
    @classmethod
    def _positive(cls, value: int) -> int:
        if value < 1:
            raise ValueError(f"samples must be an integer >= 1, got {value}")
        return value


class RecordSpec(Config):
    """What the results table holds beyond its fixed columns."""

    metrics: tuple[str, ...] = ()
    """Final metrics of the run's summary (``eval/target_acc``, ``in_dist/kl``, ``train/kl`` …) added as columns; NaN where a run has none."""

    @field_validator("metrics")
    @classmethod
    def _metric_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if "/" not in name:
                raise ValueError(f"{name!r} is not a metric name; they read set/quantity, e.g. eval/target_acc or in_dist/kl")
        return value


class SweepSpec(Config):
    """A sweep: a base run config, the axes that vary it, seeds, and what to record (see the module docstring)."""

    name: str = "sweep"
    """Name of the sweep (shown in logs and plots)."""
    preset: str | None = None
    """Start from this preset's run config (see ``nrecur train --help``); None: the defaults."""
    variant: Literal["run", "stochastic", "mess3"] = "run"
    """Which of the preset's configs: its run, or (n-recurrence presets) its stochastic or Mess3 companion."""
    base: dict[str, Any] = {}
    """Fields of the base config to change for every trial: tables ``task``, ``model``, ``train`` (and ``init_from``)."""
    grid: dict[str, list[Any]] = {}
    """Dotted path → values; every combination is a trial."""
    zip: list[dict[str, list[Any]]] = []
    """Groups of dotted path → values of equal length, taken together; each group is one axis of the grid."""
    random: RandomAxes | None = None
    """Points drawn at random (one axis of the grid)."""
    seeds: int | list[int] = 1
    """Number of seeds (0 … N-1), or the list of seeds; every point of the grid runs once per seed."""
    seed_fields: tuple[str, ...] = ("train.init_seed", "train.data_seed")
    """The fields a trial's seed sets (the evaluation set, train.eval_seed, stays the same for every trial)."""
    record: RecordSpec = RecordSpec()
    """Extra columns of the results table."""
    source: str | None = pydantic.Field(default=None, exclude=True)
    """The file the spec was read from (set by load_spec; not part of the spec)."""

    @model_validator(mode="before")
    @classmethod
    def _old_names(cls, data: Any) -> Any:
        # A spec written with old field names runs as if it named the new ones (one warning).
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for entry in ("base", "grid"):
            if isinstance(data.get(entry), dict):
                data[entry] = renamed_fields(data[entry], RENAMED_PATHS)
        if isinstance(data.get("base"), dict) and isinstance(data["base"].get("train"), dict):
            data["base"] = {**data["base"], "train": renamed_fields(data["base"]["train"], RENAMED_TRAIN_FIELDS, "train.")}
        if isinstance(data.get("zip"), list):
            data["zip"] = [renamed_fields(group, RENAMED_PATHS) if isinstance(group, dict) else group for group in data["zip"]]
        random = data.get("random")
        if isinstance(random, dict) and isinstance(random.get("fields"), dict):
            data["random"] = {**random, "fields": renamed_fields(random["fields"], RENAMED_PATHS)}
        if isinstance(data.get("seed_fields"), (list, tuple)) and any(path in RENAMED_PATHS for path in data["seed_fields"]):
            warn_old_names()
            data["seed_fields"] = [RENAMED_PATHS.get(path, path) for path in data["seed_fields"]]
        return data

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is not None and value not in PRESETS:
            raise ValueError(f"unknown preset {value!r}; choose from {', '.join(PRESETS)}")
        return value

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, value: int | list[int]) -> int | list[int]:
        if isinstance(value, int):
            if value < 1:
                raise ValueError(f"seeds must be a number >= 1 or a list of seeds, got {value}")
        elif not value or len(set(value)) != len(value) or min(value) < 0:
            raise ValueError(f"seeds must list distinct integers >= 0, got {value}")
        return value

    @field_validator("base", mode="before")
    @classmethod
    def _nest_base(cls, value: Any) -> Any:
        # YAML has no dotted keys: {"train.steps": 60} means {"train": {"steps": 60}}, as in TOML.
        if not isinstance(value, dict):
            return value
        nested: dict[str, Any] = {}
        for key, item in value.items():
            head, _, rest = str(key).partition(".")
            if rest:
                nested.setdefault(head, {})[rest] = item
            elif isinstance(item, dict) and isinstance(nested.get(head), dict):
                nested[head].update(item)
            else:
                nested[head] = item
        for head in nested:
            if head not in (*SECTIONS, "init_from"):
                raise ValueError(f"unknown section {head!r}; base holds task, model, train and init_from")
        return nested

    @model_validator(mode="after")
    def _check_axes(self) -> "SweepSpec":
        for path, values in self.grid.items():
            _check_values(f"grid {path!r}", values)
        for index, group in enumerate(self.zip):
            if not group:
                raise ValueError(f"zip[{index}] is empty")
            lengths = {path: len(values) for path, values in group.items()}
            if len(set(lengths.values())) != 1:
                shown = ", ".join(f"{path!r} has {n}" for path, n in lengths.items())
                raise ValueError(f"zip[{index}]: the lists must have the same length ({shown})")
            points = list(zip(*group.values()))
            _check_values(f"zip[{index}]", points)
        seen: dict[str, str] = {}
        for path, where in self.entries():
            check_path(path, where, self.task_kinds())
            if path in seen:
                raise ValueError(f"{where}: {path!r} is varied twice (also by {seen[path]})")
            seen[path] = where
        for path in self.seed_fields:
            check_path(path, "seed_fields", self.task_kinds())
            if path in seen:
                raise ValueError(f"seed_fields: {path!r} is also varied by {seen[path]}; a seed would overwrite it")
        return self

    def entries(self) -> list[tuple[str, str]]:
        """``(path, where)`` of every varied field: ``where`` names the spec entry (``grid 'model.d_model'``)."""
        found = [(path, f"grid {path!r}") for path in self.grid]
        found += [(path, f"zip[{i}] {path!r}") for i, group in enumerate(self.zip) for path in group]
        if self.random is not None:
            found += [(path, f"random {path!r}") for path in self.random.fields]
        return found

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seeds)) if isinstance(self.seeds, int) else list(self.seeds)

    def base_config(self) -> dict:
        """The base RunConfig as JSON data: the preset's (or the defaults) with ``base`` merged in."""
        start = PRESETS[self.preset]().variant(self.variant) if self.preset else RunConfig()
        data = start.model_dump(mode="json")
        for section, values in self.base.items():
            if isinstance(values, dict) and isinstance(data.get(section), dict):
                if section == "task" and values.get("kind", data["task"]["kind"]) != data["task"]["kind"]:
                    data["task"] = dict(values)  # another kind: none of the old task's fields apply
                else:
                    data[section] = {**data[section], **values}
            else:
                data[section] = values
        return data

    def task_kinds(self) -> list[str]:
        """Task kinds the trials can have (the base's, and any ``task.kind`` axis values)."""
        base_kind = (self.base.get("task") or {}).get("kind") if isinstance(self.base.get("task"), dict) else None
        if base_kind is None:
            base_kind = PRESETS[self.preset]().variant(self.variant).task.kind if self.preset else "nrecurrence"
        kinds = [base_kind]
        kinds += [str(v) for v in self.grid.get("task.kind", [])]
        kinds += [str(v) for group in self.zip for v in group.get("task.kind", [])]
        return [kind for i, kind in enumerate(kinds) if kind not in kinds[:i]]


def _check_values(where: str, values: list) -> None:
    if not values:
        raise ValueError(f"{where}: the list of values is empty")
    shown = [repr(value) for value in values]
    for i, text in enumerate(shown):
        if text in shown[:i]:
            raise ValueError(f"{where}: the value {text} is listed twice")


def check_path(path: str, where: str, kinds: list[str]) -> None:
    """Refuse a dotted path that names no field of a RunConfig (for every task kind in ``kinds``)."""
    if path == "init_from":
        return
    section, _, name = path.partition(".")
    if section not in SECTIONS or not name:
        raise ValueError(f"{where}: {path!r} is not a field; name one as task.<field>, model.<field>, train.<field> or init_from")
    if "." in name:
        raise ValueError(f"{where}: {path!r} goes too deep; vary a whole field ({section}.{name.split('.')[0]})")
    if section == "task":
        for kind in kinds:
            if kind not in Task.KINDS:
                raise ValueError(f"{where}: task kind {kind!r} is unknown; kinds are {', '.join(Task.KINDS)}")
            fields = Task.KINDS[kind].model_fields
            if name not in fields:
                raise ValueError(f"{where}: {kind} tasks have no field {name!r}; their fields are {', '.join(fields)}")
        return
    fields = SECTIONS[section].model_fields
    if name not in fields:
        raise ValueError(f"{where}: {section} has no field {name!r}; its fields are {', '.join(fields)}")


def load_spec(path: str | Path) -> SweepSpec:
    """Read a sweep spec from a ``.toml``, ``.yaml`` or ``.yml`` file; a bad one raises ValueError naming the entry."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".toml", ".yaml", ".yml"):
        raise SpecError(f"{path}: a sweep spec is a .toml, .yaml or .yml file")
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    try:
        if suffix == ".toml":
            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as error:  # tomllib.TOMLDecodeError, yaml.YAMLError: the parser's own words
        raise SpecError(f"{path}: not valid {suffix[1:].upper()}: {error}".replace("\n", " ")) from None
    spec = spec_from_data(data, str(path))
    return spec.model_copy(update={"source": str(path)})


def spec_from_data(data: Any, source: str = "spec") -> SweepSpec:
    """A :class:`SweepSpec` from parsed data; errors say ``source: entry: problem``."""
    entries = ", ".join(name for name in SweepSpec.model_fields if name != "source")
    if not isinstance(data, dict):
        raise SpecError(f"{source}: a sweep spec is a table of entries ({entries})")
    unknown = [key for key in data if key not in SweepSpec.model_fields or key == "source"]
    if unknown:
        raise SpecError(f"{source}: unknown entry {unknown[0]!r}; a sweep spec holds {entries}")
    try:
        return SweepSpec.model_validate(data)
    except pydantic.ValidationError as error:
        raise SpecError(f"{source}: {format_error(error)}") from None
