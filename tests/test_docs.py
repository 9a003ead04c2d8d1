"""The documentation site: results rendered from their files, the CLI reference from the parser, a strict build.

``mkdocs build --strict`` fails on a broken link, a missing page or a result file that is missing or
malformed (``scripts/docs_results.py``); here it runs on the real docs and on a tiny site with a bad
result file planted, and the built site opens in headless Chromium with no console error and no
request off the machine.
"""

from __future__ import annotations

import argparse
import html
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
MKDOCS = [sys.executable, "-m", "mkdocs"]
ENV = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}

pytest.importorskip("mkdocs", reason="the docs extra is not installed (pip install -e '.[docs]')")


def load_script(name: str):
    """A script as MkDocs loads a hook: its folder on ``sys.path`` while it runs (so it imports its neighbours)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return module


results = load_script("docs_results")
docs_cli = load_script("docs_cli")


def results_pages() -> list[Path]:
    """The pages that render macros (their front matter says ``render_macros: true``)."""
    return sorted(p for p in DOCS.rglob("*.md") if re.match(r"---\n(.*\n)*?render_macros: true\n(.*\n)*?---\n", p.read_text()))


# --- results as data


def test_there_are_results_pages():
    assert DOCS / "benchmarks.md" in results_pages()


@pytest.mark.parametrize("page", results_pages(), ids=lambda p: str(p.relative_to(DOCS)))
def test_every_results_page_renders_from_its_files(page):
    text = page.read_text()
    rendered = results.render(text)
    live = re.sub(r"\{% raw %\}.*?\{% endraw %\}|\{#.*?#\}", "", text, flags=re.S)  # not quoted examples or comments
    for call in re.findall(r"\{\{\s*table\((.*?)\}\}", live, flags=re.S):
        literal = re.match(r"\s*\"([^\"]+)\"", call)
        if literal is None:  # the file named by a {% set %}, its key built in a loop: the render above checked them
            continue
        key = re.search(r"key=\"([^\"]+)\"", call)
        rows = results.load(literal.group(1))[key.group(1) if key else "rows"]
        assert rows and "|---|" in rendered, call


ANALYSIS_EXAMPLES = DOCS / "results" / "analyses"
"""The analyses' example results: analysis JSON files with their figures (scripts/docs_examples.py), not tables."""
FIGURES = (".png", ".svg")
"""A study's figures lie beside its result files (docs/results/studies/NAME/); the strict build checks the links to them."""


@pytest.mark.parametrize(
    "path",
    sorted(
        p.relative_to(DOCS).as_posix()
        for p in (DOCS / "results").rglob("*")
        if p.is_file() and ANALYSIS_EXAMPLES not in p.parents and p.suffix not in FIGURES
    ),
)
def test_every_result_file_is_well_formed(path):
    data = results.load(path)
    tables = [key for key, value in data.items() if isinstance(value, list)]
    assert tables, f"{path} holds no table"
    for key in tables:
        assert results.table(path, key=key).count("\n") == len(data[key]) + 2


@pytest.mark.parametrize("path", sorted(p.name for p in ANALYSIS_EXAMPLES.glob("*.json") if p.name != "source.json"))
def test_every_analysis_example_rebuilds_from_its_file_and_has_its_figures(path):
    import json

    from nrecur.analysis import read_result

    result = read_result(ANALYSIS_EXAMPLES / path)
    assert result.headline
    figures = [f for f in json.loads((ANALYSIS_EXAMPLES / path).read_text())["figures"] if f.endswith(".png")]
    assert figures and all((ANALYSIS_EXAMPLES / f).is_file() for f in figures)


def test_an_analysis_page_names_a_fine_tunes_control_its_fine_tuning_source():
    pages = load_script("docs_analyses")
    headline = {"kl": 0.1, "kl_random_init": 0.5, "kl_shuffled": 0.4}
    assert pages.headline_table(headline, {"init_from": None, "init_seed": 0})[2] == "| `kl` | 0.1 | initialization (`kl_random_init`) 0.5, shuffled (`kl_shuffled`) 0.4 |"
    tuned = pages.headline_table(headline, {"init_from": "/runs/source", "init_seed": 0})[2]
    assert tuned == "| `kl` | 0.1 | fine-tuning source (`kl_random_init`) 0.5, shuffled (`kl_shuffled`) 0.4 |"


BAD = {
    "missing": (None, "no such result file"),
    "not JSON": ("{'rows': ", "not valid JSON"),
    "a list, not an object": ("[1, 2]", "holds a JSON object"),
    "no rows": (json.dumps({"rows": []}), "non-empty list of row objects"),
    "rows of numbers": (json.dumps({"rows": [1, 2]}), "non-empty list of row objects"),
    "a column missing": (json.dumps({"rows": [{"task": "a", "ratio": 2.0}, {"task": "b"}]}), "row 1 of 'rows' has no ratio"),
    "text where a number goes": (json.dumps({"rows": [{"task": "a", "ratio": "fast"}]}), "cannot format 'fast'"),
}


