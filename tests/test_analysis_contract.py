"""The analysis contract and its one driver: typed options, results whose JSON is their fields, controls.

The worked example here is the one the documentation shows: a new analysis is one module (options,
result, ``compute``, ``applies``, one ``register``) and one figure function.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydantic
import pytest
import torch

from nrecur import NRecurrence, load_run, train
from nrecur.analysis import ANALYSES, Analysis, OptionError, Options, Result, analyze, compute, initial_model, read_result, write_result
from nrecur.analysis.contract import register
from nrecur.analysis.driver import resolve_options
from nrecur.analysis.figures.over_training import control_label
from nrecur.cli import main
from nrecur.model import GPTConfig
from nrecur.train import RunConfig, TrainConfig
from nrecur.train.checkpoint import load_model_tensors
from nrecur.train.interventions import Intervention, intervention_hooks


# ---------------------------------------------------------------------------- a worked example

# --8<-- [start:example]
class ConfidenceOptions(Options):
    n_sequences: int = pydantic.Field(64, ge=8)
    """Fresh sequences to score."""


@dataclass(frozen=True)
class ConfidenceResult(Result):
    """How sure the model is of its next token: the mean top probability, beside its initialization's."""

    headline: dict[str, float]
    options: ConfidenceOptions
    step: int
    by_position: tuple[float, ...]


def confidence(run, options: ConfidenceOptions) -> ConfidenceResult:
    tokens = torch.as_tensor(run.task.sample(options.n_sequences, run.config.length, options.seed).tokens)

    def top(model) -> torch.Tensor:  # [pos]
        with torch.no_grad():
            return model(tokens).softmax(-1).amax(-1).mean(0)

    trained, control = top(run.model), top(initial_model(run))
    headline = {"confidence": float(trained.mean()), "confidence_random_init": float(control.mean())}
    return ConfidenceResult(headline=headline, options=options, step=run.step, by_position=tuple(trained.tolist()))


def draw_confidence(result: ConfidenceResult, folder: Path) -> list[Path]:
    from nrecur.analysis.figures.common import pyplot, save_figure

    fig, ax = pyplot().subplots(figsize=(5, 3))
    ax.plot(result.by_position)
    ax.set_title("mean top probability by position")
    return save_figure(fig, folder, "confidence")
# --8<-- [end:example]


@pytest.fixture
def confidence_analysis():
    # --8<-- [start:register]
    analysis = register(
        Analysis(
            name="confidence", description="the model's mean top probability", options=ConfidenceOptions,
            result=ConfidenceResult, compute=confidence, applies=lambda run: None,
            figures=f"{__name__}:draw_confidence", over_training={},
        )  # fmt: skip
    )
    # --8<-- [end:register]
    yield analysis
    del ANALYSES["confidence"]


def tiny(folder: Path, steps: int = 2, **train_options) -> Path:
    task = NRecurrence(vocab_size=4, periods=(2, 3, 4))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=16, n_layers=1, n_heads=2, d_head=8, d_mlp=32)
    settings = TrainConfig(steps=steps, batch_size=16, eval_every=steps, eval_size=32, device="cpu", **train_options)
    train(RunConfig(task=task, model=model, train=settings), folder, progress=False)
    return folder


@pytest.fixture(scope="module")
def run_folder(tmp_path_factory) -> Path:
    return tiny(tmp_path_factory.mktemp("contract") / "run", steps=3, log_checkpoints=2)


