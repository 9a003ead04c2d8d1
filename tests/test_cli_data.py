"""``nrecur sample`` and ``nrecur bayes`` as a user runs them."""

import subprocess
import sys

import numpy as np
import pytest

from nrecur import Batch, NRecurrence
from nrecur.cli import main


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "nrecur", *args], capture_output=True, text=True, timeout=120)


def test_help_on_every_subcommand():
    top = run_cli("--help")
    assert top.returncode == 0 and "sample" in top.stdout and "bayes" in top.stdout
    for command in ("sample", "bayes"):
        result = run_cli(command, "--help")
        assert result.returncode == 0
        assert "--p-noise" in result.stdout and "fake tokens" in result.stdout.lower()


def test_sample_prints_marked_sequences(capsys):
    assert main(["sample", "--batch-size", "2", "--length", "20", "--periods", "3", "--vocab-size", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("seq ") == 2 and "n=3" in out
    assert out.count("[") >= 2 * 6  # at least six target positions in each of two sequences


def test_sample_writes_npz_matching_the_library(tmp_path):
    path = tmp_path / "data.npz"
    assert main(["sample", "--batch-size", "16", "--length", "30", "--p-noise", "0.2/n", "--seed", "4", "--out", str(path)]) == 0
    loaded = Batch.load(path)
    expected = NRecurrence(p_noise="0.2/n").sample(16, 30, seed=4)
    with np.load(path, allow_pickle=False) as data:  # the task travels with the data
        assert NRecurrence.model_validate_json(str(data["task"])) == NRecurrence(p_noise="0.2/n")
        assert str(data["seed"]) == "4"
    for name in Batch.FIELDS:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(expected, name))


def test_sample_refuses_to_overwrite(tmp_path, capsys):
    path = tmp_path / "data.npz"
    path.write_bytes(b"precious")
    assert main(["sample", "--out", str(path)]) == 2
    assert "exists" in capsys.readouterr().err
    assert path.read_bytes() == b"precious"


def test_sample_refuses_a_folder_as_out(tmp_path, capsys):
    assert main(["sample", "--out", str(tmp_path), "--force"]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_bayes_posterior_table(capsys):
    assert main(["bayes", "--tokens", "3 1 3 0 3", "--periods", "2", "3"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.strip()[:1].isdigit()]
    assert len(rows) == 5
    last = rows[-1].split()
    assert float(last[3]) > 0.95  # P(n=2) after 3 _ 3 _ 3
    assert "t=3:1.0000" in rows[-1]
    assert float(rows[2].split()[3]) == pytest.approx(0.9231, abs=1e-4)  # P(n=2) after 3 1 3


def test_bayes_table_reports_impossible_tokens(capsys):
    assert main(["bayes", "--tokens", "3 1 3 0 2", "--periods", "2"]) == 0
    assert "impossible" in capsys.readouterr().out


def test_bayes_optimal_loss_per_position(capsys):
    assert main(["bayes", "--length", "16", "--batch-size", "300", "--periods", "2", "3", "4"]) == 0
    out = capsys.readouterr().out
    assert "mean over positions" in out
    assert len([line for line in out.splitlines() if line.strip()[:1].isdigit()]) == 15


@pytest.mark.parametrize("args, message", [
    (["sample", "--vocab-size", "1"], "vocab_size must be an integer in [2, 65536]"),
    (["sample", "--fake-source", "nearby"], "invalid choice"),
    (["sample", "--p-noise", "1.5"], "p_noise must lie in [0, 1)"),
    (["sample", "--periods", "2", "2"], "periods must be distinct"),
    (["sample", "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["bayes", "--tokens", "1 x 2"], "--tokens must be integers"),
    (["bayes", "--tokens", "1 9"], "--tokens must lie in 0..7"),
    (["bayes", "--periods", "3", "--p-transition", "0.1", "--transition-changes", "period"], "at least two periods"),
    (["bayes", "--length", "1"], "length must be >= 2"),
    (["bayes", "--top", "0"], "--top must be an integer >= 1"),
    (["bayes", "--tokens", "99999999999999999999999"], "--tokens must lie in 0..7"),
    (["sample", "--p-noise", "2:0.1,3:x"], "cannot read '2:0.1,3:x'"),
    (["sample", "--periods", "99999999999999999999"], "periods[0] = 99999999999999999999 is beyond the 64-bit integers"),
    (["sample", "--out", ""], "--out is empty"),
    (["sample", "--seed", "-1"], "seed must be an integer >= 0"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_code_2(args, message, capsys):
    try:
        code = main(args)
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "warning" not in line and not line.startswith("usage: nrecur")]
    assert len(lines) == 1 and message in lines[0], err


def test_bad_input_from_the_real_command_has_no_traceback():
    for args in (["sample", "--vocab-size", "1"], ["bayes", "--tokens", "1 9"], ["sample", "--fake-source", "x"]):
        result = run_cli(*args)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("usage: nrecur")]  # argparse's usage line
        assert len(lines) == 1, result.stderr
