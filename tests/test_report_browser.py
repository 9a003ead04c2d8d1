"""A run page and the index in a real headless Chromium (Debian's package, driven by Playwright).

Checked: no console errors or uncaught script errors, no request for anything but
``file:``/``data:``/``about:``, every figure with a non-zero size, every link of the
index resolving to a page that passes the same checks; the slider and the sort work.
A page with each of those faults planted shows the checks fail when they should.
Legibility at a 1,400-px-wide window: no figure's text renders smaller than the
page's body text wherever it can be measured — every figure with an SVG (inlined,
or the SVG twin of an inlined PNG): the size of its text in the SVG, scaled by the
width the figure takes on the page; a PNG without one: the smallest text size its
metadata holds, at its resolution, scaled the same way — and no figure's metadata
names overlapping texts (titles, labels, tick labels, legends, annotations). The
sections fold and unfold.
"""

from __future__ import annotations

import base64
import re
import shutil
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from nrecur.analysis.figures.common import OVERLAPS_KEY, SMALLEST_TEXT_KEY
from nrecur.report import write_reports

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium package is not installed (scripts/install.sh installs it when run as root)"
)
LOCAL = ("file:", "data:", "about:")
BODY_TEXT_PX = 15.0
"""The report's body text, in CSS pixels: no figure's text renders smaller at a 1,400-px-wide window."""


@dataclass
class PageCheck:
    """What one page did in the browser."""

    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    """Requests for anything not local (``file:``, ``data:``, ``about:``)."""
    empty_figures: list[str] = field(default_factory=list)
    broken_links: list[str] = field(default_factory=list)
    links: list[Path] = field(default_factory=list)

    @property
    def faults(self) -> list[str]:
        return self.console_errors + self.requests + self.empty_figures + self.broken_links


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def reports(analyzed_runs, tmp_path_factory) -> Path:
    """The session's runs (tests/conftest.py), copied, with their reports and index."""
    root = tmp_path_factory.mktemp("browser") / "runs"
    shutil.copytree(analyzed_runs, root)
    write_reports(root)
    return root


def check(browser, path: Path, screenshot: Path | None = None) -> PageCheck:
    result = PageCheck()
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.on("console", lambda message: message.type == "error" and result.console_errors.append(f"console: {message.text}"))
    page.on("pageerror", lambda error: result.console_errors.append(f"script: {error}"))
    page.on("request", lambda request: request.url.startswith(LOCAL) or result.requests.append(f"request: {request.url}"))
    page.on("requestfailed", lambda request: result.console_errors.append(f"failed: {request.url}"))
    page.goto(path.resolve().as_uri(), wait_until="load")
    page.evaluate("document.querySelectorAll('details').forEach(d => d.open = true)")
    result.empty_figures = page.evaluate(
        """() => [...document.querySelectorAll('img, svg.spark')].flatMap(el => {
            const hidden = el.closest('[hidden]') !== null;  // a slider's other frames: loaded, not shown
            const box = el.getBoundingClientRect();
            const loaded = el.tagName !== 'IMG' || (el.complete && el.naturalWidth > 0 && el.naturalHeight > 0);
            return loaded && (hidden || (box.width > 0 && box.height > 0)) ? [] : ['empty figure: ' + (el.alt || el.tagName)];
        })"""
    )
    for href in page.evaluate("() => [...document.querySelectorAll('a[href]')].map(a => a.href)"):
        url = urlparse(href)
        if url.scheme != "file" or (url.fragment and unquote(url.path) == str(path.resolve())):
            if not href.startswith(LOCAL):
                result.broken_links.append(f"link off the machine: {href}")
            continue
        target = Path(unquote(url.path))
        (result.links if target.is_file() else result.broken_links).append(target if target.is_file() else f"broken link: {href}")
    if screenshot is not None:
        page.screenshot(path=str(screenshot), full_page=True)
    page.close()
    return result


def svg_text_sizes(svg: str) -> tuple[float, list[float]]:
    """The width of the SVG's view box and the font size of each of its texts, in its own units (points for
    matplotlib's files): text drawn as paths (a group scaled by size/100, matplotlib's default) or ``<text>``."""
    view = re.search(r'viewBox="[-0-9.e]+ [-0-9.e]+ ([0-9.e]+) [0-9.e]+"', svg)
    width = float(view.group(1)) if view else float("nan")
    sizes = [100 * float(scale) for scale in re.findall(r"scale\(([0-9.e+-]+) -\1\)", svg)]
    sizes += [float(size) for size in re.findall(r"font(?:-size)?:\s*([0-9.]+)px", svg)]
    return width, sizes


