"""Command-line options generated from config classes.

Each field of a :class:`nrecur._config.Config` becomes one ``--option``: its
help is the field's docstring, ``Literal`` fields get ``choices``, booleans get
``--flag/--no-flag``, tuples take several values. Values are handed to the
config's own validation, so the CLI and the Python API accept exactly the same
things and fail with the same messages.
"""

from __future__ import annotations

import argparse
import types
import typing
from typing import Any, Literal

from pydantic import BaseModel

from nrecur.tasks import Task, variants


def _flag(prefix: str, name: str) -> str:
    return "--" + (prefix + name).replace("_", "-")


def _dest(prefix: str, name: str) -> str:
    return (prefix + name).replace("-", "_")


def _strip_optional(annotation: Any) -> Any:
    """``X | None`` → ``X`` (omitting the option keeps the default; "none" is not offered)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) < len(typing.get_args(annotation)):
            return args[0] if len(args) == 1 else typing.Union[tuple(args)]
    return annotation


def parse_per_period(text: str) -> float | dict[int, float] | str:
    """A probability that may depend on the period, read by the task's own parser
    (:func:`nrecur.tasks.variants.parse_per_period`), its message kept for argparse."""
    try:
        return variants.parse_per_period(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def add_config_options(
    parser: argparse.ArgumentParser,
    config_cls: type[BaseModel],
    prefix: str = "",
    skip: typing.Iterable[str] = (),
    title: str | None = None,
    show_defaults: bool = True,
    notes: dict[str, str] | None = None,
) -> None:
    """Add one option per field of ``config_cls`` (defaults are left to the config).

    ``show_defaults=False`` leaves the config's defaults out of the help, for options that
    override values taken from elsewhere (e.g. a run's own task). ``notes``: text added to the
    help of a field (e.g. the values presets give it).
    """
    group = parser.add_argument_group(title or f"{config_cls.__name__} options")
    for name, field in config_cls.model_fields.items():
        if name in skip or name == "kind":
            continue
        annotation = _strip_optional(field.annotation)
        default = field.default
        help_text = (field.description or "").strip().replace("%", "%%")
        if field.is_required():
            help_text += " (required)"
        elif show_defaults:
            note = (notes or {}).get(name)
            help_text += f" (default: {_show(default)}" + (f"; {note}" if note else "") + ")"
        kwargs: dict[str, Any] = {"dest": _dest(prefix, name), "default": argparse.SUPPRESS, "help": help_text}
        origin = typing.get_origin(annotation)
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is Literal:
            kwargs["choices"] = list(typing.get_args(annotation))
            kwargs["metavar"] = "{" + ",".join(map(str, kwargs["choices"])) + "}"
        elif origin is tuple and typing.get_origin(typing.get_args(annotation)[0]) is tuple:
            kwargs["type"] = parse_nested
            kwargs["metavar"] = "JSON|FILE"
            kwargs["help"] = help_text + " Given as JSON (nested lists) or the path of a .json or .npy file."
        elif origin is tuple:
            item_type = typing.get_args(annotation)[0]
            kwargs["nargs"] = "+"
            kwargs["type"] = item_type if item_type in (int, float, str) else str
            kwargs["metavar"] = item_type.__name__.upper() if isinstance(item_type, type) else "X"
        elif annotation in (int, float, str):
            kwargs["type"] = annotation
            kwargs["metavar"] = annotation.__name__.upper()
        elif annotation == variants.PerPeriod:
            kwargs["type"] = parse_per_period
            kwargs["metavar"] = "P"
            kwargs["help"] = help_text + f" Written as {variants.PER_PERIOD_FORMS}."
        else:
            kwargs["type"] = str
        group.add_argument(_flag(prefix, name), **kwargs)


def given_options(config_cls: type[BaseModel], args: argparse.Namespace, skip: typing.Iterable[str] = ()) -> dict[str, Any]:
    """The fields of ``config_cls`` whose options were given on the command line, by field name."""
    values = {}
    for name in config_cls.model_fields:
        dest = _dest("", name)
        if name not in skip and hasattr(args, dest):
            value = getattr(args, dest)
            values[name] = tuple(value) if isinstance(value, list) else value
    return values


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return str(value)


def parse_nested(text: str) -> list:
    """A nested list of numbers from JSON text or from a ``.json`` / ``.npy`` file."""
    import json
    import os

    import numpy as np

    if text.endswith((".npy", ".json")) and not os.path.isfile(text):
        raise argparse.ArgumentTypeError(f"{text} is not a file (give JSON text, or the path of a .json or .npy file)")
    try:
        if text.endswith(".npy"):
            return np.load(text, allow_pickle=False).tolist()
        if text.endswith(".json"):
            with open(text) as handle:
                return json.load(handle)
        return json.loads(text)
    except (ValueError, OSError):
        what = "a .npy file of numbers" if text.endswith(".npy") else "JSON (nested lists of numbers)"
        raise argparse.ArgumentTypeError(f"cannot read {text!r} as {what}") from None


# ---------------------------------------------------------------------------- task kinds

# Task options keep their plain names (--periods, --x, --p): one option serves every kind with a field of that name.


def task_fields() -> dict[str, list[str]]:
    """Field name → the task kinds that have it (``kind`` itself excluded)."""
    owners: dict[str, list[str]] = {}
    for kind, cls in Task.KINDS.items():
        for name in cls.model_fields:
            if name != "kind":
                owners.setdefault(name, []).append(kind)
    return owners


def add_task_options(
    parser: argparse.ArgumentParser, show_defaults: bool = True, kind_help: str | None = None, notes: dict[str, str] | None = None
) -> None:
    """``--task KIND`` and the options of every task kind, one group per kind (shared names once)."""
    kinds = list(Task.KINDS)
    parser.add_argument(
        "--task", choices=kinds, metavar="{" + ",".join(kinds) + "}",
        help=kind_help or "task kind (default: nrecurrence); each kind takes only its own options below",
    )  # fmt: skip
    seen: set[str] = {"kind"}
    for kind, cls in Task.KINDS.items():
        fields = [name for name in cls.model_fields if name not in seen]
        seen.update(fields)
        others = [name for name in cls.model_fields if name not in fields and name != "kind"]
        title = f"task options (--task {kind})"
        if others:
            title += "; also " + ", ".join(_flag("", name) for name in others)
        add_config_options(
            parser, cls, skip=[n for n in cls.model_fields if n not in fields], title=title, show_defaults=show_defaults, notes=notes
        )


def given_task_options(args: argparse.Namespace) -> dict[str, Any]:
    """The task options given on the command line, by field name."""
    return {name: value for cls in Task.KINDS.values() for name, value in given_options(cls, args, skip=("kind",)).items()}


def task_from_args(args: argparse.Namespace, base: Task | None = None) -> Task:
    """The task the options ask for: ``--task`` (default: the kind of ``base``, else n-recurrence), its
    options over ``base``'s values when ``base`` is of the same kind, else over the kind's defaults.

    Options of another kind are an error that names them and the chosen kind's options.
    """
    kind = getattr(args, "task", None) or (base.kind if base is not None else "nrecurrence")
    cls = Task.KINDS[kind]
    given = given_task_options(args)
    foreign = [name for name in given if name not in cls.model_fields]
    if foreign:
        own = ", ".join(_flag("", n) for n in cls.model_fields if n != "kind") or "no options"
        wrong = ", ".join(f"{_flag('', n)} (an option of {'/'.join(task_fields()[n])})" for n in foreign)
        raise ValueError(f"task kind {kind!r} does not take {wrong}; it takes {own}")
    start = base.model_dump() if base is not None and base.kind == kind else {}
    return cls.model_validate({**start, **given, "kind": kind})