def docs_with(tmp_path: Path, content: str | None, name: str = "x.json") -> Path:
    docs = tmp_path / "docs"
    (docs / "results").mkdir(parents=True)
    if content is not None:
        (docs / "results" / name).write_text(content)
    return docs


@pytest.mark.parametrize("case", BAD)
def test_a_missing_or_malformed_result_file_is_an_error_naming_it(case, tmp_path):
    content, message = BAD[case]
    docs = docs_with(tmp_path, content)
    with pytest.raises(results.ResultError, match=re.escape(message)) as error:
        results.table("results/x.json", columns=["task", "ratio"], formats={"ratio": ".1f"}, docs=docs)
    assert str(error.value).startswith("results/x.json: ")


def test_csv_files_and_values(tmp_path):
    docs = docs_with(tmp_path, "task,ratio\ndeterministic,19.02\nstochastic,69.5\n", "x.csv")
    assert results.table("results/x.csv", formats={"ratio": ".1f"}, docs=docs).splitlines()[2:] == [
        "| deterministic | 19.0 |",
        "| stochastic | 69.5 |",
    ]
    assert results.value("results/x.csv", "rows.-1.ratio", ".0f", docs=docs) == "70"
    (docs / "results" / "x.csv").write_text("task,ratio\ndeterministic\n")
    with pytest.raises(results.ResultError, match="line 2 has 1 cells, the header 2"):
        results.table("results/x.csv", docs=docs)
    with pytest.raises(results.ResultError, match="must lie under docs/"):
        results.table("../outside.json", docs=docs)


TINY_SITE = """
site_name: tiny
docs_dir: docs
plugins:
  - macros:
      module_name: {module}
      render_by_default: false
      on_error_fail: true
      on_undefined: strict
"""

PAGE = '---\nrender_macros: true\n---\n\n# Results\n\n{{ table("results/x.json", columns=["task", "ratio"], formats={"ratio": ".2f"}) }}\n'


def build_tiny_site(tmp_path: Path, content: str | None) -> subprocess.CompletedProcess:
    docs = docs_with(tmp_path, content)
    (docs / "index.md").write_text(PAGE)
    (tmp_path / "mkdocs.yml").write_text(TINY_SITE.format(module=ROOT / "scripts" / "docs_results"))
    return subprocess.run([*MKDOCS, "build", "--strict"], cwd=tmp_path, capture_output=True, text=True, env=ENV, timeout=120)


def test_a_good_result_file_is_rendered_into_the_built_page(tmp_path):
    done = build_tiny_site(tmp_path, json.dumps({"rows": [{"task": "deterministic", "ratio": 19.0168}]}))
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "site" / "index.html").read_text()
    assert "<td>deterministic</td>" in page and "<td>19.02</td>" in page


@pytest.mark.parametrize("case", ["a column missing"])  # the other cases: test_a_missing_or_malformed_result_file_is_an_error_naming_it
def test_a_missing_or_malformed_result_file_fails_the_build(case, tmp_path):
    content, message = BAD[case]
    done = build_tiny_site(tmp_path, content)
    assert done.returncode != 0
    assert "results/x.json" in done.stderr and message in done.stderr


# --- the CLI reference


def parser_options(parser: argparse.ArgumentParser) -> list[str]:
    return [s for a in parser._actions if a.help != argparse.SUPPRESS for s in a.option_strings]


def test_every_command_and_option_of_the_parser_is_on_its_page():
    from nrecur.cli import build_parser

    found = docs_cli.commands(build_parser())
    assert {"train", "analyze", "sweep", "report"} <= {c.path[-1] for c in found}
    for command in found:
        page = docs_cli.command_page(command)
        assert page.startswith(f"# {command.title}\n")
        for option in parser_options(command.parser):
            assert f"`{option}" in page or f", {option}" in page, (command.title, option)


def test_a_new_option_or_command_appears_without_editing_the_docs():
    from nrecur.cli import build_parser

    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    subparsers.choices["train"].add_argument("--brand-new", metavar="X", help="an option added after the docs were written")
    subparsers.add_parser("brand-new-command", help="a command added after the docs were written")
    found = {c.title: c for c in docs_cli.commands(parser)}
    assert "`--brand-new X` | an option added after the docs were written |" in docs_cli.command_page(found["nrecur train"])
    assert "nrecur brand-new-command" in docs_cli.index_page(parser, list(found.values()))


def test_the_nav_gets_one_page_per_command():
    nav = [{"Home": "index.md"}, {"Reference": [{"API": "reference/api.md"}, {"CLI": docs_cli.INDEX}]}]
    assert docs_cli.replace_nav(nav, docs_cli.INDEX, [docs_cli.INDEX, {"nrecur train": "reference/cli/train.md"}], "CLI")
    assert nav[1]["Reference"][1] == {"CLI": [docs_cli.INDEX, {"nrecur train": "reference/cli/train.md"}]}
    assert not docs_cli.replace_nav([{"Home": "index.md"}], docs_cli.INDEX, [], "CLI")


