"""A report never leaves its folder, and every link in it is a relative, URL-encoded path.

Hostile run folder names (``javascript:alert(1)``, ``%``, ``#``, spaces) become
links that stay paths; figure names in an analysis JSON that point outside the
run (absolute, ``../../``, a link to a file elsewhere) are left out with a
warning and never inlined; a run whose report cannot be written (read-only) is
skipped with a warning while the index over the others is still written.
"""

from __future__ import annotations

import base64
import errno
import json
import os
import re
import shutil
import urllib.parse
from pathlib import Path

import pytest

import nrecur._io
from nrecur.cli import main
from nrecur.report import write_report, write_reports
from nrecur.report.embed import Budget, file_image

TINY = [
    "--vocab-size", "6", "--periods", "2", "3", "--n-ctx", "10", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--d-head", "8", "--d-mlp", "32", "--steps", "20", "--batch-size", "8",
    "--eval-every", "10", "--eval-size", "32", "--checkpoint-every", "10", "--device", "cpu", "--no-progress",
]  # fmt: skip
HOSTILE = ["javascript:alert(document.domain)", "100%", "a#b", "with space", "q?x=1"]
SECRET = b'<svg xmlns="http://www.w3.org/2000/svg"><text>PRIVATE-7f3a</text></svg>'


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("containment") / "det"
    assert main(["train", "--out", str(folder), *TINY]) == 0
    return folder


def hrefs(html: str) -> list[str]:
    return [match for match in re.findall(r'href="([^"]*)"', html)]


def test_hostile_folder_names_are_relative_url_encoded_links(source, tmp_path):
    root = tmp_path / "runs"
    for name in HOSTILE:
        shutil.copytree(source, root / name)
    result = write_reports(root)
    assert len(result.reports) == len(HOSTILE) and not result.skipped
    html = (root / "index.html").read_text()
    links = [link for link in hrefs(html) if not link.startswith("#")]
    assert len(links) == len(HOSTILE)
    for link in links:
        assert ":" not in link and "#" not in link and "?" not in link and " " not in link, link
        assert (root / urllib.parse.unquote(link)).resolve() == (root / urllib.parse.unquote(link)).absolute().resolve()
        assert (root / urllib.parse.unquote(link)).is_file(), link  # the link leads to the run's page
    assert "javascript%3Aalert%28document.domain%29/report.html" in links
    assert "100%25/report.html" in links and "a%23b/report.html" in links and "with%20space/report.html" in links
    for name in HOSTILE:  # each run's page links back to the index, relatively
        page = (root / name / "report.html").read_text()
        assert "../index.html" in hrefs(page)


def test_a_left_out_figures_link_is_url_encoded(tmp_path):
    folder = tmp_path / "sweep #1" / "plots"
    folder.mkdir(parents=True)
    (folder / "final kl.png").write_bytes(b"\x89PNG not really")
    image = file_image(folder / "final kl", Budget(0), tmp_path)
    assert image.uri is None and image.link == "sweep%20%231/plots/final%20kl.png"


def test_figures_named_outside_the_run_are_never_inlined(source, tmp_path, recwarn):
    run = Path(shutil.copytree(source, tmp_path / "deep" / "run"))
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "private.svg").write_bytes(SECRET)
    analysis = run / "analysis"
    analysis.mkdir()
    (analysis / "mine.svg").write_bytes(b'<svg xmlns="http://www.w3.org/2000/svg"><text>mine</text></svg>')
    (analysis / "mine.png").symlink_to(outside / "private.svg")  # a sibling of an honest figure, linked outside
    (analysis / "link.svg").symlink_to(outside / "private.svg")
    names = [str(outside / "private.svg"), "../../../outside/private.svg", "link.svg", "mine.svg"]
    (analysis / "heads.json").write_text(json.dumps({"name": "heads", "headline": {"score": 0.5}, "figures": names}))
    result = write_report(run)
    html = Path(result.path).read_text()
    assert base64.b64encode(SECRET).decode() not in html and "PRIVATE-7f3a" not in html
    assert base64.b64encode((analysis / "mine.svg").read_bytes()).decode() in html  # the honest figure is there
    outside_names = names[:3]
    for name in outside_names:
        assert any(f"names a figure outside the run folder ({name!r})" in warning for warning in result.warnings), name
    assert result.figures >= 1


def test_a_read_only_run_is_skipped_with_a_warning_and_the_index_is_still_written(source, tmp_path, monkeypatch, recwarn):
    root = tmp_path / "runs"
    for name in ("a", "locked", "z"):
        shutil.copytree(source, root / name)
    real = nrecur._io.tempfile.mkstemp

    def read_only(*args, dir=None, **kwargs):
        if dir is not None and Path(dir) == root / "locked":
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(nrecur._io.tempfile, "mkstemp", read_only)
    assert main(["report", str(root)]) == 0
    said = f"{root / 'locked'}: its report could not be written (Permission denied: {root / 'locked' / 'report.html'})"
    assert any(said in str(warning.message) for warning in recwarn)
    assert (root / "a" / "report.html").exists() and (root / "z" / "report.html").exists()
    assert not (root / "locked" / "report.html").exists()
    html = (root / "index.html").read_text()
    assert "a/report.html" in hrefs(html) and "z/report.html" in hrefs(html)
    assert ">locked<" in html  # its row is there, without a link
    assert "its report could not be written" in html
