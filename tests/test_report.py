"""Reports (``nrecur report``): what a run page and the index hold, damaged and missing input, the size limit."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from nrecur import NRecurrence
from nrecur._text import seconds_text
from nrecur.cli import main
from nrecur.model import GPTConfig
from nrecur.report import PAGE_LIMIT, read_run, write_report, write_reports
from nrecur.report.index import differences_among_siblings, figure_folders, path_labels
from nrecur.report.reading import RUN_DEPTH
from nrecur.report.embed import Budget
from nrecur.train import RunConfig
from nrecur.train.presets import get_preset


@pytest.fixture
def runs(analyzed_runs) -> Path:
    """The session's folder of runs (tests/conftest.py): ``tiny``, analyzed, and ``fresh``, not yet evaluated."""
    return analyzed_runs


def copy_run(runs: Path, tmp_path: Path, name: str = "tiny") -> Path:
    target = tmp_path / name
    shutil.copytree(runs / name, target)
    (target / "report.html").unlink(missing_ok=True)
    return target


def images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def test_the_headline_states_sample_sizes_found_in_an_analysis_options(tmp_path):
    """``updates`` keeps its sample sizes under ``options``; booleans and missing keys add no row."""
    from nrecur.report.reading import AnalysisFile
    from nrecur.report.sections import sample_sizes

    data = {"headline": {"n_events/transition": 12}, "options": {"n_sequences": 512, "decode_sequences": 1024, "mlp_rows": 8000, "decode": True}}
    assert sample_sizes(AnalysisFile(name="updates", path=tmp_path / "updates.json", data=data, figures=())) == (
        ("fresh sequences analysed", "512"), ("sequences the belief decoders are fitted on", "1,024"),
        ("positions each MLP probe is fitted on (at most)", "8,000"),
    )  # fmt: skip


def test_the_headline_is_a_compact_table_a_figure_beside_its_controls():
    """Quantities side by side in a grid, a control right under its figure; plain figures in a list with a
    column per control; a name that merely ends like a control (``success_random`` without ``success``) is a
    figure of its own."""
    from nrecur.report.sections import headline_tables

    headline = {
        "r2_linear_random_init/target": 0.1, "r2_linear/target": 0.9, "r2_linear/period": 0.8, "r2_mlp/target": 0.95,
        "r2_linear_random_init/period": 0.2, "r2_linear_shuffled/target": 0.0,
        "hold": 0.5, "hold_no_edit": 0.1, "hold_ceiling": 0.912345, "success_random": 0.3,
    }  # fmt: skip
    grid, listed = headline_tables(headline)
    assert grid.header == ("figure", "target", "period")
    assert grid.rows == (
        ("r2_linear", "0.9", "0.8"), ("r2_linear, initialization", "0.1", "0.2"), ("r2_linear, shuffled", "0", ""), ("r2_mlp", "0.95", ""),
    )  # fmt: skip
    assert listed.header == ("figure", "value", "no edit", "ceiling")
    assert listed.rows == (("hold", "0.5", "0.1", "0.9123"), ("success_random", "0.3", "", ""))
    (only,) = headline_tables({"kl/one": 0.5, "kl_random_init/one": 0.7})  # one quantity: no grid
    assert only.rows == (("kl/one", "0.5", "0.7"),) and only.header == ("figure", "value", "initialization")
    # A fine-tune's control is its source's weights, and its file says so: the label names it.
    (tuned,) = headline_tables({"kl/one": 0.5, "kl_random_init/one": 0.7}, {"init_from": "/runs/source", "init_seed": 0})
    assert tuned.header == ("figure", "value", "fine-tuning source")