def test_both_generating_hooks_place_their_section_with_one_helper():
    analyses = load_script("docs_analyses")
    assert analyses.replace_nav is docs_cli.replace_nav
    nav = ["index.md", analyses.INDEX]  # a bare entry gets the section's title
    assert analyses.replace_nav(nav, analyses.INDEX, [analyses.INDEX, {"probes": "analyses/probes.md"}], "Analyses")
    assert nav[1] == {"Analyses": [analyses.INDEX, {"probes": "analyses/probes.md"}]}


# --- the real site


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([*MKDOCS, "build", "--strict", "-d", str(out)], cwd=ROOT, capture_output=True, text=True, env=ENV, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return out


@pytest.mark.slow
def test_the_site_builds_strict_with_every_page(site):
    from nrecur.cli import build_parser

    for page in ("index.html", "getting-started.html", "tutorial.html", "guarantees.html", "benchmarks.html", "reference/api.html", "reference/cli/index.html"):
        assert (site / page).is_file(), page
    for command in docs_cli.commands(build_parser()):
        assert (site / command.src_uri.replace(".md", ".html")).is_file(), command.title
    api = (site / "reference" / "api.html").read_text()
    assert "nrecur.train.folder.RunFolder" in api and "load_run" in api  # mkdocstrings rendered the docstrings


@pytest.mark.slow
def test_the_site_loads_nothing_from_elsewhere(site):
    """No web fonts, no script or stylesheet from a CDN: the site opens offline."""
    remote = re.compile(r"<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)=\"(?:https?:)?//", re.I)
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert not remote.search(text), f"{page.relative_to(site)}: {remote.search(text).group(0)}"
        assert "fonts.googleapis" not in text and "fonts.gstatic" not in text, page


@pytest.mark.slow
def test_the_tutorial_page_shows_the_notebook_with_its_stored_outputs(site):
    """mkdocs-jupyter renders docs/tutorial.ipynb as it is stored (nothing run at build time), without the
    MathJax and Mermaid loaders that would reach a CDN (scripts/docs_notebook.py)."""
    import nbformat

    notebook = nbformat.read(DOCS / "tutorial.ipynb", as_version=4)
    page = (site / "tutorial.html").read_text()
    images = sum("image/png" in o.get("data", {}) for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs)
    assert images and page.count('src="data:image/png') == images
    printed = [o.text for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs if o.output_type == "stream"]
    assert printed and all(html.escape(text.splitlines()[0], quote=False) in page for text in printed)  # as stored
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", page, re.S)
    assert scripts and not [s for s in scripts if re.search(r"(?:https?:)?//[\w-]+\.[\w.-]+/", "".join(s))]
    assert (site / "tutorial.ipynb").is_file()  # the download link's target


def test_a_notebook_page_loses_its_cdn_loaders_and_any_other_remote_script_fails_the_build():
    docs_notebook = load_script("docs_notebook")
    page = (
        '<!-- Load mathjax --><script src=""> </script><!-- End of mathjax configuration -->'
        '<script type="module">const m = await import("https://cdn.example.org/mermaid.mjs");</script>'
        '<script src="assets/local.js"></script><p>out</p>'
    )
    assert docs_notebook.strip_loaders(page) == '<script src="assets/local.js"></script><p>out</p>'
    assert docs_notebook.remote_scripts(docs_notebook.strip_loaders(page)) == []
    elsewhere = '<script src="https://cdn.example.org/require.js"></script>'
    assert docs_notebook.remote_scripts(elsewhere) == ["https://cdn.example.org/require.js"]

    class Page:
        class file:
            src_uri = "tutorial.ipynb"

    from mkdocs.exceptions import PluginError

    with pytest.raises(PluginError, match=r"tutorial.ipynb: a script on the page loads https://cdn.example.org/require.js"):
        docs_notebook.on_page_content(page + elsewhere, Page)


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LOCAL = ("file:", "data:", "about:", "blob:")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium package is not installed (scripts/install.sh installs it as root)")
def test_the_site_opens_in_a_browser_with_no_error_and_no_request_off_the_machine(site, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")
    pages = ["index.html", "reference/cli/index.html", "reference/cli/train.html", "reference/api.html", "benchmarks.html", "tutorial.html"]
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            for name in pages:
                faults: list[str] = []
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.on("console", lambda message: message.type == "error" and faults.append(f"console: {message.text}"))
                page.on("pageerror", lambda error: faults.append(f"script: {error}"))
                page.on("request", lambda request: request.url.startswith(LOCAL) or faults.append(f"request: {request.url}"))
                page.on("requestfailed", lambda request: faults.append(f"failed: {request.url}"))
                page.goto((site / name).as_uri(), wait_until="load")
                page.wait_for_timeout(300)  # the theme's scripts (search index, navigation) settle
                assert page.locator("h1").first.inner_text().strip(), name
                page.screenshot(path=str(tmp_path / f"{name.replace('/', '_')}.png"))
                page.close()
                assert faults == [], (name, faults)
        finally:
            browser.close()
