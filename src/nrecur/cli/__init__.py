"""``nrecur`` command line: a thin layer over the library.

Each command lives in a module of this package that exposes
``register(subparsers)``; the module adds its parser and sets ``handler`` to a
function ``handler(args) -> int``. A command whose options come from the
configs adds its parser with ``build=fn``: ``fn(parser)`` adds the options when
the command is used (or for the docs), so ``nrecur --help``, ``--version`` and a
mistyped command never import torch, the configs or the analyses; handlers
import what they need. Such a command's arguments are first parsed by its light
parser (:mod:`nrecur.cli.light`, rebuilt from a cached description of its
options), so a mistake in them is reported without the configs either. Bad
input ends in one line on stderr and exit code 2, never a traceback; a mistake
in the arguments also prints the command's usage line and the closest option or
choice.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import shlex
import signal
import sys
import threading
import warnings

from nrecur.cli.paths import existing_path  # noqa: F401  (the commands import it from here)

# Command modules, in the order ``nrecur --help`` lists them.
COMMAND_MODULES = ("nrecur.cli.data", "nrecur.cli.train", "nrecur.cli.analyze", "nrecur.cli.report", "nrecur.cli.sweep", "nrecur.cli.studies")


class UsageError(Exception):
    """Bad input the user can fix; printed as one line, exit code 2."""


class Terminated(KeyboardInterrupt):
    """SIGTERM while a command runs: handled as Ctrl-C is (finished work kept, the command that continues
    printed), exit code 143."""

    signal_name = "SIGTERM"
    exit_code = 128 + signal.SIGTERM


def same_command(args: argparse.Namespace, drop: tuple[str, ...] = ()) -> str:
    """The command as it was typed (``args.argv``), without the flags ``drop`` (``--fresh``): what continues a
    command that picks up where it stopped (the main job, a sweep, a study)."""
    return shlex.join(["nrecur", *(word for word in args.argv if word not in drop)])


def closest(word: str, candidates) -> str | None:
    """The candidate most like ``word`` (a mistyped option or choice), if one is close enough."""
    found = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return found[0] if found else None


class OneLineParser(argparse.ArgumentParser):
    """argparse whose errors are the command's usage line, then one line naming the command, with the
    closest option or choice suggested; exit code 2.

    Abbreviated options are refused (``--d-mod`` is not taken for ``--d-model``).
    """

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def usage_line(self) -> str:
        """``usage: nrecur train [options]`` (positionals kept; the options are in ``--help``)."""
        full = self.format_usage().strip()
        if len(full) <= 100:
            return full
        positionals = " ".join(argparse.HelpFormatter(self.prog)._format_args(a, a.metavar or a.dest) for a in self._positionals._group_actions)
        return f"usage: {self.prog} [options]{' ' + positionals if positionals else ''}  (see {self.prog} --help)"

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.usage_line()}\n{self.prog}: error: {message}{self._suggestion(message)}\n")

    def _suggestion(self, message: str) -> str:
        options = [s for a in self._actions for s in a.option_strings]
        if message.startswith("unrecognized arguments:"):
            for word in message.split(":", 1)[1].split():
                if word.startswith("--") and (match := closest(word.split("=")[0], options)):
                    return f"; did you mean {match}?"
            return ""
        choice = re.search(r"invalid choice: '([^']*)' \(choose from (.*)\)", message)
        if choice:
            match = closest(choice[1], re.findall(r"'([^']*)'", choice[2]))
            return f"; did you mean {match}?" if match else ""
        return ""


class LazyCommands(argparse._SubParsersAction):
    """Subcommands whose options may be added only once the command is chosen (``add_parser(..., build=fn)``);
    arguments the chosen command does not know are its error, with its usage line, not the top parser's."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = False
        self._builders: dict[str, object] = {}
        self.built_lazily: dict[str, argparse.ArgumentParser] = {}  # the commands whose options were added on use

    def add_parser(self, name: str, *, build=None, **kwargs):  # type: ignore[override]
        parser = super().add_parser(name, **kwargs)
        if build is not None:
            if self.lazy:
                self._builders[name] = build
            else:
                build(parser)
        return parser

    def built(self, name: str) -> argparse.ArgumentParser:
        """Command ``name``'s parser with all its options."""
        parser = self.choices[name]
        build = self._builders.pop(name, None)
        if build is not None:
            build(parser)
            self.built_lazily[name] = parser
        return parser

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        name, arg_strings = values[0], values[1:]
        if self.dest is not argparse.SUPPRESS:
            setattr(namespace, self.dest, name)
        command = self.built(name)
        found, extra = command.parse_known_args(arg_strings, None)
        for key, value in vars(found).items():
            setattr(namespace, key, value)
        if extra:
            command.error(f"unrecognized arguments: {' '.join(extra)}")


