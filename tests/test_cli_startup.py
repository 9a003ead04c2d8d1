"""The command line starts light and says what went wrong: ``--help``, ``--version`` and mistakes in the
arguments import no torch, no configs and no analyses; errors name the command, print its usage line and
suggest the closest option or choice; missing paths say they do not exist.

The time these take is measured by ``benchmarks/bench_cli_startup.py``.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nrecur.cli import main

HEAVY = ("torch", "numpy", "pydantic", "matplotlib", "numba", "nrecur.analysis", "nrecur.model", "nrecur.train", "nrecur.tasks")


def modules_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]), file=sys.__stdout__)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_the_command_modules_and_the_parser_import_nothing_heavy():
    assert modules_after("import nrecur.cli\nnrecur.cli.build_parser(lazy=True)") == []


@pytest.mark.parametrize("argv", [["--help"], ["--version"], ["trian"], ["analyze", "--wat", "x"], ["report", "/no/such/folder"]])
def test_help_version_and_argument_errors_import_nothing_heavy(argv):
    code = f"import sys\nfrom nrecur.cli import main\nsys.stdout = sys.stderr = open('/dev/null', 'w')\nmain({argv!r})"
    assert modules_after(code) == []


def test_an_option_typo_in_train_before_its_options_are_described_reads_the_configs_without_torch(tmp_path, monkeypatch):
    """The first time, ``nrecur train``'s options come from the configs and presets, which import no torch."""
    monkeypatch.setenv("NRECUR_CACHE_DIR", str(tmp_path / "cache"))
    code = "import sys\nfrom nrecur.cli import main\nsys.stdout = sys.stderr = open('/dev/null', 'w')\nmain(['train', '--ouy', 'x'])"
    found = modules_after(code)
    assert "torch" not in found and "nrecur.model" not in found and "nrecur.tasks" in found
    assert list((tmp_path / "cache").glob("commands-*.json")), "the full parser describes the command for next time"


# Mistakes in every command whose options come from the configs: an unknown option, a bad choice, a missing
# value, a bad number, options that exclude each other, a missing argument.
MISTAKES = [
    ["train", "--ouy", "x"],
    ["train", "--preset", "qick"],
    ["train", "--out"],
    ["train", "--steps", "abc"],
    ["train", "--stochastic", "--finetune"],
    ["train", "--resume", "{missing}"],
    ["eval", "{run}", "--stpe", "3"],
    ["eval"],
    ["run", "--preset", "quik"],
    ["run", "--jobs"],
    ["sample", "--task", "mess4"],
    ["bayes", "--top", "x"],
    ["minimal-arch", "--mlp", "maybe", "--out", "x"],
    ["minimal-arch", "--seeds", "2"],
    ["grokking", "--runner", "ensembel", "--out", "x"],
    ["icl-rate", "--out"],
]


