"""MkDocs hook: one page per analysis, generated from the registry (``nrecur.analysis.ANALYSES``) at every build.

Each page holds what the analysis module says of itself (the technique and how
to read it), its options with their defaults and meaning (the options model's
field docstrings), how to run it, and — where the documentation keeps an
example result (``docs/results/analyses/NAME.json`` with its figures beside
it, copied from a real run by ``scripts/docs_examples.py``) — that result's
headline, each figure beside its controls, and its figures. Nothing is typed:
a new analysis, option or headline figure shows up at the next build. The nav
entry ``analyses/index.md`` becomes a section of these pages.
"""

from __future__ import annotations

import html
import json
import math
from pathlib import Path

from docs_nav import replace_nav
from mkdocs.structure.files import File

INDEX = "analyses/index.md"
EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "results" / "analyses"
"""Example results: ``NAME.json`` (as ``nrecur analyze`` writes it) and its PNG figures."""


def _text(value: str) -> str:
    escaped = html.escape(" ".join(str(value).split()), quote=False)
    for char in "\\`*_[]|":
        escaped = escaped.replace(char, "\\" + char if char != "|" else "&#124;")
    return escaped


def _code(value: str) -> str:
    """``value`` as a code span in a table cell: literal inside (no backslash escapes), only ``|`` kept out."""
    return "`" + str(value).replace("`", "'").replace("|", "&#124;") + "`"


def _number(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _paragraphs(doc: str) -> list[str]:
    """The module docstring as Markdown paragraphs (its ``literal`` roles kept as code)."""
    paragraphs = [" ".join(block.split()) for block in doc.strip().split("\n\n") if block.strip()]
    return [p.replace("``", "`") for p in paragraphs]


def headline_table(headline: dict, initialization: dict | None = None) -> list[str]:
    """Markdown rows: each headline figure beside its controls (pairing by the controls' suffixes), each
    control named with its label (``initialization``: the result file's, naming a fine-tune's source)."""
    from nrecur.analysis.figures.over_training import CONTROL_SUFFIXES, control_label, headline_panels

    def label(name: str) -> str:
        suffix = next(c for c in CONTROL_SUFFIXES if name.partition("/")[0].endswith(c))
        return control_label(suffix, initialization)

    panels = headline_panels([name for name in headline if name != "checkpoints"])
    lines = ["| figure | value | controls |", "|---|---|---|"]
    for title, members in panels:
        controls = ", ".join(f"{label(name)} ({_code(name)}) {_number(headline[name])}" for name in members if name != title) or "–"
        lines.append(f"| {_code(title)} | {_number(headline.get(title))} | {controls} |")
    return lines


def example_section(name: str) -> list[str]:
    """The example result's headline and figures, when the documentation keeps one."""
    path = EXAMPLES / f"{name}.json"
    if not path.is_file():
        return []
    data = json.loads(path.read_text())
    source = EXAMPLES / "source.json"
    origin = json.loads(source.read_text()) if source.is_file() else {}
    run = origin.get("runs", {}).get(name, "a run of the main job")
    lines = ["## An example", "", f"On {_text(run)} (step {data.get('step', '?')}), `nrecur analyze` wrote:", ""]
    lines += headline_table(data["headline"], data.get("initialization")) + [""]
    for figure in data.get("figures", []):
        if figure.endswith(".png") and (EXAMPLES / figure).is_file():
            lines += [f"![{_text(figure)}](../results/analyses/{figure})", ""]
    return lines


def analysis_page(analysis) -> str:
    lines = [f"# {analysis.name}", "", _text(analysis.description[0].upper() + analysis.description[1:]) + ".", ""]
    lines += [p + "\n" for p in _paragraphs(analysis.module_doc)]
    lines += ["## Run it", "", "```bash", f"nrecur analyze RUN --what {analysis.name}"]
    if analysis.over_training is not None:
        lines.append(f"nrecur analyze RUN --what {analysis.name} --checkpoints all   # at every saved checkpoint too")
    lines += ["```", "", "```python", "from nrecur import load_run", "from nrecur.analysis import compute", "",
              f'result = compute(load_run("RUN"), "{analysis.name}", seed=0)', "print(result.headline)", "```", ""]  # fmt: skip
    lines += ["## Options", "", "Give them as `--set OPTION=VALUE` (or `--set " + analysis.name + ".OPTION=VALUE`).", "",
              "| option | default | meaning |", "|---|---|---|"]  # fmt: skip
    for option, (default, doc) in analysis.options.documented().items():
        lines.append(f"| `{option}` | `{_text(repr(default))}` | {_text(doc)} |")
    lines.append("")
    lines += example_section(analysis.name)
    return "\n".join(lines) + "\n"


def index_page(analyses) -> str:
    lines = [
        "# Analyses",
        "",
        "Every analysis is written in one contract (`nrecur.analysis.contract`): typed options, a frozen result "
        "whose JSON is its fields, a `headline` in which every figure stands beside its controls (the run's own "
        "initialization, shuffled targets, no edit, the ceiling), and figures drawn from the result alone. "
        "These pages are generated from the registry when the documentation is built; "
        "`nrecur analyze --list` prints the same options.",
        "",
        "| analysis | what it measures | over training |",
        "|---|---|---|",
    ]
    for a in analyses:
        lines.append(f"| [{a.name}]({a.name}.md) | {_text(a.description)} | {'yes' if a.over_training is not None else 'no'} |")
    lines += ["", "How to add one: [Adding an analysis](adding.md).", ""]
    return "\n".join(lines)


def _analyses():
    from nrecur.analysis import ANALYSES

    return list(ANALYSES.values())


def on_config(config, **kwargs):
    section = [INDEX, *({a.name: f"analyses/{a.name}.md"} for a in _analyses()), {"Adding an analysis": "analyses/adding.md"}]
    if config.nav is not None and not replace_nav(config.nav, INDEX, section, "Analyses"):
        raise ValueError(f"mkdocs.yml's nav does not name {INDEX}, where the analyses' pages go")
    return config


def on_files(files, config, **kwargs):
    analyses = _analyses()
    files.append(File.generated(config, INDEX, content=index_page(analyses)))
    for analysis in analyses:
        files.append(File.generated(config, f"analyses/{analysis.name}.md", content=analysis_page(analysis)))
    return files