def png_facts(data: bytes) -> tuple[int, float | None, dict[str, str]]:
    """A PNG's width in pixels, its resolution in dots per inch (None without a ``pHYs`` chunk) and its text
    metadata (``tEXt`` and ``iTXt`` chunks), read chunk by chunk."""
    width, dpi, texts, at = struct.unpack(">I", data[16:20])[0], None, {}, 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I", data[at : at + 4])[0], data[at + 4 : at + 8]
        body = data[at + 8 : at + 8 + length]
        if kind == b"pHYs":
            per_metre, unit = struct.unpack(">IB", body[4:9])
            dpi = per_metre * 0.0254 if unit == 1 else None
        elif kind == b"tEXt":
            key, value = body.split(b"\0", 1)
            texts[key.decode("latin-1")] = value.decode("latin-1")
        elif kind == b"iTXt":
            key, rest = body.split(b"\0", 1)
            compressed, value = rest[0], rest[2:].split(b"\0", 2)[2]
            texts[key.decode()] = (zlib.decompress(value) if compressed else value).decode()
        at += 12 + length
    return width, dpi, texts


def shown_figures(page, folder: Path) -> list[dict]:
    """Every figure shown (not a slider's hidden frame): its caption, the width it takes, its SVG (inlined or
    its file's twin) and its PNG (inlined or its file's twin), where at hand."""
    shown = page.evaluate(
        """() => [...document.querySelectorAll('figure img, .slider img')].filter(img => img.closest('[hidden]') === null)
            .map(img => ({alt: img.alt, width: img.getBoundingClientRect().width, src: img.src, file: img.dataset.file || null}))"""
    )
    for image in shown:
        kind, _, data = image.pop("src").partition(";base64,")
        data = base64.b64decode(data)
        twin = (folder / unquote(image["file"])) if image["file"] else None
        image["svg"] = data.decode() if kind.endswith("svg+xml") else twin.with_suffix(".svg").read_text() if twin and twin.with_suffix(".svg").is_file() else None
        image["png"] = data if kind.endswith("png") else twin.with_suffix(".png").read_bytes() if twin and twin.with_suffix(".png").is_file() else None
    return shown


def figure_text_sizes(page, folder: Path) -> dict[str, float]:
    """The smallest rendered text (CSS px) of every figure shown where it is measurable, by its caption: from
    its SVG, else from its PNG's metadata (its smallest text in points) and resolution."""
    smallest = {}
    for image in shown_figures(page, folder):
        if image["width"] <= 0:
            continue
        if image["svg"]:
            width, sizes = svg_text_sizes(image["svg"])
            if sizes:
                smallest[image["alt"]] = min(sizes) * image["width"] / width
        elif image["png"]:
            pixels, dpi, texts = png_facts(image["png"])
            if dpi and texts.get("Smallest text (pt)"):
                smallest[image["alt"]] = float(texts["Smallest text (pt)"]) / 72 * dpi * image["width"] / pixels
    return smallest


def overlapping_labels(page, folder: Path) -> dict[str, str]:
    """Figures shown whose PNG's metadata names overlapping texts, by caption."""
    found = {}
    for image in shown_figures(page, folder):
        overlaps = png_facts(image["png"])[2].get(OVERLAPS_KEY, "") if image["png"] else ""
        if overlaps:
            found[image["alt"]] = overlaps
    return found


