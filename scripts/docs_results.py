"""Results as data: the documentation's numbers are rendered from committed result files, never typed.

A page that reports measurements opts in with ``render_macros: true`` in its front matter
(mkdocs-macros, configured in ``mkdocs.yml``) and refers to its data instead of holding it::

    {{ table("results/benchmarks/sampler.json",
             columns=["task", "ours_tokens_per_s", "loop_tokens_per_s", "ratio"],
             headers=["task", "ours (tokens/s)", "loop (tokens/s)", "ours / loop"],
             formats={"ratio": ".1f"}) }}
    {{ value("results/benchmarks/sampler.json", "rows.0.ratio", ".1f") }}
    {{ source("results/benchmarks/sampler.json") }}

Paths are relative to ``docs/``. A result file is JSON or CSV:

* JSON: an object with a list of row objects under ``rows`` (or under the key ``table(..., key=...)``
  names), and optionally ``command`` (what wrote it) and ``machine`` (where) for :func:`source`.
  The benchmark scripts write this shape with ``--json PATH`` (``benchmarks/_common.py``).
* CSV: a header line and one line per row; cells that read as numbers are numbers.

A missing file, a file that does not parse, a row without a requested column or a value that its
format cannot print raises :class:`ResultError` naming the file: with ``on_error_fail`` the build
fails. ``render(text)`` renders a page's source the same way outside MkDocs (``tests/test_docs.py``).
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from pathlib import Path
from typing import Any

DOCS = Path(__file__).resolve().parent.parent / "docs"


class ResultError(ValueError):
    """A result file that a page refers to is missing or malformed."""


def _resolve(path: str, docs: Path) -> Path:
    full = (docs / path).resolve()
    if docs.resolve() not in full.parents:
        raise ResultError(f"{path}: a result file must lie under docs/")
    if not full.is_file():
        raise ResultError(f"{path}: no such result file (run what writes it, or do not refer to it)")
    return full


def _number(text: str) -> Any:
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def load(path: str, docs: Path = DOCS) -> dict:
    """The result file ``docs/path`` as a dict (a CSV file's rows under ``rows``)."""
    full = _resolve(path, docs)
    text = full.read_text()
    if full.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ResultError(f"{path}: not valid JSON ({error})") from None
        if not isinstance(data, dict):
            raise ResultError(f"{path}: a result file holds a JSON object, not {type(data).__name__}")
        return data
    if full.suffix == ".csv":
        reader = csv.reader(io.StringIO(text))
        lines = [line for line in reader if line]
        if not lines:
            raise ResultError(f"{path}: an empty CSV file (a header line is needed)")
        header, body = lines[0], lines[1:]
        for number, line in enumerate(body, start=2):
            if len(line) != len(header):
                raise ResultError(f"{path}: line {number} has {len(line)} cells, the header {len(header)}")
        return {"rows": [{name: _number(cell) for name, cell in zip(header, line)} for line in body]}
    raise ResultError(f"{path}: a result file is .json or .csv")


def _rows(data: dict, path: str, key: str) -> list[dict]:
    rows = data.get(key)
    if not isinstance(rows, list) or not rows or not all(isinstance(row, dict) for row in rows):
        raise ResultError(f"{path}: '{key}' must be a non-empty list of row objects")
    return rows


def _cell(value: Any, spec: str | None, where: str) -> str:
    if value is None:
        return "—"
    if spec is not None:
        try:
            return format(value, spec)
        except (TypeError, ValueError) as error:
            raise ResultError(f"{where}: cannot format {value!r} as {spec!r} ({error})") from None
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return "—" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, (str, int, float)):
        return str(value)
    raise ResultError(f"{where}: {value!r} is not a number or text")


def _escape(text: str) -> str:
    """Text safe in a Markdown table cell."""
    return html.escape(text, quote=False).replace("|", "&#124;").replace("*", "\\*").replace("_", "\\_")


def table(
    path: str,
    columns: list[str] | None = None,
    headers: list[str] | None = None,
    formats: dict[str, str] | None = None,
    key: str = "rows",
    docs: Path = DOCS,
) -> str:
    """A Markdown table of the rows of ``docs/path`` (``columns``: which and in what order, default all of the
    first row's; ``headers``: their titles; ``formats``: a format spec per column, such as ``".3g"``)."""
    rows = _rows(load(path, docs), path, key)
    columns = list(columns) if columns is not None else list(rows[0])
    headers = list(headers) if headers is not None else columns
    if len(headers) != len(columns):
        raise ResultError(f"{path}: {len(headers)} headers for {len(columns)} columns")
    formats = formats or {}
    unknown = sorted(set(formats) - set(columns))
    if unknown:
        raise ResultError(f"{path}: formats for columns not shown: {', '.join(unknown)}")
    lines = ["| " + " | ".join(_escape(h) for h in headers) + " |", "|" + "---|" * len(columns)]
    for index, row in enumerate(rows):
        missing = [c for c in columns if c not in row]
        if missing:
            raise ResultError(f"{path}: row {index} of '{key}' has no {', '.join(missing)}")
        cells = [_escape(_cell(row[c], formats.get(c), f"{path}: row {index}, {c}")) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def value(path: str, where: str, spec: str | None = None, docs: Path = DOCS) -> str:
    """One value of ``docs/path``: ``where`` is a dotted path of keys and list indices (``rows.0.ratio``)."""
    found: Any = load(path, docs)
    for part in where.split("."):
        if isinstance(found, list) and part.lstrip("-").isdigit() and -len(found) <= int(part) < len(found):
            found = found[int(part)]
        elif isinstance(found, dict) and part in found:
            found = found[part]
        else:
            raise ResultError(f"{path}: no '{where}' (stopped at '{part}')")
    return _escape(_cell(found, spec, f"{path}: {where}"))


def source(path: str, docs: Path = DOCS) -> str:
    """One line saying where the numbers come from: the file, the command that wrote it and the machine."""
    data = load(path, docs)
    parts = [f"Data: `docs/{path}`"]
    if isinstance(data.get("command"), str):
        parts.append(f"written by `{data['command']}`")
    if isinstance(data.get("machine"), str):
        parts.append(f"on {_escape(data['machine'])}")
    return ", ".join(parts) + "."


MACROS = {"table": table, "value": value, "source": source}


def define_env(env) -> None:
    """mkdocs-macros' entry point: the macros above, reading under the site's ``docs_dir``."""
    docs = Path(env.conf["docs_dir"])
    for name, function in MACROS.items():
        env.macro(lambda *args, _f=function, **kwargs: _f(*args, docs=docs, **kwargs), name)


def render(text: str, docs: Path = DOCS) -> str:
    """A page's Markdown with its macros rendered as the build renders them (front matter left as it is)."""
    import jinja2

    environment = jinja2.Environment(undefined=jinja2.StrictUndefined)
    for name, function in MACROS.items():
        environment.globals[name] = lambda *args, _f=function, **kwargs: _f(*args, docs=docs, **kwargs)
    return environment.from_string(text).render()
