"""The parts of a run page built from files: evaluation tables and one section per analysis found.

An analysis section opens with the paragraph its module gives on the technique
and how to read it (the module docstring, as ``nrecur analyze --help`` has
it), then its headline numbers and its figures; its over-training result, when
there is one, follows inside the same section. The headline is a compact table:
a figure and its controls (``x``, ``x_random_init``, ``x_shuffled``, …) share a
row, and figures of several quantities (``x/period``, ``x/target``) share a
column each. A figure's caption is the first line of its title, which
:func:`~nrecur.analysis.figures.common.save_figure` keeps in the file. The belief geometry over
training also gets a checkpoint slider: one small frame per saved checkpoint,
drawn here from the points in ``geometry_over_training.json``.
"""

from __future__ import annotations

import html
import math
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nrecur.analysis import ANALYSES
from nrecur.analysis.figures.common import pyplot
from nrecur.analysis.figures.over_training import CONTROL_SUFFIXES, control_label
from nrecur.analysis.figures.geometry import belief_colours, draw_simplex, label_vertices
from nrecur.report.curves import SET_LABELS, eval_sets
from nrecur.report.embed import Budget, Image, figure_image, file_image
from nrecur.report.reading import AnalysisFile, RunRecord

__all__ = ["AnalysisSection", "Slider", "Table", "analysis_sections", "evaluation_tables", "figure_caption", "fmt", "headline_tables", "sample_sizes"]


@dataclass(frozen=True)
class Table:
    """A plain table: a caption, a header row and rows of already formatted cells."""

    caption: str
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Slider:
    """Frames shown one at a time under a range input (one per checkpoint)."""

    title: str
    labels: tuple[str, ...]
    frames: tuple[Image, ...]
    fixed: Image | None = None
    """An image shown beside every frame (the observer's beliefs)."""


@dataclass(frozen=True)
class Part:
    """One analysis result inside its section: headline, figures, maybe a slider."""

    name: str
    step: int | None
    headline: tuple[Table, ...]
    """The headline figures as compact tables (:func:`headline_tables`)."""
    figures: tuple[Image, ...]
    slider: Slider | None = None
    sizes: tuple[tuple[str, str], ...] = ()
    """How much data it used: ``(what, how many)``."""


@dataclass(frozen=True)
class AnalysisSection:
    name: str
    description: str
    paragraphs: tuple[str, ...]
    """The technique and how to read it, as safe HTML (escaped, ``code`` marked)."""
    parts: tuple[Part, ...] = field(default_factory=tuple)


def fmt(value, digits: int = 4) -> str:
    """A number for a table: 4 significant digits, integers whole, missing or non-finite as an em dash."""
    if value is None or isinstance(value, bool):
        return "—" if value is None else str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return "—"
        if value == int(value) and abs(value) < 1e9:
            return str(int(value))
        return f"{value:.{digits}g}"
    return str(value)


# --- evaluation tables


def _accuracy_name(line: dict, summary: dict | None) -> str | None:
    if summary and isinstance(summary.get("accuracy_name"), str):
        return summary["accuracy_name"]
    for key in line:
        if key.startswith("eval/bayes_") and key != "eval/bayes_ce":
            return key[len("eval/bayes_") :]
    return None


def evaluation_tables(record: RunRecord) -> list[Table]:
    """Overall (one row per evaluation set), by stratum, and KL by position, at the latest evaluation."""
    line = record.last
    if line is None:
        return []
    sets = eval_sets(line)
    accuracy = _accuracy_name(line, record.summary)
    step = line["step"]
    header = ("set", "model CE", "Bayes CE", "excess CE", "KL") + ((accuracy, f"Bayes {accuracy}") if accuracy else ())
    rows = []
    for name in sets:
        cells = [SET_LABELS.get(name, name)] + [fmt(line.get(f"{name}/{q}")) for q in ("model_ce", "bayes_ce", "excess_ce", "kl")]
        if accuracy:
            cells += [fmt(line.get(f"{name}/{accuracy}")), fmt(line.get(f"{name}/bayes_{accuracy}"))]
        rows.append(tuple(cells))
    tables = [Table(f"overall at step {step} (nats/token; accuracy at the positions the task scores)", header, tuple(rows))]

    strata = [key[len("eval/kl_") :] for key in line if key.startswith("eval/kl_") and key != "eval/kl_per_position"]
    if strata:
        for quantity, label in (("kl", "KL (nats/token)"), (accuracy, accuracy)):
            if quantity is None:
                continue
            rows = tuple((SET_LABELS.get(s, s),) + tuple(fmt(line.get(f"{s}/{quantity}_{stratum}")) for stratum in strata) for s in sets)
            tables.append(Table(f"{label} by stratum of the hidden truth at step {step}", ("set", *strata), rows))

    per_position = line.get("eval/kl_per_position")
    if isinstance(per_position, list) and per_position:
        width = 16
        rows = tuple(
            (f"{start}–{min(start + width, len(per_position)) - 1}",) + tuple(fmt(v, 3) for v in per_position[start : start + width])
            for start in range(0, len(per_position), width)
        )
        header = ("positions",) + tuple(f"+{i}" for i in range(min(width, len(per_position))))
        tables.append(Table(f"KL by position at step {step}, held-out sequences (position i predicts token i+1)", header, rows))
    return tables