def test_no_figure_text_is_smaller_than_the_minimum_and_the_sections_fold(browser, reports, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto((reports / "tiny" / "report.html").as_uri())
    body = page.evaluate("parseFloat(getComputedStyle(document.body).fontSize)")
    assert body == BODY_TEXT_PX
    sizes = figure_text_sizes(page, reports / "tiny")
    assert len(sizes) >= 10, sizes  # the training curves, the KL heatmap, the analyses' figures, the slider's frames
    small = {caption: round(px, 1) for caption, px in sizes.items() if px < body - 0.01}
    assert small == {}, f"text under the body's {body} px: {small}"
    assert overlapping_labels(page, reports / "tiny") == {}
    folds = page.locator("details.fold")
    assert folds.count() >= 5 and page.evaluate("[...document.querySelectorAll('details.fold')].every(d => d.open)")
    height = page.evaluate("document.body.scrollHeight")
    page.locator("button[data-fold=close]").click()
    assert page.evaluate("[...document.querySelectorAll('details.fold')].every(d => !d.open)")
    assert page.evaluate("document.body.scrollHeight") < height / 3
    page.locator("#analysis-probes summary").click()
    assert page.locator("#analysis-probes img").first.is_visible()
    page.close()


def test_the_size_check_catches_small_text(browser, tmp_path):
    """A figure whose text is 6 pt, shown at its own size (8 px), a 10-pt one shown at half its size, a PNG
    at 120 dpi whose metadata says 8 pt (13.3 px), with tick labels drawn over each other, and a 10-pt PNG whose
    suptitle and panel titles run into each other (its tick labels apart, slanted ones too)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nrecur.analysis.figures.common import overlapping_text, smallest_text_pt

    figures = []
    for name, size, style, fmt in (
        ("six", 6, "", "svg"), ("ten, halved", 10, "width: 192px", "svg"), ("eight, crowded", 8, "", "png"), ("titles", 10, "", "png")
    ):  # fmt: skip
        fig, axes = plt.subplots(1, 2 if name == "titles" else 1, figsize=(4, 3), squeeze=False)
        ax = axes[0, 0]
        ax.set_title(name, fontsize=size)
        ax.tick_params(labelsize=size)
        metadata = None
        if name == "eight, crowded":
            ax.set_xticks(range(40), [str(1000 * i) for i in range(40)])
        if name == "titles":
            for panel, side in zip(axes[0], ("left", "right")):
                panel.set_title(f"the {side} panel's long title, wider than its panel", fontsize=size)
                panel.set_xticks(range(4), [f"slanted {i}" for i in range(4)], rotation=45, fontsize=size)
            fig.suptitle("a suptitle drawn over the panels' titles", y=0.9, fontsize=size)
        if fmt == "png":
            metadata = {SMALLEST_TEXT_KEY: f"{smallest_text_pt(fig):g}", OVERLAPS_KEY: "\n".join(overlapping_text(fig))}
        path = tmp_path / f"{name}.{fmt}"
        fig.savefig(path, dpi=120, metadata=metadata)
        plt.close(fig)
        uri = f"data:image/{'svg+xml' if fmt == 'svg' else 'png'};base64," + base64.b64encode(path.read_bytes()).decode()
        figures.append(f'<figure><img src="{uri}" alt="{name}" style="{style}"></figure>')
    (tmp_path / "small.html").write_text("<!doctype html><html><body>" + "".join(figures) + "</body></html>")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto((tmp_path / "small.html").as_uri())
    sizes = figure_text_sizes(page, tmp_path)
    overlaps = overlapping_labels(page, tmp_path)
    page.close()
    assert sizes["six"] == pytest.approx(8.0, rel=0.01) and sizes["ten, halved"] == pytest.approx(10 * 4 / 3 / 2, rel=0.01)
    assert sizes["eight, crowded"] == pytest.approx(8 / 72 * 120, rel=0.01)
    assert all(px < BODY_TEXT_PX for caption, px in sizes.items() if caption != "titles")
    assert sorted(overlaps) == ["eight, crowded", "titles"] and "2000 | 3000" in overlaps["eight, crowded"]
    collided = {frozenset(pair.split(" | ")) for pair in overlaps["titles"].splitlines()}
    suptitle, left, right = "a suptitle drawn over the panels' titles", *(f"the {side} panel's long title, wider than its panel" for side in ("left", "right"))
    assert {frozenset({suptitle, left}), frozenset({suptitle, right}), frozenset({left, right})} <= collided
    assert not any("slanted" in text for pair in collided for text in pair)  # slanted tick labels apart are no collision


def test_the_index_and_every_run_page_load_cleanly(browser, reports, tmp_path):
    index = check(browser, reports / "index.html", tmp_path / "index.png")
    assert index.faults == []
    assert sorted(index.links) == [reports / "fresh" / "report.html", reports / "tiny" / "report.html"]
    for page in index.links:
        result = check(browser, page, tmp_path / f"{page.parent.name}.png")
        assert result.faults == [], page
        assert reports / "index.html" in result.links  # each page links back to the index
    assert (tmp_path / "tiny.png").stat().st_size > 50_000  # a full page with figures, not a blank one


def test_the_checks_catch_a_request_a_console_error_an_empty_figure_and_a_broken_link(browser, reports, tmp_path):
    page = (reports / "tiny" / "report.html").read_text()
    planted = page.replace(
        "</main>",
        '<img src="http://127.0.0.1:9/x.png" alt="remote"><img src="data:image/png;base64," alt="empty">'
        '<a href="missing/report.html">gone</a><script>console.error("planted")</script></main>',
    )
    (tmp_path / "planted.html").write_text(planted)
    result = check(browser, tmp_path / "planted.html")
    text = " | ".join(result.faults)
    assert "planted" in text  # the console error
    assert "127.0.0.1:9" in text  # the request, refused by the page's Content-Security-Policy (a console error)
    assert "empty figure: empty" in text and "broken link" in text and "missing/report.html" in text


def test_the_slider_shows_one_checkpoint_at_a_time_and_the_index_sorts(browser, reports):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto((reports / "tiny" / "report.html").as_uri())
    slider = page.locator(".slider").first
    assert slider.locator(".label").inner_text() == "step 60"  # the latest checkpoint first
    slider.locator("input[type=range]").fill("0")
    assert slider.locator(".label").inner_text() == "step 0"
    assert slider.locator(".frame:not([hidden])").count() == 1
    page.goto((reports / "index.html").as_uri())
    names = lambda: page.locator("#runs tbody tr td:first-child").all_inner_texts()  # noqa: E731
    assert names() == ["fresh", "tiny"]
    page.locator("#runs thead th", has_text="run").first.click()
    assert names() == ["fresh", "tiny"]
    page.locator("#runs thead th", has_text="run").first.click()
    assert names() == ["tiny", "fresh"]
    page.close()
