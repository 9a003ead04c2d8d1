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
COMMAND_MODULES = ("nrecur.cli.data", "nrecur.cli.train")


class UsageError(Exception):
    """Bad input the user can fix; printed as one line, exit code 2."""


class OneLineParser(argparse.ArgumentParser):
    """argparse with a one-line error message (no usage block) and exit code 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="nrecur",
        description="nrecur: n-recurrence tasks, the exact Bayes observer, and small transformers trained on them.",
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


def main(argv: list[str] | None = None) -> int:
    warnings.formatwarning = _one_line_warning
    parser = build_parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    try:
        return int(args.handler(args) or 0)
    except pydantic.ValidationError as error:
        print(f"{parser.prog} {args.command}: error: {format_error(error)}", file=sys.stderr)
    except (UsageError, ValueError, OverflowError, OSError) as error:
        print(f"{parser.prog} {args.command}: error: {error}", file=sys.stderr)
    except KeyboardInterrupt:
        print(f"{parser.prog} {args.command}: interrupted", file=sys.stderr)
        return 130
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
