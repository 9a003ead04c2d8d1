"""Axes → trials: every trial's RunConfig is built and validated before anything runs.

The trials are the product of the grid's axes (in the spec's order), each zip
group, the random points and the seeds, the last varying fastest. A trial's id
is a digest of its whole config (less fields added in later versions, at the
value runs had before them: :data:`ADDED_FIELDS`; renamed fields under their
first name: :data:`FIRST_NAMES`): the same trial has the same id in any spec and
version, so extending a sweep (more seeds, another value) reruns nothing that is
done.
A config that pydantic refuses is reported naming the spec entry that set the
bad value, or every value of the trial when the problem is between fields
(``model.vocab_size (5) must equal task.vocab_size (4)``).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import pydantic

from nrecur._config import format_error
from nrecur.sweep.spec import RandomField, SpecError, SweepSpec
from nrecur.tasks import task_from_data
from nrecur.train.config import RunConfig
from nrecur.train.renames import RENAMED_TRAIN_FIELDS


@dataclass(frozen=True)
class Trial:
    """One training run of a sweep."""

    index: int
    """Position in the spec's expansion (the table's order)."""
    trial_id: str
    """Digest of the config: the name of its run folder and record."""
    params: dict[str, Any]
    """Dotted path → value of every varied field (the seed not included)."""
    seed: int
    config: RunConfig

    def describe(self) -> str:
        """``model.d_model=32 seed=1``: what sets this trial apart."""
        return " ".join([*(f"{path}={_show(value)}" for path, value in self.params.items()), f"seed={self.seed}"])


def _show(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


ADDED_FIELDS: dict[tuple[str, str], Any] = {("train", "optimizer"): "adamw", ("train", "compile"): "auto"}
"""Config fields added after sweeps were first written, with the value runs had before: left out of the id
at that value, so a trial finished by an earlier version keeps its id and is not trained again."""

FIRST_NAMES: dict[tuple[str, str], str] = {("train", new): old for old, new in RENAMED_TRAIN_FIELDS.items()}
"""Config fields renamed after sweeps were first written → their first name, under which the id hashes them,
so a trial keeps its id (:mod:`nrecur.train.renames`)."""


def config_id(config: RunConfig) -> str:
    """12 hex digits of the SHA-256 of the config's canonical JSON (without :data:`ADDED_FIELDS` at their old value,
    :data:`FIRST_NAMES` under their first name)."""
    dump = config.model_dump(mode="json")
    for (section, name), old in ADDED_FIELDS.items():
        if dump[section][name] == old:
            del dump[section][name]
    for (section, name), first in FIRST_NAMES.items():
        dump[section][first] = dump[section].pop(name)
    text = json.dumps(dump, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _draw(field: RandomField, rng: np.random.Generator) -> Any:
    if field.choices is not None:
        return field.choices[int(rng.integers(len(field.choices)))]
    if field.integer:
        low, high = math.ceil(field.low), math.floor(field.high)
        if field.log:
            return int(round(math.exp(rng.uniform(math.log(low), math.log(high)))))
        return int(rng.integers(low, high + 1))
    if field.log:
        return float(math.exp(rng.uniform(math.log(field.low), math.log(field.high))))
    return float(rng.uniform(field.low, field.high))


def axes(spec: SweepSpec) -> list[list[tuple[tuple[str, str], ...]]]:
    """The axes of the grid: each a list of points, a point a tuple of ``((path, where), value)``."""
    found: list[list] = []
    for path, values in spec.grid.items():
        found.append([(((path, f"grid {path!r}"), value),) for value in values])
    for index, group in enumerate(spec.zip):
        paths = list(group)
        found.append(
            [tuple(((path, f"zip[{index}] {path!r}"), value) for path, value in zip(paths, point)) for point in zip(*group.values())]
        )
    if spec.random is not None:
        rng = np.random.default_rng(spec.random.seed)
        points = []
        for _ in range(spec.random.samples):
            points.append(tuple(((path, f"random {path!r}"), _draw(field, rng)) for path, field in spec.random.fields.items()))
        found.append(points)
    return found


def _set(data: dict, path: str, value: Any) -> None:
    if path == "init_from":
        data["init_from"] = value
        return
    section, name = path.split(".", 1)
    if section == "task" and name == "kind" and value != data["task"].get("kind"):
        data["task"] = {"kind": value}  # another kind: none of the old task's fields apply
    else:
        data[section] = {**data[section], name: value}


def build_config(spec: SweepSpec, base: dict, point: tuple, seed: int) -> RunConfig:
    """The RunConfig of one point and seed; a refused config raises ValueError naming the entry."""
    data = json.loads(json.dumps(base))
    # task.kind first, so that other task fields of the point land in the new kind's table
    ordered = sorted(point, key=lambda item: item[0][0] != "task.kind")
    for (path, _), value in ordered:
        _set(data, path, value)
    for path in spec.seed_fields:
        _set(data, path, seed)
    vocab_set = "vocab_size" in (spec.base.get("model") or {}) or any(path == "model.vocab_size" for (path, _), _ in point)
    if not vocab_set and isinstance(data["task"], dict):
        # The model's vocabulary follows the task's, as it does for `nrecur train --task`.
        try:
            data["model"] = {**data["model"], "vocab_size": task_from_data(data["task"]).vocab_size}
        except (ValueError, pydantic.ValidationError):
            pass  # the task's own validation below names the problem
    try:
        return RunConfig.model_validate(data)
    except pydantic.ValidationError as error:
        where = f"{spec.source}: " if spec.source else ""
        raise SpecError(where + _blame(error, spec, point, seed)) from None


def _blame(error: pydantic.ValidationError, spec: SweepSpec, point: tuple, seed: int) -> str:
    """The spec entry that set the refused value, or every varied value of the trial."""
    message = format_error(error)
    for item in error.errors():
        loc = ".".join(str(part) for part in item["loc"][:2])
        for (path, where), value in point:
            named = path in item["msg"] or (path.startswith("task.") and loc == "task" and path.split(".", 1)[1] in item["msg"])
            if path == loc or (not loc and named) or (loc == "task" and named):
                return f"{where} = {json.dumps(value)} makes an invalid config: {message}"
        for section, values in spec.base.items():
            names = values if isinstance(values, dict) else {}
            for name in names:
                if f"{section}.{name}" == loc or (section == "task" and loc == "task" and name in item["msg"]):
                    return f"base {section}.{name} = {json.dumps(names[name])}: {message}"
    values = ", ".join(f"{where} = {json.dumps(value)}" for (_, where), value in point) or "the base config"
    return f"the trial with {values} (seed {seed}) is invalid: {message}"


def expand(spec: SweepSpec) -> list[Trial]:
    """Every trial of ``spec``, validated; raises ValueError naming the first bad entry."""
    base = spec.base_config()
    trials: list[Trial] = []
    seen: dict[str, Trial] = {}
    for point_parts in itertools.product(*axes(spec)):
        point = tuple(item for part in point_parts for item in part)
        for seed in spec.seed_list:
            config = build_config(spec, base, point, seed)
            trial_id = config_id(config)
            params = {path: value for (path, _), value in point}
            if trial_id in seen:
                warnings.warn(
                    f"two points of the sweep give the same config ({seen[trial_id].describe()}); it runs once",
                    stacklevel=2,
                )
                continue
            trial = Trial(index=len(trials), trial_id=trial_id, params=params, seed=seed, config=config)
            seen[trial_id] = trial
            trials.append(trial)
    return trials
