"""A run page and the index in a real headless Chromium (Debian's package, driven by Playwright).

Checked: no console errors or uncaught script errors, no request for anything but
``file:``/``data:``/``about:``, every figure with a non-zero size, every link of the
index resolving to a page that passes the same checks; the slider and the sort work.
A page with each of those faults planted shows the checks fail when they should.
Legibility at a 1,400-px-wide window: no figure's text renders smaller than
:data:`MIN_TEXT_PX` wherever it can be measured — every figure with an SVG (inlined,
or the SVG twin of an inlined PNG): the size of its text in the SVG, scaled by the
width the figure takes on the page. The sections fold and unfold.
"""

from __future__ import annotations

import base64
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from nrecur.report import write_reports
from test_report import tiny_run

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="Debian's chromium package is not installed (scripts/install.sh installs it when run as root)"
)
LOCAL = ("file:", "data:", "about:")
MIN_TEXT_PX = 12.0
"""The smallest rendered size of a figure's text at a 1,400-px-wide window, in CSS pixels: about a caption's (12.5; the body text is 15)."""


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
def reports(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("browser") / "runs"
    tiny_run(root / "tiny")
    (root / "fresh").mkdir()
    shutil.copy(root / "tiny" / "config.json", root / "fresh" / "config.json")
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


def figure_text_sizes(page, folder: Path) -> dict[str, float]:
    """The smallest rendered text (CSS px) of every figure shown whose SVG is at hand, by its caption."""
    shown = page.evaluate(
        """() => [...document.querySelectorAll('figure img, .slider img')].filter(img => img.closest('[hidden]') === null)
            .map(img => ({alt: img.alt, width: img.getBoundingClientRect().width, src: img.src.startsWith('data:image/svg+xml;base64,') ? img.src : null,
                          file: img.dataset.file || null}))"""
    )
    smallest = {}
    for image in shown:
        if image["src"]:
            svg = base64.b64decode(image["src"].split(",", 1)[1]).decode()
        elif image["file"] and (folder / unquote(image["file"])).with_suffix(".svg").is_file():
            svg = (folder / unquote(image["file"])).with_suffix(".svg").read_text()
        else:
            continue  # a PNG without an SVG (a slider frame, the KL heatmap): not measurable
        width, sizes = svg_text_sizes(svg)
        if sizes and image["width"] > 0:
            smallest[image["alt"]] = min(sizes) * image["width"] / width
    return smallest


def test_no_figure_text_is_smaller_than_the_minimum_and_the_sections_fold(browser, reports, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto((reports / "tiny" / "report.html").as_uri())
    sizes = figure_text_sizes(page, reports / "tiny")
    assert len(sizes) >= 8, sizes  # the training curves and the analyses' figures
    small = {caption: round(px, 1) for caption, px in sizes.items() if px < MIN_TEXT_PX}
    assert small == {}, f"text under {MIN_TEXT_PX} px: {small}"
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
    """A figure whose text is 6 pt, shown at its own size (8 px), and a 10-pt one shown at half its size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figures = []
    for name, size, style in (("six", 6, ""), ("ten, halved", 10, "width: 192px")):
        fig, ax = plt.subplots(figsize=(4, 3))
        ax.set_title(name, fontsize=size)
        ax.tick_params(labelsize=size)
        path = tmp_path / f"{name}.svg"
        fig.savefig(path)
        plt.close(fig)
        uri = "data:image/svg+xml;base64," + base64.b64encode(path.read_bytes()).decode()
        figures.append(f'<figure><img src="{uri}" alt="{name}" style="{style}"></figure>')
    (tmp_path / "small.html").write_text("<!doctype html><html><body>" + "".join(figures) + "</body></html>")
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto((tmp_path / "small.html").as_uri())
    sizes = figure_text_sizes(page, tmp_path)
    page.close()
    assert sizes["six"] == pytest.approx(8.0, rel=0.01) and sizes["ten, halved"] == pytest.approx(10 * 4 / 3 / 2, rel=0.01)
    assert all(px < MIN_TEXT_PX for px in sizes.values())


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
