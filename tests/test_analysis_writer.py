"""Results written while the next analysis computes (:mod:`nrecur.analysis.writer`): in a forked process or
in this one, the same files and the same outcomes; a failure leaves a staged folder as it was; an interrupt
keeps what was computed; a writer that dies, or gets Ctrl-C, is handled."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from nrecur import NRecurrence, load_run, train
from nrecur._io import remove_stale_temporaries, temporary_folder
from nrecur.analysis import ANALYSES, Analysis, Options, Result, analyze
from nrecur.analysis.driver import AnalysisInterrupted
from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig


def _draw_fine(result, folder: Path) -> list[Path]:
    from nrecur.analysis.figures.common import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(4, 3))
    ax.plot([0, 1, 4, 9])
    ax.set_title(f"{result.name}: a figure")
    return save_figure(fig, folder, result.name)


def _draw_slowly(result, folder: Path) -> list[Path]:
    time.sleep(1.0)  # still drawing when the next analysis is interrupted
    return _draw_fine(result, folder)


def _cannot_draw(result, folder: Path) -> list[Path]:
    raise RuntimeError("no ink")


def _dies(result, folder: Path) -> list[Path]:
    os._exit(3)


def _gets_ctrl_c(result, folder: Path) -> list[Path]:
    os.kill(os.getpid(), signal.SIGINT)  # the writing process gets Ctrl-C and SIGTERM: it goes on
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(0.2)
    return _draw_fine(result, folder)


def _interrupts_its_parent(result, folder: Path) -> list[Path]:
    time.sleep(0.3)
    os.kill(os.getppid(), signal.SIGINT)  # Ctrl-C reaches the analysis while it waits for this write
    time.sleep(0.7)
    return _draw_fine(result, folder)


def _interrupt(run, options):
    raise KeyboardInterrupt


def _boom(run, options):
    raise RuntimeError("boom")


def _analysis(name: str, draw, compute=None) -> Analysis:
    """An analysis ``name`` whose result holds nothing, computed by ``compute`` (default: at once), drawn by ``draw``."""
    result = type(f"_{name}", (Result,), {"name": name, "__annotations__": {"headline": dict}, "headline": {}})
    return Analysis(name, "a test's", Options, result, compute or (lambda run, options: result()), lambda run: None, f"{__name__}:{draw.__name__}")


@pytest.fixture(scope="module")
def run_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("writer") / "run"
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
    settings = TrainConfig(steps=2, batch_size=8, eval_every=2, eval_size=16, device="cpu")
    train(RunConfig(task=NRecurrence(vocab_size=4, periods=(2, 3)), model=model, train=settings), folder, progress=False)
    return folder


@pytest.fixture(params=[False, True], ids=["here", "forked"])
def forked(request, monkeypatch) -> bool:
    """Results written in this process, or in a forked one (whatever the thread count)."""
    monkeypatch.setattr("nrecur.analysis.writer.in_background", lambda: request.param)
    return request.param


@pytest.fixture
def registry():
    """Put ``analyses`` in place of the registered ones; the registry comes back as it was, in its order."""
    registered = dict(ANALYSES)

    def use(*analyses: Analysis) -> None:
        ANALYSES.clear()
        ANALYSES.update({analysis.name: analysis for analysis in analyses})

    yield use
    ANALYSES.clear()
    ANALYSES.update(registered)


def _files(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())} if folder.exists() else {}


def test_a_forked_writer_writes_the_same_files_as_this_process(run_path, registry, monkeypatch, tmp_path):
    registry(_analysis("fine", _draw_fine), _analysis("late", _draw_fine))
    written = {}
    for forked in (False, True):
        monkeypatch.setattr("nrecur.analysis.writer.in_background", lambda forked=forked: forked)
        for mode in ("raise", "record"):
            folder = tmp_path / f"{mode}-{forked}"
            outcomes = analyze(load_run(run_path), ["fine", "late"], folder=folder, on_error=mode)
            assert [(o.name, o.status) for o in outcomes] == [("fine", "wrote"), ("late", "wrote")]
            assert all(path.parent == folder and path.is_file() for o in outcomes for path in o.paths)
            written[mode, forked] = _files(folder)
    assert set(written[("raise", False)]) == {f"{name}.{kind}" for name in ("fine", "late") for kind in ("json", "png", "svg")}
    assert all(files == written[("raise", False)] for files in written.values())  # byte for byte


def test_a_job_records_an_analysis_whose_figure_fails_and_writes_the_others(run_path, registry, forked, tmp_path, capsys):
    registry(_analysis("fine", _draw_fine), _analysis("boom", _draw_fine, compute=_boom), _analysis("undrawable", _cannot_draw))
    outcomes = analyze(load_run(run_path), ["fine", "boom", "undrawable"], folder=tmp_path / "out", on_error="record")
    assert [(o.name, o.status, o.detail) for o in outcomes] == [
        ("fine", "wrote", "3 files"), ("boom", "failed", "RuntimeError: boom"), ("undrawable", "failed", "RuntimeError: no ink"),
    ]  # fmt: skip
    assert set(_files(tmp_path / "out")) == {"fine.json", "fine.png", "fine.svg"}
    assert "raise RuntimeError(\"no ink\")" in capsys.readouterr().err  # the traceback, from whichever process drew


@pytest.mark.parametrize("second", ["boom", "undrawable"])
def test_the_cli_mode_leaves_the_folder_as_it_was_when_a_later_analysis_or_figure_fails(run_path, registry, forked, tmp_path, second):
    registry(_analysis("fine", _draw_fine), _analysis("boom", _draw_fine, compute=_boom), _analysis("undrawable", _cannot_draw))
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "fine.json").write_text("an earlier result")
    for folder in (tmp_path / "new", kept):
        with pytest.raises(RuntimeError, match="boom" if second == "boom" else "no ink"):
            analyze(load_run(run_path), ["fine", second], folder=folder)
    assert not (tmp_path / "new").exists()
    assert [path.name for path in kept.iterdir()] == ["fine.json"] and (kept / "fine.json").read_text() == "an earlier result"


@pytest.mark.parametrize("mode", ["raise", "record"])
def test_an_interrupt_keeps_the_result_still_being_written(run_path, registry, forked, tmp_path, mode):
    registry(_analysis("fine", _draw_slowly), _analysis("stopped", _draw_fine, compute=_interrupt))
    with pytest.raises(AnalysisInterrupted) as stopped:
        analyze(load_run(run_path), ["fine", "stopped"], folder=tmp_path / "out", on_error=mode)
    assert (stopped.value.written, stopped.value.remaining) == (["fine"], ["stopped"])
    assert set(_files(tmp_path / "out")) == {"fine.json", "fine.png", "fine.svg"}


def test_a_forked_writer_that_dies_or_gets_ctrl_c_is_handled(run_path, registry, monkeypatch, tmp_path):
    monkeypatch.setattr("nrecur.analysis.writer.in_background", lambda: True)
    registry(_analysis("dies", _dies), _analysis("steady", _gets_ctrl_c))
    outcomes = analyze(load_run(run_path), ["dies", "steady"], folder=tmp_path / "out", on_error="record")
    assert [(o.name, o.status) for o in outcomes] == [("dies", "failed"), ("steady", "wrote")]
    assert outcomes[0].detail == "RuntimeError: the process writing dies ended with exit code 3"
    assert set(_files(tmp_path / "out")) == {"steady.json", "steady.png", "steady.svg"}


def test_a_stage_left_by_a_killed_process_is_removed_and_a_live_ones_kept(tmp_path):
    live = temporary_folder(tmp_path, "staged")
    (live / "probes.json").write_text("{}")
    dead = tmp_path / live.name.replace(f".{os.getpid()}@", ".999999999@")
    dead.mkdir()
    (dead / "probes.json").write_text("{}")
    assert remove_stale_temporaries(tmp_path, recursive=False) == [dead]
    assert not dead.exists() and (live / "probes.json").exists()


def test_a_bad_choice_of_writer_in_the_environment_is_one_line_naming_the_values(run_path, registry, monkeypatch, tmp_path, capsys):
    from nrecur.analysis.writer import BACKGROUND_VARIABLE
    from nrecur.cli import main

    registry(_analysis("fine", _draw_fine))
    monkeypatch.setenv(BACKGROUND_VARIABLE, "yes")
    assert main(["analyze", str(run_path), "--what", "fine", "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error == f"nrecur analyze: error: {BACKGROUND_VARIABLE}='yes': allowed values are 0 (write in this process) and 1 (in a forked one)\n"
    assert not (run_path / "analysis").exists()


@pytest.fixture
def ctrl_c_raises():
    """Ctrl-C raises KeyboardInterrupt here, as in a terminal, even where this process was started ignoring it (a
    non-interactive shell's background job)."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("mode", ["raise", "record"])
@pytest.mark.parametrize("last", [True, False], ids=["in-the-last-wait", "while-submitting"])
def test_ctrl_c_while_waiting_for_a_write_keeps_every_result_computed(run_path, registry, monkeypatch, tmp_path, mode, last, ctrl_c_raises):
    """Ctrl-C while the analysis waits for a forked write — its last one, or the one before it submits the next
    result — writes that result and every one computed, then says so."""
    monkeypatch.setattr("nrecur.analysis.writer.in_background", lambda: True)
    registry(_analysis("slow", _interrupts_its_parent), _analysis("quick", _draw_fine))
    what = ["quick", "slow"] if last else ["slow", "quick"]
    with pytest.raises(AnalysisInterrupted) as stopped:
        analyze(load_run(run_path), what, folder=tmp_path / "out", on_error=mode)
    assert (sorted(stopped.value.written), stopped.value.remaining) == (["quick", "slow"], [])
    assert set(_files(tmp_path / "out")) == {f"{name}.{kind}" for name in ("quick", "slow") for kind in ("json", "png", "svg")}


def test_the_cli_mode_says_nothing_was_written_when_a_figure_fails(run_path, registry, forked, tmp_path):
    registry(_analysis("fine", _draw_fine), _analysis("undrawable", _cannot_draw))
    lines = []
    with pytest.raises(RuntimeError, match="no ink"):
        analyze(load_run(run_path), ["fine", "undrawable"], folder=tmp_path / "out", log=lines.append)
    assert not any("wrote" in line for line in lines) and not (tmp_path / "out").exists()
