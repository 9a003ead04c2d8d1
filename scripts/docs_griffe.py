"""A griffe extension for the API reference: the docstrings' reStructuredText bits read as Markdown.

nrecur's docstrings use ``double backticks`` (a code span in Markdown too), Sphinx roles such as
``:class:`~nrecur.train.Trainer``` and ``::`` before an indented literal block. This turns a role into
a code span of the name as Sphinx would show it (``~`` keeps the last part) and ``::`` into ``:``;
the indented block that follows is already a code block in Markdown.
"""

from __future__ import annotations

import re

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|data|attr|obj|exc|const|ref|doc):`(~?)([^`]+)`")
LITERAL = re.compile(r"::$", re.MULTILINE)


def _role(match: re.Match) -> str:
    shortened, name = match.groups()
    return f"`{name.rsplit('.', 1)[-1] if shortened else name}`"


CODE_SPAN = re.compile(r"(`+)(.+?)\1")


def _escape_brackets(line: str) -> str:
    """Square brackets outside code spans as literal text: shapes such as ``[vocab][state]`` are not links."""
    parts, last = [], 0
    for match in CODE_SPAN.finditer(line):
        parts.append(line[last : match.start()].replace("[", "\\[").replace("]", "\\]"))
        parts.append(match.group(0))
        last = match.end()
    parts.append(line[last:].replace("[", "\\[").replace("]", "\\]"))
    return "".join(parts)


def as_markdown(text: str) -> str:
    """``text`` with Sphinx roles as code spans, ``::`` at a line's end as ``:``, and square brackets outside
    code (spans, and blocks indented by four spaces) escaped."""
    text = LITERAL.sub(":", ROLE.sub(_role, text))
    return "\n".join(line if line.startswith("    ") else _escape_brackets(line) for line in text.split("\n"))


class SphinxRolesAsCode(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = as_markdown(obj.docstring.value)