def run_lightly(argv: list[str], cache) -> dict:
    """Exit code, stderr and the heavy modules imported of ``nrecur ARGV`` in a fresh interpreter whose
    descriptions are in ``cache``."""
    code = (
        "import io, json, sys\nfrom nrecur.cli import main\nsys.stdout = sys.stderr = io.StringIO()\n"
        f"code = main({argv!r})\nerr = sys.stderr.getvalue()\n"
        f"print(json.dumps({{'code': code, 'err': err, 'modules': [m for m in {HEAVY!r} if m in sys.modules]}}), file=sys.__stdout__)"
    )  # fmt: skip
    env = {**__import__("os").environ, "NRECUR_CACHE_DIR": str(cache)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("argv", MISTAKES, ids=" ".join)
def test_a_mistake_in_a_config_command_imports_nothing_heavy_and_reads_as_the_full_parsers(argv, tmp_path, monkeypatch, capsys):
    """Once a command has been used, its mistakes come from its light parser: no torch, numpy, pydantic or
    configs imported, the same exit code, usage line, message and suggestion as the full parser's."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("NRECUR_CACHE_DIR", str(cache))
    argv = [a.format(run=tmp_path, missing=tmp_path / "no-such-run") for a in argv]
    full_code = main(argv)  # in this process: the full parser, which describes the command
    full_err = capsys.readouterr().err
    assert full_code == 2 and "error:" in full_err
    light = run_lightly(argv, cache)
    assert light["modules"] == []
    assert (light["code"], light["err"]) == (full_code, full_err)


def test_without_a_description_the_probe_sees_the_configs_imported(tmp_path):
    """The control of the test above: with an empty cache the same probe finds pydantic and the tasks."""
    light = run_lightly(["train", "--ouy", "x"], tmp_path / "empty")
    assert light["code"] == 2 and {"pydantic", "numpy", "nrecur.tasks"} <= set(light["modules"])


def every_command_built() -> dict:
    from nrecur.cli import _commands, build_parser

    commands = _commands(build_parser(lazy=True))
    return {name: commands.built(name) for name in commands.choices}


def test_a_rebuilt_parser_has_the_options_choices_and_usage_of_the_full_one():
    from nrecur.cli import _commands, build_parser
    from nrecur.cli.light import describe, rebuild

    for name, full in every_command_built().items():
        description = describe(full)
        assert description is not None, f"{name}'s options cannot be described"
        empty = _commands(build_parser(lazy=True)).choices[name]  # as add_parser made it, before any options
        if any(a.option_strings != ["-h", "--help"] for a in empty._actions):
            continue  # a command whose options are added at registration: nothing to rebuild into
        rebuild(empty, description)
        assert empty.format_usage() == full.format_usage(), name
        shape = lambda p: [(a.option_strings, a.nargs, a.choices if a.type in (None, int, float, str) else None, a.required) for a in p._actions]
        assert shape(empty) == shape(full), name


def test_descriptions_are_kept_per_fingerprint_of_the_sources(tmp_path, monkeypatch):
    from nrecur.cli.light import fingerprint, load, save

    sources = tmp_path / "pkg"
    sources.mkdir()
    (sources / "a.py").write_text("x = 1\n")
    before = fingerprint(sources)
    assert fingerprint(sources) == before
    (sources / "a.py").write_text("x = 22\n")
    assert fingerprint(sources) != before  # an edit describes the commands again
    monkeypatch.setenv("NRECUR_CACHE_DIR", str(tmp_path / "cache"))
    save({"train": every_command_built()["train"]}, key="old")
    assert "train" in load("old") and load("new") == {}
    save({"eval": every_command_built()["eval"]}, key="new")
    assert list(load("new")) == ["eval"] and load("old") == {}  # descriptions of other sources are removed
    (tmp_path / "cache" / "commands-new.json").write_text("{not json")
    assert load("new") == {}  # a damaged cache: the full parser decides


def test_the_probe_sees_heavy_modules_where_they_are_imported():
    assert {"torch", "nrecur.train"} <= set(modules_after("import nrecur.cli\nnrecur.cli.build_parser(lazy=True)\nimport nrecur.train.loop"))
    assert "torch" in modules_after("import nrecur\nnrecur.GPT")  # the public API, imported on first use


def lines(capsys) -> list[str]:
    return capsys.readouterr().err.splitlines()


def test_an_unknown_option_names_the_command_prints_its_usage_and_suggests_the_closest(capsys):
    assert main(["train", "--ouy", "x"]) == 2
    usage, error = lines(capsys)
    assert usage.startswith("usage: nrecur train [options]")
    assert error == "nrecur train: error: unrecognized arguments: --ouy x; did you mean --out?"


def test_a_mistyped_command_or_choice_gets_the_closest_suggested(capsys):
    assert main(["trian"]) == 2
    assert lines(capsys)[-1].endswith("did you mean train?")
    assert main(["sample", "--task", "mess4"]) == 2
    usage, error = lines(capsys)
    assert usage.startswith("usage: nrecur sample") and error.startswith("nrecur sample: error: argument --task: invalid choice: 'mess4'")
    assert error.endswith("did you mean mess3?")


def test_nothing_close_suggests_nothing(capsys, tmp_path):
    assert main(["report", str(tmp_path), "--zzzzzz"]) == 2
    assert lines(capsys)[-1] == "nrecur report: error: unrecognized arguments: --zzzzzz"


def test_version_and_help_exit_0(capsys):
    from nrecur.cli import version

    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"nrecur {version()}"
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [
        ["analyze", "{missing}"],
        ["eval", "{missing}"],
        ["train", "--resume", "{missing}"],
        ["train", "--init-from", "{missing}"],
        ["report", "{missing}"],
        ["sweep", "{missing}", "--out", "x"],
        ["sweep-plot", "{missing}", "--metric", "final_kl", "--x", "a", "--y", "b"],
        ["study", "{missing}", "--out", "x"],
    ],
)
def test_a_missing_path_does_not_exist(argv, tmp_path, capsys):
    missing = str(tmp_path / "no-such-run")
    assert main([a.format(missing=missing) for a in argv]) == 2
    assert lines(capsys)[-1].endswith(f"{missing} does not exist")


def test_load_run_of_a_missing_folder_says_it_does_not_exist(tmp_path):
    from nrecur import load_run

    with pytest.raises(FileNotFoundError, match="no-such-run does not exist"):
        load_run(tmp_path / "no-such-run")
