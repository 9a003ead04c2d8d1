"""No history in code (STYLE.md §16): the comments, docstrings and help texts under src/ hold no dates
and no commit hashes. History goes in CHANGELOG.md and git; measurements in result files."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parent.parent / "src" / "nrecur"
DATE = re.compile(r"\b(?:19|20)\d\d-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12]\d|3[01])\b")
COMMIT = re.compile(r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*[0-9])[0-9a-f]{7,40}\b")
"""A git commit hash, abbreviated (7) or full (40): lower-case hex with at least one digit and one letter."""
TEXT = {tokenize.COMMENT, tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", tokenize.STRING)}
"""Comments and string literals: docstrings and help texts are strings (f-strings' text too, Python ≥ 3.12)."""


def history(source: str) -> list[str]:
    """``line N: MATCH`` for every date or commit hash in the comments and strings of ``source``."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in TEXT:
            for pattern in (DATE, COMMIT):
                found += [f"line {token.start[0] + token.string[: m.start()].count(chr(10))}: {m.group(0)}" for m in pattern.finditer(token.string)]
    return found


def test_the_check_finds_dates_and_hashes_in_comments_docstrings_and_help():
    planted = '''"""Measured again on 2026-12-05."""
x = 1  # as before commit 3e0b9f8
parser.add_argument("--x", help=f"default {x} (since a828fa0e, faster)")
y = 0x7f3a9c21  # a hex literal in code is not history
'''
    assert history(planted) == ["line 1: 2026-12-05", "line 2: 3e0b9f8", "line 3: a828fa0e"]
    assert history('"""Shapes [batch, pos]; 1024 sequences; seed 20250101; the decade 1e-3..1e-2."""') == []


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_no_dates_or_commit_hashes_in_src(path):
    assert history(path.read_text()) == [], f"{path.relative_to(SRC.parent.parent)}: history belongs in CHANGELOG.md"
