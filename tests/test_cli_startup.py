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


def test_an_option_typo_in_train_reads_the_configs_without_torch():
    """``nrecur train``'s options come from the configs and presets, which import no torch."""
    code = "import sys\nfrom nrecur.cli import main\nsys.stdout = sys.stderr = open('/dev/null', 'w')\nmain(['train', '--ouy', 'x'])"
    found = modules_after(code)
    assert "torch" not in found and "nrecur.model" not in found and "nrecur.tasks" in found


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