class VersionAction(argparse.Action):
    """``--version``: print nrecur's version and exit (looked up only then: it reads the package metadata)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help="show nrecur's version and exit") -> None:
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"nrecur {version()}")
        parser.exit()


def version() -> str:
    """The installed nrecur's version (the source tree's when it is not installed)."""
    from importlib import metadata

    try:
        return metadata.version("nrecur")
    except metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        from nrecur import __version__

        return __version__


def build_parser(lazy: bool = False) -> argparse.ArgumentParser:
    """The ``nrecur`` parser; ``lazy``: commands get their options only when chosen (what ``main`` does)."""
    parser = OneLineParser(
        prog="nrecur",
        description="nrecur: hidden-rule processes (n-recurrence, HMMs such as Mess3 and RRXOR, in-context modular "
        "arithmetic), their exact Bayes observers, and small transformers trained on them.",
    )
    parser.add_argument("--version", action=VersionAction)
    parser.register("action", "parsers", LazyCommands)
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=OneLineParser)
    subparsers.lazy = lazy
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
    sub = actions[0].built(argv[0]) if actions and argv and argv[0] in actions[0].choices else None
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


def _terminated(number, frame) -> None:
    raise Terminated()


def _commands(parser: argparse.ArgumentParser) -> LazyCommands:
    return next(a for a in parser._actions if isinstance(a, LazyCommands))


def check_lightly(argv: list[str]) -> int | None:
    """The exit code of a mistake in ``argv`` that the chosen command's light parser finds
    (:mod:`nrecur.cli.light`: no configs imported), printed as the full parser prints it; None when the
    arguments pass, ask for help, or the command's options need no configs or are not described yet."""
    parser = build_parser(lazy=True)
    commands = _commands(parser)
    if not argv or argv[0] not in commands._builders or "-h" in argv or "--help" in argv:
        return None
    from nrecur.cli import light

    description = light.load().get(argv[0])
    if description is None:
        return None
    commands._builders[argv[0]] = lambda command: light.rebuild(command, description)
    try:
        parser.parse_args(_glue_dash_values(parser, argv))
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    except (KeyError, TypeError, ValueError):  # a damaged description: the full parser decides
        return None
    return None


def _main(argv: list[str] | None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    mistake = check_lightly(argv)
    if mistake is not None:
        return mistake
    parser = build_parser(lazy=True)
    try:
        args = parser.parse_args(_glue_dash_values(parser, argv))
    except SystemExit as stop:  # --help, --version, or a mistake in the arguments (already printed)
        return stop.code if isinstance(stop.code, int) else 2
    finally:
        if _commands(parser).built_lazily:  # described for the next mistake's light parser
            from nrecur.cli import light

            light.save(_commands(parser).built_lazily)
    if not hasattr(args, "handler"):
        parser.print_help()
        return 2
    args.argv = argv
    import pydantic

    from nrecur._config import format_error

    # SIGTERM as Ctrl-C: work in progress is saved, the command that continues printed (signals: main thread only).
    on_term = signal.getsignal(signal.SIGTERM) if threading.current_thread() is threading.main_thread() else None
    if on_term is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminated)
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
    except KeyboardInterrupt as error:
        print(interrupted(args, error), file=sys.stderr)
        return getattr(error, "exit_code", 130)
    finally:
        if on_term is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, on_term)
    return 2


def interrupted(args: argparse.Namespace, error: KeyboardInterrupt) -> str:
    """What an interrupt left (``error.done``, e.g. the checkpoint written) and the command that continues
    (``args.again(args, error)``, set by the command; None: nothing to continue)."""
    signal_name = getattr(error, "signal_name", "SIGINT")
    line = f"nrecur {args.command}: interrupted ({signal_name})"
    done = getattr(error, "done", None)
    if done:
        line += f"; {done}"
    again = getattr(args, "again", None)
    command = again(args, error) if again is not None else None
    return line + (f"\ncontinue it: {command}" if command else "")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