def test_a_figure_caption_is_its_whole_title_or_the_first_lines_of_its_panels_titles(tmp_path):
    from nrecur.analysis.figures.common import pyplot, save_figure
    from nrecur.report.sections import figure_caption

    plt = pyplot()
    fig, ax = plt.subplots()
    fig.suptitle("what the figure shows & <why>\nhow to read it")
    save_figure(fig, tmp_path, "probes_r2")
    assert figure_caption(tmp_path / "probes_r2") == "what the figure shows & <why> how to read it"  # every line: none cut off
    fig, (left, right) = plt.subplots(1, 2)
    left.set_title("a panel")
    save_figure(fig, tmp_path, "one_title")  # one titled panel: its title
    assert figure_caption(tmp_path / "one_title") == "a panel"
    right.set_title("another\nsecond line")
    save_figure(fig, tmp_path, "two_titles")  # several: each panel's
    assert figure_caption(tmp_path / "two_titles") == "a panel; another"
    fig, ax = plt.subplots()
    save_figure(fig, tmp_path, "no_title")  # no title at all: the name in words
    assert figure_caption(tmp_path / "no_title") == "no title"


def test_a_run_page_states_the_run_and_holds_every_section(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    result = write_report(run)
    page = result.path.read_text()
    assert result.path == run / "report.html" and result.size == len(page.encode()) < PAGE_LIMIT
    # The run in words: task with its parameters, model size, training, interventions, how it ended.
    assert "deterministic n-recurrence over 4 tokens with periods 2, 3, 4" in page
    assert "17,792 parameters: 2 layers, d_model 32, 4 heads of 8" in page
    assert "a fixed set of 128 sequences (finite mode)" in page and "25% of the rules held out" in page
    assert "head 0.1 ablated (its output z set to zero), steps 0 to 29 (ablate 0.1@0:30)" in page
    assert "reached its step limit after 60 steps" in page
    assert "<details><summary>full config" in page and "&#34;held_out_fraction&#34;: 0.25" in page
    # Evaluation tables: every set the metrics hold, strata, positions.
    for label in ("held-out sequences", "training set", "in-distribution", "out-of-distribution"):
        assert f"<td>{label}</td>" in page
    assert "KL (nats/token) by stratum" in page and "KL by position at step 60" in page
    # One section per analysis with its module's paragraph, headline numbers, figures and the slider.
    headline = json.loads((run / "analysis" / "probes.json").read_text())["headline"]
    assert 'id="analysis-probes"' in page and 'id="analysis-geometry"' in page
    assert "How to read it: held-out R² near 1 means the quantity is linearly present" in page
    first = next(name for name in headline if "/" in name).split("/")[1]  # the grid's first column
    assert f"<tr><td>r2_linear</td><td>{headline[f'r2_linear/{first}']:.4g}</td>" in page
    probes = json.loads((run / "analysis" / "probes.json").read_text())
    assert f"fresh sequences analysed: {probes['options']['n_sequences']:,}" in page
    assert f"positions each MLP probe is fitted on (at most): {probes['options']['mlp_rows']:,}" in page
    assert "alt=\"probes_r2\"" not in page and "<figcaption>held-out R² of each probe at every hook point" in page  # captions from titles
    assert page.count('class="frame"') == 4  # one frame per checkpoint (0, 1, 8, 60)
    # Every figure inlined; nothing fetched from anywhere.
    sources = images(page)
    assert len(sources) == result.figures >= 3 + 4 + 5 and result.left_out == 0
    assert all(src.startswith("data:image/") for src in sources)
    assert not re.search(r'(src|href)="(https?:)?//', page) and "<link" not in page
    assert list(run.glob(".*.tmp")) == []  # written atomically: no temporary left


def test_the_training_curves_and_heatmap_come_from_the_metrics(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    record = read_run(run)
    assert [line["step"] for line in record.evaluations] == [0, 20, 40, 60]
    steps, kl = record.curve("eval/kl")
    assert steps == [0, 20, 40, 60] and kl[-1] == record.last["eval/kl"]
    page = write_report(record).path.read_text()
    assert "no heatmap" not in page and len(images(page)) >= 3  # loss, KL and the heatmap
    # Without per-position KL the page says so instead of drawing an empty heatmap.
    lines = [json.loads(text) for text in (run / "metrics.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("eval/kl_per_position", None)
    (run / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    result = write_report(run)
    text = result.path.read_text()
    assert "no heatmap" in text and "KL by position at step" not in text


def test_a_corrupt_metrics_line_is_skipped_with_a_warning_naming_it(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:40]  # a damaged line in the middle
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    # The real command, so that stderr is what a user sees (pytest would catch the warning itself).
    done = subprocess.run([sys.executable, "-m", "nrecur", "report", str(run)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == f"nrecur: warning: {run / 'metrics.jsonl'}: line 2 is not a metrics record; skipped"
    page = (run / "report.html").read_text()
    assert "line 2 is not a metrics record" in page  # also on the page
    with pytest.warns(UserWarning, match="line 2 is not a metrics record"):
        assert [line["step"] for line in read_run(run).evaluations] == [0, 40, 60]


def test_a_run_that_has_not_evaluated_yet_gets_a_page_that_says_so(runs, tmp_path):
    run = copy_run(runs, tmp_path, "fresh")
    page = write_report(run).path.read_text()
    assert "training has not evaluated yet" in page and "no analyses in" in page
    assert images(page) == []


def test_damaged_summary_and_analysis_files_are_left_out_with_a_warning(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    (run / "summary.json").write_text("{not json")
    (run / "analysis" / "geometry.json").write_text("[1, 2")
    with pytest.warns(UserWarning) as caught:
        result = write_report(run)
    messages = " ".join(str(w.message) for w in caught)
    assert "summary.json is not valid JSON" in messages and "geometry.json is not valid JSON" in messages
    page = result.path.read_text()
    assert "running, or interrupted before it ended" in page
    assert 'id="analysis-geometry"' in page  # the over-training result is still there
    assert "<h4>geometry (checkpoint" not in page


def test_figures_past_the_page_limit_are_left_out_with_a_link(runs, tmp_path):
    run = copy_run(runs, tmp_path)
    result = write_report(run, limit=500_000)
    page = result.path.read_text()
    assert result.left_out > 0 and result.size < 500_000 + 100_000
    link = re.search(r'left out to keep the page small.*? — <a href="([^"]+)">', page).group(1)
    assert (run / link).is_file() and link.startswith("analysis/")
    budget = Budget(100)
    assert budget.take("x", b"a" * 80, "image/png").uri is None and budget.left == 100  # 130 characters as a URI
    assert budget.take("y", b"a" * 40, "image/png").uri is not None and budget.left == 100 - 78


def test_the_index_has_one_sortable_row_per_run_linking_to_its_page(runs, tmp_path):
    root = tmp_path / "runs"
    shutil.copytree(runs, root)
    broken = root / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{")
    with pytest.warns(UserWarning, match="broken left out of the index"):
        folder = write_reports(root)
    assert folder.index == root / "index.html" and len(folder.reports) == 2 and "broken" in folder.skipped[0]
    page = folder.index.read_text()
    rows = re.findall(r"<tr>\s*<td class=\"text name\" data-sort=\"([^\"]+)\">", page)
    assert rows == ["fresh", "tiny"]
    links = re.findall(r'<a href="([^"]+)">', page)
    assert links == ["fresh/report.html", "tiny/report.html"] and all((root / link).is_file() for link in links)
    assert 'table class="sortable"' in page and "<svg class=\"spark\"" in page and "not evaluated yet" in page
    assert "<td class=\"text\">finished: reached its step limit</td>" in page  # why it stopped, not only that it did
    assert "does not hold a valid run config" in page or "broken" in page
    tiny_page = (root / "tiny" / "report.html").read_text()
    assert '<a href="../index.html">all runs</a>' in tiny_page


def test_the_index_shows_the_figures_of_sweeps_and_studies_below_it_but_not_those_in_runs(runs, tmp_path):
    """A sweep's trials are three levels down (``SWEEP/trials/ID``) and its heatmaps in ``SWEEP/plots``; a study
    keeps its figures at its top and its trials five levels down; a run's analysis figures stay on the run's page."""
    root = tmp_path / "runs"
    figure = next((runs / "tiny" / "analysis").glob("*.png"))
    shutil.copytree(runs / "tiny", root / "sweep-a" / "trials" / "t1")
    (root / "sweep-a" / "plots").mkdir()
    shutil.copy(figure, root / "sweep-a" / "plots" / "final_kl.png")
    (root / "studies" / "grokking").mkdir(parents=True)
    shutil.copy(figure, root / "studies" / "grokking" / "grokking.png")
    shutil.copytree(runs / "tiny", root / "studies" / "grokking" / "sweep" / "trials" / "t2")  # five levels down
    assert figure_folders(root) == [root / "studies" / "grokking", root / "sweep-a" / "plots"]
    folder = write_reports(root)
    page = folder.index.read_text()
    assert [r.path.parent for r in folder.reports] == [root / "studies" / "grokking" / "sweep" / "trials" / "t2", root / "sweep-a" / "trials" / "t1"]
    assert "<h2>studies/grokking</h2>" in page and "<h2>sweep-a/plots</h2>" in page
    assert len(images(page)) == 2 and "trials/t1</h2>" not in page


def test_seconds_text_keeps_a_tenth_below_ten_seconds():
    values = (None, float("nan"), float("inf"), 0.04, 0.45, 9.94, 9.96, 10.4, 131.6)
    assert [seconds_text(s) for s in values] == ["—", "—", "—", "0.0", "0.5", "9.9", "10", "10", "132"]


def test_path_labels_name_each_source_by_as_much_path_as_tells_the_runs_apart():
    assert path_labels([]) == {} and path_labels(["/x/det", "/x/det"]) == {"/x/det": "det"}
    assert path_labels(["/x/a/det", "/x/b/det", "/x/a/stoch"]) == {"/x/a/det": "a/det", "/x/b/det": "b/det", "/x/a/stoch": "a/stoch"}
    checkpoint = "/x/det/checkpoints/step_00000040.safetensors"
    assert path_labels([checkpoint, "/x/det"]) == {checkpoint: "det step 40", "/x/det": "det"}  # one run, two sources
    other = "/y/det/checkpoints/step_00000080.safetensors"
    assert path_labels([checkpoint, other]) == {checkpoint: "x/det step 40", other: "y/det step 80"}  # two runs named det
    assert path_labels(["/runs/det", "/home/u/runs/det"]) == {"/runs/det": "/runs/det", "/home/u/runs/det": "u/runs/det"}
    assert path_labels(["/x/det/weights.safetensors"]) == {"/x/det/weights.safetensors": "weights.safetensors"}  # not a checkpoint name


def test_counts_have_their_noun_in_the_right_number():
    from nrecur.report.words import counted

    assert [counted(n, "run") for n in (0, 1, 2, 1024)] == ["0 runs", "1 run", "2 runs", "1,024 runs"]


def test_each_row_names_what_differs_from_the_runs_beside_it(runs, tmp_path):
    base = RunConfig(task=NRecurrence(vocab_size=4, periods=(2, 3)), model=GPTConfig(vocab_size=4, n_ctx=12, d_model=32, n_heads=4, d_head=8))
    wide = base.model_copy(update={"model": base.model.model_copy(update={"d_model": 64, "d_head": 16})})
    tuned = base.model_copy(update={"train": base.train.model_copy(update={"init_seed": 1}), "init_from": "/somewhere/runs/det"})
    sweep, alone = tmp_path / "sweep" / "trials", tmp_path / "other"
    labels = {path: " · ".join(parts) for path, parts in differences_among_siblings([(sweep / "a", base), (sweep / "b", wide), (sweep / "c", tuned), (alone / "x", wide)]).items()}
    assert labels[sweep / "a"] == "init_from none · d_head 8 · d_model 32 · init_seed 0"
    assert labels[sweep / "b"] == "init_from none · d_head 16 · d_model 64 · init_seed 0"
    assert labels[sweep / "c"] == "init_from det · d_head 8 · d_model 32 · init_seed 1"
    assert labels[alone / "x"] == ""  # alone in its folder: nothing to compare with
    # a fine-tuned run alone in its folder still says where its weights came from
    assert differences_among_siblings([(alone / "y", tuned)])[alone / "y"] == ("init_from det",)
    # sources that share a folder name are told apart by their paths; a long one is cut from the left
    elsewhere = tuned.model_copy(update={"init_from": "/elsewhere/runs/det"})
    assert differences_among_siblings([(sweep / "j", tuned), (sweep / "k", elsewhere)])[sweep / "k"] == ("init_from elsewhere/runs/det",)
    long_names = [tuned.model_copy(update={"init_from": f"/r/sweep-of-many-learning-rates-{i}/det"}) for i in (1, 2)]
    assert differences_among_siblings([(sweep / "l", long_names[0]), (sweep / "m", long_names[1])], longest=20)[sweep / "m"] == ("init_from …earning-rates-2/det",)
    # init_from is kept first when the rest is cut at `most`
    tuned_wide = wide.model_copy(update={"init_from": "/somewhere/runs/det"})
    assert differences_among_siblings([(sweep / "h", tuned), (sweep / "i", tuned_wide)], most=2)[sweep / "i"] == ("init_from det", "d_head 16", "+1 more")
    # a field name shared by two differing fields keeps its full path
    other_vocab = base.model_copy(update={"task": NRecurrence(vocab_size=5, periods=(2, 3)), "model": base.model.model_copy(update={"vocab_size": 5})})
    assert differences_among_siblings([(sweep / "a", base), (sweep / "d", other_vocab)])[sweep / "d"] == ("model.vocab_size 5", "task.vocab_size 5")
    noisy = base.model_copy(update={"task": base.task.model_copy(update={"p_noise": "0.2/n"})})
    assert differences_among_siblings([(sweep / "a", base), (sweep / "e", noisy)])[sweep / "e"] == ("p_noise 0.2/n",)  # not a path
    # fine-tuned siblings (their seeds differ only in data): init_seed does not set them apart
    tuned_twice = [tuned.model_copy(update={"train": tuned.train.model_copy(update={"init_seed": seed, "data_seed": seed})}) for seed in (0, 1)]
    assert differences_among_siblings([(sweep / "f", tuned_twice[0]), (sweep / "g", tuned_twice[1])])[sweep / "g"] == ("init_from det", "data_seed 1")
    # a main job's folder: runs of another task kind are not compared (their fields are not the same), and
    # past `most` differing fields the rest is counted
    quick, job = get_preset("quick"), tmp_path / "job"
    finetune = quick.finetune.model_copy(update={"init_from": str(job / "quick-det")})
    labels = differences_among_siblings([(job / "det", quick.run), (job / "ft", finetune), (job / "mess3", quick.mess3)], most=6)
    assert labels[job / "mess3"] == ()
    assert " · ".join(labels[job / "ft"]) == "init_from quick-det · p_noise 0.2/n · p_transition 0.2/n · kl_threshold 0.02 · lr 0.001 · steps 5000 · +2 more"
    # on the page, under the task label of each trial
    root = tmp_path / "runs"
    for trial, seed in (("t1", 0), ("t2", 7)):
        shutil.copytree(runs / "tiny", root / "trials" / trial)
        config = json.loads((root / "trials" / trial / "config.json").read_text())
        config["train"]["init_seed"] = seed
        (root / "trials" / trial / "config.json").write_text(json.dumps(config))
    page = write_reports(root).index.read_text()
    assert re.findall(r'<span class="part">([^<]+)</span>', page) == ["init_seed 0", "init_seed 7"]


def test_the_command_line_refuses_what_is_not_a_run(tmp_path, capsys):
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a run folder (no config.json) and holds no run folders" in err
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text("{")
    assert main(["report", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert "does not hold a valid run config" in err and "Traceback" not in err
    assert not (tmp_path / "bad" / "report.html").exists()


def test_the_command_line_writes_the_reports_and_the_index(runs, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(runs, root)
    assert main(["report", str(root)]) == 0
    out = capsys.readouterr().out
    assert f"index of 2 runs: {root / 'index.html'}" in out and out.count("wrote ") == 2


def test_a_failed_write_keeps_the_old_page_and_leaves_no_temporary(runs, tmp_path, monkeypatch):
    run = copy_run(runs, tmp_path)
    (run / "report.html").write_text("old page")

    def full_disk(source, target):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("nrecur._io.os.replace", full_disk)
    with pytest.raises(OSError, match="No space left on device"):
        write_report(run)
    assert (run / "report.html").read_text() == "old page" and list(run.glob(".*.tmp")) == []


def test_the_report_help_states_how_deep_runs_are_found(capsys):
    assert main(["report", "--help"]) == 0
    assert f"up to {RUN_DEPTH} levels below it" in " ".join(capsys.readouterr().out.split())


def test_the_training_text_names_the_optimizer_and_where_the_decay_ends():
    from nrecur.report.words import training_in_words
    from nrecur.train.presets import get_preset

    quick = get_preset("quick").run
    muon, adamw = training_in_words(quick), training_in_words(get_preset("quick-adamw").run)
    assert "Muon on the blocks' matrices and AdamW on the rest, lr 0.005" in muon and "ending at step" not in muon
    assert "AdamW lr 0.003" in adamw and "Muon" not in adamw
    extended = quick.model_copy(update={"train": quick.train.model_copy(update={"steps": 4000, "decay_steps": 1750})})
    assert "cosine schedule to 0.02·lr ending at step 1750; at most 4000 steps" in training_in_words(extended)


def test_a_docstrings_literal_block_shows_as_preformatted_text_after_one_colon():
    """A section's text is its analysis's module docstring: an RST literal block (``text::`` then an indented
    paragraph, the patching analysis's formula) shows as the formula, not as ``::`` and run-on prose."""
    from nrecur.analysis import patching
    from nrecur.report.sections import _paragraphs

    doc = "Title.\n\nWe measure (see below)::\n\n    moved = 1 - a / b\n    and < c\n\nwith a the rest."
    assert _paragraphs(doc) == ("<p>We measure (see below):</p>", "<pre>moved = 1 - a / b\nand &lt; c</pre>", "<p>with a the rest.</p>")
    assert _paragraphs("Title.\n\nWe measure ::\n\n    a = b") == ("<p>We measure</p>", "<pre>a = b</pre>")
    assert _paragraphs("Title.\n\nWe measure.\n\n::\n\n    a = b") == ("<p>We measure.</p>", "<pre>a = b</pre>")
    blocks = _paragraphs(patching.__doc__)
    assert not any("::" in block for block in blocks) and any(block.startswith("<pre>moved = 1 - KL(") for block in blocks)


@pytest.mark.parametrize("kind", ["lines", "image", "crowded"])
def test_the_text_checks_of_the_layout_kept_equal_those_of_a_fresh_drawing(kind):
    """A figure's PNG carries its text checks read from the texts of the layout it keeps (no extra drawing): the
    same as drawing the frozen figure again and measuring, for plain axes, a fixed-aspect image and crowded ticks."""
    import numpy as np

    from nrecur.analysis.figures.common import fit_page, freeze_layout, pyplot, text_checks

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(14, 3.5), layout="constrained")
    for ax in axes:
        if kind == "image":
            ax.imshow(np.arange(12.0).reshape(3, 4))
        else:
            ax.plot(range(40), np.sin(np.arange(40)), label="a line")
            ax.legend()
        if kind == "crowded":
            ax.set_xticks(range(40), [f"label {i}" for i in range(40)], fontsize=6)
        ax.set_title("a title long enough to be wrapped when the figure is scaled down to the page's width")
    _, texts = freeze_layout(fig, fit_page(fig))
    assert text_checks(fig, texts) == text_checks(fig)
    assert (kind == "crowded") == bool(text_checks(fig, texts)["Overlapping text"])
    plt.close(fig)
