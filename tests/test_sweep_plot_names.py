"""A sweep over ``model.*`` and ``train.*`` fields: every figure the index shows is there and every link resolves.

The plots' file names hold the dotted field names (``final_kl__by__model.d_model__train.lr``); a suffix
replaced on such a name (``train.lr`` → ``train.png``) would report a figure missing that exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

from nrecur.report import write_reports
from nrecur.report.embed import Budget, file_image
from nrecur.sweep import BackendOptions, run_sweep, spec_from_data
from nrecur.sweep.plots import plot_metric

SPEC = {
    "name": "dotted",
    "preset": "tiny",
    "seeds": 1,
    "base": {"train": {"steps": 8, "eval_every": 4, "eval_size": 32, "checkpoint_every": 4, "stop_at_threshold": False, "device": "cpu"}},
    "grid": {"model.d_model": [8, 16], "train.lr": [0.001, 0.003]},
}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dotted") / "sweep"
    result = run_sweep(spec_from_data(SPEC), out, "local", BackendOptions(workers=1, runner="one-by-one"), report=None)
    assert result.status_counts == {"ok": 4}
    return out


def test_a_stem_with_a_dotted_last_part_finds_its_files(tmp_path):
    stem = tmp_path / "final_kl__by__model.d_model__train.lr"
    stem.with_name(stem.name + ".svg").write_text("<svg xmlns='http://www.w3.org/2000/svg'/>")
    image = file_image(stem, Budget(10_000), tmp_path)
    assert image.uri is not None and image.link == "final_kl__by__model.d_model__train.lr.svg"


@pytest.mark.slow
def test_every_figure_the_sweep_index_links_exists(sweep):
    written = [
        *plot_metric(sweep, "final_kl", "model.d_model", "train.lr"),
        *plot_metric(sweep, "final_kl", "train.lr", "model.d_model"),
        *plot_metric(sweep, "steps", "model.d_model", "seed", facet="train.lr"),
    ]
    assert {path.name for path in written} >= {"final_kl__by__model.d_model__train.lr.png", "final_kl__by__train.lr__model.d_model.svg"}
    page = write_reports(sweep).index.read_text()
    assert "figure file missing" not in page
    figures = re.findall(r'<figure><img src="data:[^"]+" alt="[^"]+" data-file="([^"]+)"', page)
    assert sorted(unquote(f) for f in figures) == sorted(f"plots/{path.name}" for path in written if path.suffix == ".png")
    assert "<figcaption>dotted: final_kl, one trial per cell</figcaption>" in page  # the plot's title, not its file name
    links = [unquote(href) for href in re.findall(r'href="([^"#]+)"', page)]
    assert links and all((sweep / link).exists() for link in links), links