def test_a_new_analysis_is_a_module_a_figure_and_one_registration(confidence_analysis, run_folder, capsys):
    assert main(["analyze", str(run_folder), "--what", "confidence", "--sequences", "16", "--checkpoints", "all"]) == 0
    out = capsys.readouterr().out
    assert "confidence (step 3," in out and "confidence_over_training (all checkpoints," in out
    data = json.loads((run_folder / "analysis" / "confidence.json").read_text())
    assert list(data)[:3] == ["name", "headline", "step"]  # what heads the file, then the result's fields
    assert data["options"] == {"seed": 0, "n_sequences": 16} and len(data["by_position"]) == 12
    assert data["figures"] == ["confidence.png", "confidence.svg"]
    again = read_result(run_folder / "analysis" / "confidence.json")
    assert isinstance(again, ConfidenceResult) and again.options == ConfidenceOptions(n_sequences=16)
    assert again.by_position == pytest.approx(tuple(data["by_position"]))
    series = json.loads((run_folder / "analysis" / "confidence_over_training.json").read_text())
    assert series["steps"] == load_run(run_folder).checkpoint_steps
    assert series["series"]["confidence"][0] == series["series"]["confidence_random_init"][0]  # step 0 is the initialization


def test_an_option_an_analysis_does_not_take_names_those_it_takes(confidence_analysis, run_folder, capsys):
    with pytest.raises(OptionError, match="confidence takes no option mlp_rows; it takes seed, n_sequences"):
        compute(load_run(run_folder), "confidence", mlp_rows=10)
    with pytest.raises(OptionError, match=r"confidence option n_sequences: Input should be greater than or equal to 8 \(got 2\)"):
        compute(load_run(run_folder), "confidence", n_sequences=2)
    before = sorted(run_folder.rglob("*"))
    assert main(["analyze", str(run_folder), "--what", "confidence", "--set", "mlp_rows=10"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "it takes seed, n_sequences" in err
    assert main(["analyze", str(run_folder), "--what", "confidence", "--set", "probes.mlp_rows=10"]) == 2
    assert "probes is not among the analyses to run" in capsys.readouterr().err
    assert main(["analyze", str(run_folder), "--what", "confidence", "--set", "n_sequences"]) == 2
    assert "give OPTION=VALUE" in capsys.readouterr().err
    assert sorted(run_folder.rglob("*")) == before


def test_options_given_to_all_reach_the_analyses_that_take_them():
    takes = Analysis("a", "", ConfidenceOptions, ConfidenceResult, confidence, lambda run: None, "x:y")
    other = Analysis("b", "", Options, ConfidenceResult, confidence, lambda run: None, "x:y")
    resolved, notes = resolve_options([takes, other], {"n_sequences": 32, "seed": 3}, explicit=False)
    assert resolved["a"] == ConfidenceOptions(n_sequences=32, seed=3) and resolved["b"] == Options(seed=3)
    assert notes == ["b take no option n_sequences and run with their own settings"]
    with pytest.raises(OptionError, match="b takes no option n_sequences"):
        resolve_options([takes, other], {"n_sequences": 32}, explicit=True)
    resolved, _ = resolve_options([takes], {}, caps={"n_sequences": 16})
    assert resolved["a"].n_sequences == 16  # a job's cap lowers a larger default …
    resolved, _ = resolve_options([takes], {"n_sequences": 48}, caps={"n_sequences": 16})
    assert resolved["a"].n_sequences == 48  # … never a value given


@pytest.mark.parametrize(
    "what, given, written",
    [
        (["probes", "geometry"], ["--sequences", "64", "--set", "probes.mlp_steps=20", "--set=probes.mlp_rows=256"], ["probes"]),
        (["all"], ["--set", "mlp_rows=256", "--set", "window=12", "--sequences=96", "--seed", "2"], ["probes", "geometry"]),
        (["edit", "heads", "prior"], ["--set", "heads.margin=0.1", "--set", "edit.subspace_steps=0"], ["edit"]),
    ],
)
def test_the_command_printed_after_an_interrupt_gives_the_analyses_left_the_options_they_had(what, given, written, tmp_path):
    """The rest of an interrupted ``nrecur analyze`` runs (no option of a written analysis is left over to be
    refused) and each analysis left gets the options the whole command gave it."""
    import shlex

    from nrecur.analysis.driver import AnalysisInterrupted
    from nrecur.cli import build_parser
    from nrecur.cli.analyze import analyze_again, parse_settings

    def options(argv: list[str], names: list[str], explicit: bool) -> dict:
        args = build_parser().parse_args(argv)
        settings = parse_settings(args.set) | ({"n_sequences": args.sequences} if args.sequences else {}) | {"seed": args.seed}
        return resolve_options([ANALYSES[name] for name in names], settings, explicit=explicit)[0]

    argv = ["analyze", str(tmp_path), "--what", *what, *given]
    names = [name for name, analysis in ANALYSES.items() if analysis.in_all] if what == ["all"] else what
    left = [name for name in names if name not in written]
    args = build_parser().parse_args(argv)
    args.argv = argv
    rest = shlex.split(analyze_again(args, AnalysisInterrupted(written, left, KeyboardInterrupt())))
    assert rest[:3] == ["nrecur", "analyze", str(tmp_path)] and rest[rest.index("--what") + 1 :] == left
    before = options(argv, names, explicit=what != ["all"])
    assert options(rest[1:], left, explicit=True) == {name: before[name] for name in left}


@dataclass(frozen=True)
class Inner:
    values: tuple[float, ...]
    by_name: dict[str, list[int]]


@dataclass(frozen=True)
class Nested(Result):
    headline: dict[str, float]
    options: ConfidenceOptions
    inner: Inner
    maybe: Inner | None
    missing: float


def test_a_result_round_trips_through_its_json():
    result = Nested({"x": 1.0, "y": math.nan}, ConfidenceOptions(seed=2), Inner((0.5, np.float32(2.0)), {"a": [1, 2]}), None, math.nan)
    data = json.loads(json.dumps(result.to_json()))  # NaN becomes null: valid JSON
    assert list(data) == ["headline", "options", "inner", "maybe", "missing"] and data["missing"] is None
    again = Nested.from_json(data)
    assert again.inner == Inner((0.5, 2.0), {"a": [1, 2]}) and again.maybe is None and math.isnan(again.missing)
    assert again.options == ConfidenceOptions(seed=2) and math.isnan(again.headline["y"])
    with pytest.raises(ValueError, match="Nested JSON lacks inner"):
        Nested.from_json({"headline": {}, "options": {}, "maybe": None, "missing": 0})


def test_the_control_model_is_the_runs_own_initialization(run_folder, tmp_path):
    run = load_run(run_folder)
    start = load_model_tensors(run.folder.checkpoint_path(0))
    for name, tensor in initial_model(run).state_dict().items():
        torch.testing.assert_close(tensor, start[name], rtol=0, atol=0)
    # A fine-tune starts from its source's weights: those are its initialization, not a fresh model.
    finetuned = load_run(_finetune(run_folder, tmp_path / "ft"))
    source = load_run(run_folder).model.state_dict()
    for name, tensor in initial_model(finetuned).state_dict().items():
        torch.testing.assert_close(tensor, source[name], rtol=0, atol=0)


def _finetune(source: Path, folder: Path) -> Path:
    config = load_run(source).config
    config = config.model_copy(update={"init_from": str(source), "train": config.train.model_copy(update={"steps": 2, "eval_every": 2})})
    train(RunConfig.model_validate(config.model_dump()), folder, progress=False)
    return folder


def test_a_job_records_a_failed_analysis_and_writes_the_others(confidence_analysis, run_folder, tmp_path, monkeypatch):
    def broken(run, options):
        raise RuntimeError("no such luck")

    with pytest.raises(ValueError, match="ConfidenceResult is already the result of confidence"):
        register(Analysis("broken", "fails", Options, ConfidenceResult, broken, lambda run: None, f"{__name__}:draw_confidence"))
    register(Analysis("broken", "fails", Options, Nested, broken, lambda run: None, f"{__name__}:draw_confidence"))
    try:
        with pytest.raises(OptionError, match="over the checkpoints .* run probes, geometry.*none of them is chosen"):
            analyze(load_run(run_folder), ["broken"], over_training=True)  # nothing to do over training
        outcomes = analyze(load_run(run_folder), ["broken", "confidence"], folder=tmp_path / "out", on_error="record")
        assert [(o.name, o.status) for o in outcomes] == [("broken", "failed"), ("confidence", "wrote")]
        assert outcomes[0].detail == "RuntimeError: no such luck" and (tmp_path / "out" / "confidence.json").exists()
        with pytest.raises(RuntimeError, match="no such luck"):  # the CLI's mode: nothing written on a failure
            analyze(load_run(run_folder), ["confidence", "broken"], folder=tmp_path / "none")
        assert not (tmp_path / "none").exists()
    finally:
        del ANALYSES["broken"]


def _confidence(model, run, n_sequences: int = 16, seed: int = 0) -> float:
    tokens = torch.as_tensor(run.task.sample(n_sequences, run.config.length, seed).tokens)
    with torch.no_grad():
        return float(model(tokens).softmax(-1).amax(-1).mean())


def test_with_interventions_every_model_is_seen_as_training_saw_it_controls_and_over_training_too(confidence_analysis, tmp_path):
    """Head 0.0 ablated for steps 0 and 1 only: at the latest checkpoint (step 3) the model is bare, its control
    (the initialization, step 0) ablated, and over training each checkpoint as it was at its step."""
    ablation = Intervention(kind="ablate", layer=0, head=0, start=0, end=2)
    folder = tiny(tmp_path / "run", steps=3, log_checkpoints=2, interventions=[ablation])
    run = load_run(folder)
    hooks_at = lambda step: intervention_hooks([ablation], step)  # noqa: E731
    init = initial_model(run)
    bare_init = _confidence(init, run)
    with init.hooks(hooks_at(0)):
        ablated_init = _confidence(init, run)
    assert ablated_init != pytest.approx(bare_init, abs=1e-6)  # the ablation shows in the figure

    analyze(run, ["confidence"], {"n_sequences": 16}, over_training=True, with_interventions=True, folder=tmp_path / "seen")
    data = json.loads((tmp_path / "seen" / "confidence.json").read_text())
    assert data["headline"]["confidence"] == pytest.approx(_confidence(run.model, run), abs=1e-6)  # not active at step 3
    assert data["headline"]["confidence_random_init"] == pytest.approx(ablated_init, abs=1e-6)
    assert data["analyzed_with_interventions"] == [] and data["controls_with_interventions"] == ["ablate 0.0@0:2"]
    series = json.loads((tmp_path / "seen" / "confidence_over_training.json").read_text())
    for index, step in enumerate(series["steps"]):
        model = load_run(folder, step=step).model
        with model.hooks(hooks_at(step)):
            assert series["series"]["confidence"][index] == pytest.approx(_confidence(model, run), abs=1e-6), step
        assert series["series"]["confidence_random_init"][index] == pytest.approx(ablated_init, abs=1e-6), step
    assert series["series"]["confidence"][0] == pytest.approx(ablated_init, abs=1e-6)  # step 0 is the initialization, ablated
    assert series["analyzed_with_interventions"] == ["ablate 0.0@0:2"]
    assert not any(point.is_active for point in run.model.hook_dict.values())  # every hook it added is gone

    analyze(run, ["confidence"], {"n_sequences": 16}, folder=tmp_path / "bare")  # without: every model bare
    bare = json.loads((tmp_path / "bare" / "confidence.json").read_text())
    assert bare["headline"]["confidence_random_init"] == pytest.approx(bare_init, abs=1e-6)
    assert "analyzed_with_interventions" not in bare and "controls_with_interventions" not in bare


def test_a_result_is_written_as_of_its_own_checkpoint_or_refused(confidence_analysis, run_folder, tmp_path):
    run = load_run(run_folder)
    result = compute(run, "confidence", n_sequences=16)
    with pytest.raises(ValueError, match=r"confidence: the result is of step 3, not of the requested checkpoint 1; nothing written"):
        write_result(result, tmp_path / "out", step=1)
    assert not (tmp_path / "out").exists()
    write_result(result, tmp_path / "out")  # no step asked for: the result's own
    data = json.loads((tmp_path / "out" / "confidence.json").read_text())
    assert data["step"] == 3 and list(data).count("step") == 1
    assert read_result(tmp_path / "out" / "confidence.json").step == 3


def test_the_file_says_what_the_control_model_is(confidence_analysis, run_folder, tmp_path):
    analyze(load_run(run_folder), ["confidence"], {"n_sequences": 16}, folder=tmp_path / "scratch")
    scratch = json.loads((tmp_path / "scratch" / "confidence.json").read_text())["initialization"]
    assert scratch == {"init_from": None, "init_seed": 0} and control_label("_random_init", scratch) == "initialization"
    finetuned = load_run(_finetune(run_folder, tmp_path / "ft"))
    analyze(finetuned, ["confidence"], {"n_sequences": 16}, folder=tmp_path / "tuned")
    tuned = json.loads((tmp_path / "tuned" / "confidence.json").read_text())["initialization"]
    assert tuned == {"init_from": str(run_folder), "init_seed": 0} and control_label("_random_init", tuned) == "fine-tuning source"
    assert control_label("_random_init") == "initialization" and control_label("_shuffled", tuned) == "shuffled"  # a file without it


def test_over_training_on_a_run_with_one_checkpoint_says_so_in_one_line(confidence_analysis, tmp_path, capsys):
    folder = tiny(tmp_path / "one", steps=2)
    assert load_run(folder).checkpoint_steps == [2]
    assert main(["analyze", str(folder), "--what", "confidence", "--sequences", "16", "--checkpoints", "all", "--no-progress"]) == 0
    notes = [line for line in capsys.readouterr().out.splitlines() if "over training" in line]
    assert notes == [f"note: nothing runs over training: {folder} has 1 saved checkpoint (train with --log-checkpoints N for more)"]
    assert not (folder / "analysis" / "confidence_over_training.json").exists()


def test_a_stored_result_is_reused_only_for_the_same_analysis_step_and_every_option(tmp_path):
    from nrecur.analysis.driver import reusable

    options = ANALYSES["strategy"].make_options({"n_sequences": 32})
    path = tmp_path / "strategy.json"
    assert reusable(path, "strategy", {"n_sequences": 32}, 5) is None  # nothing written
    path.write_text(json.dumps({"name": "strategy", "step": 5, "headline": {}, "options": options.model_dump(mode="json")}))
    assert reusable(path, "strategy", {"n_sequences": 32}, 5)["step"] == 5
    assert reusable(path, "strategy", options.model_dump(mode="json"), 5) is not None  # the options in full: the same
    for other in ({"n_sequences": 64}, {"n_sequences": 32, "seed": options.seed + 1}, {"n_sequences": 32, "floor": options.floor * 2}):
        assert reusable(path, "strategy", other, 5) is None, other
    assert reusable(path, "strategy", {"n_sequences": 32}, 6) is None
    assert reusable(path, "probes", {}, 5) is None
    path.write_text("{not json")
    assert reusable(path, "strategy", {"n_sequences": 32}, 5) is None


def test_the_list_of_analyses_reads_as_plain_text(capsys):
    """``nrecur analyze --list`` names every analysis and option, one line each, with no docstring markup left."""
    assert main(["analyze", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(f"{name}: " in out for name in ANALYSES)
    assert not re.search(r":\w+:`", out) and "``" not in out
    assert all(line.startswith((" " * 4, *ANALYSES)) for line in out.splitlines()), "a wrapped line lost its indent"