# --- analysis sections


def _inline(text: str) -> str:
    """Escaped text with the docstrings' inline marks as HTML: ``code``, `code`, **bold**, *emphasis*."""
    text = html.escape(text, quote=False)
    text = re.sub(r":\w+:`~?([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"``(.+?)``", r"<code>\1</code>", text)
    text = re.sub(r"(?<![`\w])`([^`]+)`", r"<code>\1</code>", text)
    text = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", text)
    return re.sub(r"(?<![\w*])\*([^*\s][^*]*?)\*(?![\w*])", r"<em>\1</em>", text)


def _paragraphs(doc: str | None) -> tuple[str, ...]:
    """The module docstring after its first line, as safe HTML blocks: paragraphs, lists where the lines start
    with ``* `` or ``- ``, and literal blocks (an indented paragraph after one ending in ``::``, which shows
    one ``:``) as preformatted text."""
    if not doc:
        return ()
    blocks = []
    literal = False
    for paragraph in doc.strip().split("\n\n")[1:]:
        if literal and all(line[:1].isspace() for line in paragraph.splitlines() if line.strip()):
            blocks.append(f"<pre>{html.escape(textwrap.dedent(paragraph).strip(), quote=False)}</pre>")
            continue
        literal = paragraph.rstrip().endswith("::")
        if literal:  # RST: "text::" shows "text:", "text ::" shows "text", a bare "::" nothing
            paragraph = re.sub(r"\s+::$", "", paragraph.rstrip()).removesuffix(":")
            if paragraph == ":":
                continue
        items: list[list[str]] = []
        prose: list[str] = []
        for line in (line.strip() for line in paragraph.splitlines()):
            if line[:2] in ("* ", "- "):
                items.append([line[2:]])
            elif items:
                items[-1].append(line)
            else:
                prose.append(line)
        block = f"<p>{_inline(' '.join(prose))}</p>" if prose else ""
        if items:
            block += "<ul>" + "".join(f"<li>{_inline(' '.join(item))}</li>" for item in items) + "</ul>"
        blocks.append(block)
    return tuple(blocks)


SAMPLE_SIZES = {
    "n_sequences": "fresh sequences analysed",
    "decode_sequences": "sequences the belief decoders are fitted on",
    "mlp_rows": "positions each MLP probe is fitted on (at most)",
}
"""JSON keys (at the top of an analysis's JSON or in its ``options``) saying how much data it used → their row
in its headline table."""


def sample_sizes(item: AnalysisFile) -> tuple[tuple[str, str], ...]:
    """``(what, how many)`` for each :data:`SAMPLE_SIZES` key the analysis's JSON (or its options) holds."""
    options = item.data.get("options") if isinstance(item.data.get("options"), dict) else {}
    found = {key: item.data.get(key, options.get(key)) for key in SAMPLE_SIZES}
    return tuple((label, f"{found[key]:,}") for key, label in SAMPLE_SIZES.items() if isinstance(found[key], int) and not isinstance(found[key], bool))


def _parts(name: str, names) -> tuple[str, str, str]:
    """``r2_linear_random_init/target`` → ``("r2_linear", "target", "random_init")`` when ``names`` hold the figure
    it controls (``r2_linear/target``); a name without one is a figure of its own."""
    stem, _, tail = name.partition("/")
    for suffix in CONTROL_SUFFIXES:
        base = stem[: -len(suffix)]
        if stem.endswith(suffix) and base and (f"{base}/{tail}" if tail else base) in names:
            return base, tail, suffix[1:]
    return stem, tail, ""


def headline_tables(headline: dict, initialization: dict | None = None) -> tuple[Table, ...]:
    """A headline as compact tables.

    Figures of several quantities (``x/period``, ``x/target``, ``x_random_init/period``, …) form a grid: one
    row per figure and per control of it, one column per quantity. The others form a list: one row per figure,
    its value beside each of its controls (``x``, ``x_no_edit``, ``x_ceiling``, …), each control labelled by
    :func:`~nrecur.analysis.figures.over_training.control_label` (``initialization``: the result file's)."""
    parts = {name: _parts(name, headline) for name in headline}
    tailed = [name for name in headline if parts[name][1]]
    rows_of = list(dict.fromkeys((parts[name][0], parts[name][2]) for name in tailed))
    tails = list(dict.fromkeys(parts[name][1] for name in tailed))
    grid = len(tails) >= 2 and len(rows_of) < len(tailed)
    tables = []
    if grid:
        stems = list(dict.fromkeys(stem for stem, _ in rows_of))
        order = [suffix[1:] for suffix in CONTROL_SUFFIXES]
        rows_of.sort(key=lambda row: (stems.index(row[0]), order.index(row[1]) + 1 if row[1] in order else 0))  # controls under their figure
        cells = {(parts[name][0], parts[name][2], parts[name][1]): headline[name] for name in tailed}
        rows = tuple(
            (stem if not control else f"{stem}, {control_label(control, initialization)}",) + tuple(fmt(cells[(stem, control, tail)]) if (stem, control, tail) in cells else "" for tail in tails)
            for stem, control in rows_of
        )  # fmt: skip
        tables.append(Table("figures by quantity (a control right under its figure)", ("figure", *tails), rows))
    listed = [name for name in headline if not (grid and parts[name][1])]
    if listed:
        base = {name: parts[name][0] + (f"/{parts[name][1]}" if parts[name][1] else "") for name in listed}
        controls = list(dict.fromkeys(parts[name][2] for name in listed if parts[name][2]))
        values: dict[str, dict[str, object]] = {}
        for name in listed:
            values.setdefault(base[name], {})[parts[name][2]] = headline[name]
        header = ("figure", "value", *(control_label(c, initialization) for c in controls))
        rows = tuple((figure, fmt(got.get("")) if "" in got else "", *(fmt(got[c]) if c in got else "" for c in controls)) for figure, got in values.items())
        tables.append(Table("figures" + (" beside their controls" if controls else ""), header, rows))
    return tuple(tables)


def figure_caption(stem: Path) -> str:
    """What the figure shows: the title kept in ``stem.svg`` (:func:`~nrecur.analysis.figures.common.save_figure`),
    else the file's name in words."""
    svg = stem.with_name(stem.name + ".svg")
    try:
        with open(svg, encoding="utf-8", errors="replace") as handle:
            head = handle.read(4096)
    except OSError:
        head = ""
    found = re.search(r"<title>(.*?)</title>", head, re.S)
    if found and found.group(1).strip():
        return html.unescape(found.group(1).strip())
    return stem.name.replace("__", ": ").replace("_", " ")


def _figures(item: AnalysisFile, budget: Budget, page_dir) -> tuple[Image, ...]:
    stems = list(dict.fromkeys(path.with_suffix("") for path in item.figures))
    return tuple(file_image(stem, budget, page_dir, title=figure_caption(stem)) for stem in stems)


def _geometry_slider(item: AnalysisFile, budget: Budget) -> Slider | None:
    data = item.data
    try:
        snapshots = data["snapshots"]
        truth = np.asarray(snapshots[-1]["points_true"], dtype=float)
        frames = [np.asarray(s["points_mapped"], dtype=float) for s in snapshots]
        steps, r2 = list(data["steps"]), list(data["series"]["r2"])
        vertices = list(snapshots[-1].get("vertices", []))
    except (KeyError, TypeError, ValueError, IndexError):
        return None
    if truth.ndim != 2 or not frames or len(frames) != len(steps):
        return None
    plt = pyplot()
    colours = belief_colours(truth)

    def panel(points, title):
        fig, ax = plt.subplots(figsize=(3.4, 3.4))
        draw_simplex(ax, points, colours, title, size=1.2)
        if vertices:
            label_vertices(ax, vertices)
        # The same limits in every frame (the simplex and a margin; points far outside are cut off), so that
        # moving the slider moves the points, not the triangle.
        ax.set_xlim(-1.25, 1.25)
        ax.set_ylim(-0.95, 1.35)
        fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.9)
        return figure_image(fig, title, budget, fmt="png", tight=False)

    fixed = panel(truth, "observer's beliefs")
    images = tuple(panel(points, f"step {step}, R² {fmt(value, 3)}") for step, value, points in zip(steps, r2, frames))
    return Slider("decoded belief simplex at each checkpoint", tuple(f"step {s}" for s in steps), images, fixed)


SLIDERS = {"geometry_over_training": _geometry_slider}
"""Result name → a checkpoint slider drawn from its JSON (results without an entry get none)."""


def analysis_sections(analyses: tuple[AnalysisFile, ...], budget: Budget, page_dir) -> list[AnalysisSection]:
    """One section per analysis found, in registry order, its over-training result inside it."""
    by_analysis: dict[str, list[AnalysisFile]] = {}
    for item in analyses:
        by_analysis.setdefault(item.analysis, []).append(item)
    sections = []
    for name, items in by_analysis.items():
        registered = ANALYSES.get(name)
        doc = registered.module_doc if registered is not None else None
        parts = []
        for item in items:
            slider_fn = SLIDERS.get(item.name)
            parts.append(
                Part(
                    name=item.name,
                    step=item.step,
                    headline=headline_tables(item.headline, item.data.get("initialization")),
                    figures=_figures(item, budget, page_dir),
                    slider=slider_fn(item, budget) if slider_fn else None,
                    sizes=sample_sizes(item),
                )
            )
        sections.append(
            AnalysisSection(
                name=name,
                description=registered.description if registered else "an analysis this version of nrecur does not know",
                paragraphs=_paragraphs(doc),
                parts=tuple(parts),
            )
        )
    return sections
