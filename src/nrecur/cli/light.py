"""Light parsers: a command's options as plain data, cached, so a mistake in the arguments is reported before
the configs are imported.

The options of ``nrecur train``, ``eval``, ``run``, ``sample``, … are generated from the config classes and
presets (pydantic and numpy). :func:`describe` turns such a command's built parser into plain data: each
action's option strings, kind (``store``, ``store_true``, ``append``, …), nargs, choices, metavar, whether it
is required, and the mutually exclusive groups; :func:`rebuild` adds the same actions to the command's empty
parser, without help texts. The rebuilt parser accepts and refuses the same arguments with the same usage line
and message, except that values of the configs' own types (``--p-noise``, ``--ablate-head``, …) are taken as
text: the full parser checks them.

Descriptions are kept in one cache file (``$NRECUR_CACHE_DIR``, else ``$XDG_CACHE_HOME/nrecur``, else
``~/.cache/nrecur``) named after a fingerprint of the package's source files (their paths, sizes and
modification times), so an edit or an upgrade of nrecur is never answered from an old description. A command
is described the first time its full parser is built; until then its mistakes are reported by the full parser.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

from nrecur.cli.paths import existing_path

# The version of the description's format; part of the fingerprint.
FORMAT = 1

# argparse's action classes by the name a description gives them (the help action is the parser's own).
KINDS: dict[str, type[argparse.Action]] = {
    "store": argparse._StoreAction,
    "store_const": argparse._StoreConstAction,
    "store_true": argparse._StoreTrueAction,
    "store_false": argparse._StoreFalseAction,
    "append": argparse._AppendAction,
    "append_const": argparse._AppendConstAction,
    "extend": argparse._ExtendAction,
    "count": argparse._CountAction,
    "boolean_optional": argparse.BooleanOptionalAction,
}
# Value types a light parser converts as the full parser does; any other type is left to the full parser.
TYPES = {"int": int, "float": float, "str": str, "existing_path": existing_path}


def describe(parser: argparse.ArgumentParser) -> dict | None:
    """``parser``'s actions and mutually exclusive groups as JSON-ready data; None when an action is of a kind
    :data:`KINDS` does not hold (such a command is always parsed in full)."""
    kind_of = {cls: name for name, cls in KINDS.items()}
    described = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
    actions = []
    for action in described:
        kind = kind_of.get(type(action))
        if kind is None:
            return None
        item: dict = {"kind": kind, "option_strings": list(action.option_strings), "dest": action.dest, "required": action.required}
        if kind == "boolean_optional":  # rebuilt from the positive strings: argparse adds each --no-X again
            item["option_strings"] = [s for s in action.option_strings if not s.startswith("--no-")]
        if kind in ("store", "append", "extend"):
            type_name = next((name for name, fn in TYPES.items() if action.type is fn), None)
            item["nargs"] = action.nargs
            item["type"] = type_name
            if action.choices is not None and (action.type is None or type_name is not None):
                item["choices"] = list(action.choices)
        if kind in ("store", "append", "extend", "store_const", "append_const"):
            item["const"] = action.const
        if action.metavar is not None:
            item["metavar"] = action.metavar
        actions.append(item)
    groups = [{"required": g.required, "members": [described.index(a) for a in g._group_actions]} for g in parser._mutually_exclusive_groups]
    description = {"actions": actions, "groups": groups}
    try:
        return json.loads(json.dumps(description))  # only plain values (a const or choice of another type: None)
    except (TypeError, ValueError):
        return None


def rebuild(parser: argparse.ArgumentParser, description: dict) -> None:
    """Add the actions of ``description`` to ``parser`` (a command's parser as ``add_parser`` made it)."""
    groups: dict[int, argparse._MutuallyExclusiveGroup] = {}
    member_of = {i: g for g, group in enumerate(description["groups"]) for i in group["members"]}
    for i, item in enumerate(description["actions"]):
        kind = item["kind"]
        kwargs: dict = {"action": KINDS[kind], "default": argparse.SUPPRESS, "required": item["required"]}
        if kind in ("store", "append", "extend"):
            kwargs.update(nargs=item["nargs"], type=TYPES.get(item["type"] or "", None), choices=item.get("choices"))
        if "const" in item and not (kind in ("store", "append", "extend") and item["nargs"] not in ("?",)):
            kwargs["const"] = item["const"]
        if "metavar" in item:
            kwargs["metavar"] = tuple(item["metavar"]) if isinstance(item["metavar"], list) else item["metavar"]
        target: argparse._ActionsContainer = parser
        if i in member_of:
            g = member_of[i]
            if g not in groups:
                groups[g] = parser.add_mutually_exclusive_group(required=description["groups"][g]["required"])
            target = groups[g]
        if item["option_strings"]:
            target.add_argument(*item["option_strings"], dest=item["dest"], **kwargs)
        else:  # a positional: its dest is its name
            kwargs.pop("required")
            target.add_argument(item["dest"], **kwargs)


# ---------------------------------------------------------------------------- the cache


def cache_dir() -> Path:
    """Where descriptions are kept: ``$NRECUR_CACHE_DIR``, else ``$XDG_CACHE_HOME/nrecur``, else ``~/.cache/nrecur``."""
    if os.environ.get("NRECUR_CACHE_DIR"):
        return Path(os.environ["NRECUR_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "nrecur"


def fingerprint(root: str | os.PathLike | None = None) -> str:
    """A hash of the paths, sizes and modification times of the ``.py`` files under ``root`` (default: the
    nrecur package), the Python version and :data:`FORMAT`: it changes whenever a source file does."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent.parent
    digest = hashlib.blake2b(f"{FORMAT} {sys.version}".encode(), digest_size=12)
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                stat = os.stat(path)
                digest.update(f"{os.path.relpath(path, root)} {stat.st_size} {stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _cache_file(key: str) -> Path:
    return cache_dir() / f"commands-{key}.json"


def load(key: str | None = None) -> dict[str, dict]:
    """The cached descriptions, by command name, for the sources as they are now (``key``: their
    :func:`fingerprint`); empty when there are none."""
    try:
        with open(_cache_file(key or fingerprint())) as handle:
            found = json.load(handle)
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def save(parsers: dict[str, argparse.ArgumentParser], key: str | None = None) -> None:
    """Add the descriptions of ``parsers`` (command name → built parser) to the cache; descriptions of other
    fingerprints are removed. A cache that cannot be written is left alone: it only makes mistakes quicker."""
    key = key or fingerprint()
    known = load(key)
    new = {name: d for name, parser in parsers.items() if name not in known and (d := describe(parser)) is not None}
    if not new:
        return
    from nrecur._io import atomic_write_text  # here, not at the top: a mistake's light parser never writes

    path = _cache_file(key)
    try:
        atomic_write_text(path, json.dumps({**known, **new}))
        for old in path.parent.glob("commands-*.json"):
            if old != path:
                old.unlink(missing_ok=True)
    except OSError:
        return
