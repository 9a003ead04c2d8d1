"""``nrecur`` command line: a thin layer over the library.

Each command lives in a module of this package that exposes
``register(subparsers)``; the module adds its parser and sets ``handler`` to a
function ``handler(args) -> int``. Bad input ends in one line on stderr and exit
code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

import pydantic

from nrecur._config import format_error

# Command modules, in the order ``nrecur --help`` lists them.
COMMAND_MODULES = ("nrecur.cli.data", "nrecur.cli.train", "nrecur.cli.analyze", "nrecur.cli.report", "nrecur.cli.sweep", "nrecur.cli.studies")


class UsageError(Exception):
    """Bad input the user can fix; printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block) and exit code 2.

    Abbreviated options are refused (``--d-mod`` is not taken for ``--d-model``).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nrecur",
        description="nrecur: hidden-rule processes (n-recurrence, HMMs such as Mess3 and RRXOR, in-context modular "
        "arithmetic), their exact Bayes observers, and small transformers trained on them.",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=OneLineParser)
    for module_name in COMMAND_MODULES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            if error.name == module_name:
                continue  # a command module not written yet
            raise
        module.register(subparsers)
    return parser


def _one_line_warning(message, category, filename, lineno, line=None) -> str:
    return f"nrecur: warning: {message}\n"


def _glue_dash_values(parser: argparse.ArgumentParser, argv: list[str]) -> list[str]:
    """``--p-noise -0.2/n`` → ``--p-noise=-0.2/n``: argparse would take ``-0.2/n`` for an option and say
    "expected one argument"; glued, the value reaches the config's validation and its clear message."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    sub = actions[0].choices.get(argv[0]) if actions and argv else None
    if sub is None:
        return argv
    known = {s for a in sub._actions for s in a.option_strings}
    takes_value = {s for a in sub._actions if a.option_strings and a.nargs is None and isinstance(a, argparse._StoreAction) for s in a.option_strings}
    out: list[str] = []
    i = 0
    while i < len(argv):
        if argv[i] in takes_value and i + 1 < len(argv) and argv[i + 1].startswith("-") and argv[i + 1] not in known:
            out.append(f"{argv[i]}={argv[i + 1]}")
            i += 2
        else:
            out.append(argv[i])
            i += 1
    return out


def main(argv: list[str] | None = None) -> int:
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning  # restored on the way out: callers in the same process keep theirs
    try:
        return _main(argv)
    finally:
        warnings.formatwarning = formatwarning


def _main(argv: list[str] | None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(_glue_dash_values(parser, argv))
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except pydantic.ValidationError as error:
        print(f"{parser.prog} {args.command}: error: {format_error(error)}", file=sys.stderr)
    except OSError as error:
        # "[Errno 28] No space left on device: 'runs/x/config.json'" → "No space left on device: runs/x/config.json"
        text = f"{error.strerror}: {error.filename}" if error.strerror and error.filename else str(error)
        print(f"{parser.prog} {args.command}: error: {text}", file=sys.stderr)
    except (UsageError, ValueError, OverflowError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
    except MemoryError as error:  # the estimates before large allocations should make this rare
        print(f"{parser.prog} {args.command}: error: out of memory{f' ({error})' if str(error) else ''}; ask for less", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
