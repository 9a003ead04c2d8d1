"""The README's measured blocks are what their result files give (scripts/render_readme.py), never typed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_is_rendered_from_its_result_files():
    result = subprocess.run([sys.executable, "scripts/render_readme.py", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.fixture(scope="module")
def render_readme():
    """``scripts/render_readme.py`` as a module."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import render_readme
    finally:
        sys.path.pop(0)
    return render_readme


def test_the_check_fails_on_a_typed_number(render_readme):
    text = (ROOT / "README.md").read_text()
    assert "<!-- generated:analyses -->" in text and "<!-- generated:benchmarks -->" in text
    typed = text.replace("<!-- generated:benchmarks -->\n", "<!-- generated:benchmarks -->\n| a number typed by hand | 42 |\n")
    assert render_readme.render(typed) != typed and render_readme.render(text) == text


def test_the_readme_is_short_and_undated():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    import re

    assert not re.search(r"\b20\d\d-\d\d-\d\d\b", text) and not re.search(r"\bcommit [0-9a-f]{7,40}\b", text)


def test_every_benchmark_row_shows_both_speeds(render_readme):
    """A row with a ratio shows the two speeds it is the ratio of, whatever the result file names them."""
    rows = [line.split(" | ") for line in render_readme.benchmarks_block().splitlines()[2:]]
    assert rows and all(row[2] != "–" and row[3] != "–" for row in rows), rows
