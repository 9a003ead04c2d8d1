"""MkDocs hook: the CLI reference, generated from ``nrecur.cli.build_parser()`` at every build.

One page per command (``reference/cli/COMMAND.md``, nested subcommands too) and an index page, all
generated in memory: nothing is typed or committed, so a new command, option or help text shows up
at the next build. The nav entry ``reference/cli/index.md`` in ``mkdocs.yml`` becomes a section
holding the index and the command pages, in the order ``nrecur --help`` lists them.
"""

from __future__ import annotations

import argparse
import html
import os
from contextlib import contextmanager
from dataclasses import dataclass

from docs_nav import replace_nav
from mkdocs.structure.files import File

INDEX = "reference/cli/index.md"
WIDTH = 80
"""Columns of the usage lines (argparse reads ``COLUMNS``), so a page does not depend on the terminal."""


@dataclass(frozen=True)
class Command:
    """One page: ``nrecur NAME ...``, its parser and its one-line help from the parent's list."""

    path: tuple[str, ...]
    parser: argparse.ArgumentParser
    summary: str

    @property
    def title(self) -> str:
        return " ".join(("nrecur", *self.path))

    @property
    def src_uri(self) -> str:
        return f"reference/cli/{'-'.join(self.path)}.md"


@contextmanager
def _columns(width: int):
    before = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(width)
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = before


def _subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, argparse.ArgumentParser, str]]:
    """``(name, parser, one-line help)`` of ``parser``'s subcommands, in their order (aliases once)."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            seen: set[int] = set()
            for name, sub in action.choices.items():
                if id(sub) not in seen:
                    seen.add(id(sub))
                    found.append((name, sub, helps.get(name, "")))
    return found


def commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()) -> list[Command]:
    """Every command below ``parser``, depth first."""
    found = []
    for name, sub, summary in _subcommands(parser):
        found.append(Command((*path, name), sub, summary))
        found.extend(commands(sub, (*path, name)))
    return found


def _text(value: str) -> str:
    """Help text as Markdown that shows it literally."""
    escaped = html.escape(" ".join(value.split()), quote=False)
    for char in "\\`*_[]|":
        escaped = escaped.replace(char, "\\" + char if char != "|" else "&#124;")
    return escaped


def _usage(parser: argparse.ArgumentParser) -> str:
    with _columns(WIDTH):
        return parser.format_usage().strip()


def command_page(command: Command) -> str:
    """The Markdown of one command's page."""
    parser = command.parser
    formatter = parser._get_formatter()
    lines = [f"# {command.title}", ""]
    if command.summary:
        lines += [_text(command.summary[0].upper() + command.summary[1:]) + ".", ""]
    lines += ["```text", _usage(parser), "```", ""]
    if parser.description:
        lines += [_text(parser.description), ""]
    subs = _subcommands(parser)
    if subs:
        lines += ["| command | what it does |", "|---|---|"]
        lines += [f"| [`{' '.join((*command.path, n))}`]({'-'.join((*command.path, n))}.md) | {_text(h)} |" for n, _, h in subs]
        lines.append("")
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._SubParsersAction)]
        if not actions:
            continue
        title = group.title or "options"
        note = ""
        if len(title) > 60 and " (" in title:  # a long title: its parenthesis becomes a paragraph
            title, note = title.split(" (", 1)
            note = note[:-1] if note.endswith(")") else note
        lines += [f"## {_text(title)}", ""]
        for paragraph in (note, group.description or ""):
            if paragraph:
                lines += [_text(paragraph[0].upper() + paragraph[1:]), ""]
        lines += ["| option | meaning |", "|---|---|"]
        for action in actions:
            invocation = formatter._format_action_invocation(action)
            meaning = formatter._expand_help(action) if action.help else ""
            if action.choices is not None and not action.option_strings and "{" in invocation:
                invocation = action.dest
            lines.append(f"| `{invocation}` | {_text(meaning)} |")
        lines.append("")
    if parser.epilog:
        lines += [_text(parser.epilog), ""]
    return "\n".join(lines)


def index_page(parser: argparse.ArgumentParser, found: list[Command]) -> str:
    """The Markdown of the CLI reference's first page: what ``nrecur`` is and its commands."""
    lines = [
        "# CLI reference",
        "",
        _text(parser.description or ""),
        "",
        "```text",
        _usage(parser),
        "```",
        "",
        "Each page below is generated from the argument parser when the documentation is built "
        "(`scripts/docs_cli.py`); `nrecur COMMAND --help` prints the same.",
        "",
        "| command | what it does |",
        "|---|---|",
    ]
    for command in found:
        lines.append(f"| [`{command.title}`]({command.src_uri.rsplit('/', 1)[-1]}) | {_text(command.summary)} |")
    return "\n".join(lines) + "\n"


def _parser() -> argparse.ArgumentParser:
    from nrecur.cli import build_parser

    return build_parser()


def on_config(config, **kwargs):
    found = commands(_parser())
    section = [INDEX, *({command.title: command.src_uri} for command in found)]
    if config.nav is not None and not replace_nav(config.nav, INDEX, section, "CLI"):
        raise ValueError(f"mkdocs.yml's nav does not name {INDEX}, where the CLI reference goes")
    return config


def on_files(files, config, **kwargs):
    parser = _parser()
    found = commands(parser)
    files.append(File.generated(config, INDEX, content=index_page(parser, found)))
    for command in found:
        files.append(File.generated(config, command.src_uri, content=command_page(command)))
    return files
