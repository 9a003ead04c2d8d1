"""Bad inputs and faults, the way a new user or a fault tester meets them (issue 7).

Every case goes through the command line (``nrecur.cli.main``) or the library,
and checks four things: the exit code (2 for bad input, 1 for a training that
diverged), one line on stderr naming the problem (no traceback), that files
already on disk are untouched, and that a failed start leaves no run folder.
Groups: sizes, probabilities, mappings, options, files (damaged, truncated,
bit-flipped and mismatched checkpoints, a ``.py`` as ``--init-from``, corrupt
``config.json`` / ``summary.json`` / ``metrics.jsonl``), overwrites, kills,
disk full and read-only folders. All runs are tiny (a second or two each).
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import nrecur._io
import nrecur.tasks.base
import nrecur.tasks.nrecurrence
from nrecur.cli import build_parser, main
from nrecur.model import GPT, GPTConfig
from nrecur.runs import load_run
from nrecur.train.checkpoint import CheckpointError, load_checkpoint, load_model_tensors
from nrecur.train import memory as train_memory
from nrecur.train.folder import RunFolder

TINY = [
    "--vocab-size", "6", "--periods", "2", "3", "--n-ctx", "10", "--d-model", "16", "--n-layers", "1",
    "--n-heads", "2", "--d-head", "8", "--d-mlp", "32", "--steps", "20", "--batch-size", "8",
    "--eval-every", "10", "--eval-size", "32", "--checkpoint-every", "10", "--device", "cpu", "--no-progress",
]  # fmt: skip


@dataclass
class Outcome:
    code: int
    err: str
    out: str

    @property
    def line(self) -> str:
        """The one error line (asserts there is exactly one and no traceback); a mistake in the arguments
        prints the command's usage line before it."""
        assert "Traceback" not in self.err, self.err
        lines = self.err.splitlines()
        if lines and lines[0].startswith("usage: nrecur"):
            lines = lines[1:]
        assert len(lines) == 1, self.err
        return lines[0]


def cli(capsys, *args: str) -> Outcome:
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as exit:  # argparse's own errors
        code = exit.code
    captured = capsys.readouterr()
    return Outcome(code, captured.err, captured.out)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its bytes."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def only_checkpoint(run: Path) -> Path:
    found = RunFolder(run).checkpoints()
    return found[-1][1]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A finished tiny run: checkpoints at steps 0, 1, 4 (log-spaced) and 20."""
    folder = tmp_path_factory.mktemp("bad-inputs") / "det"
    assert main(["train", "--out", str(folder), *TINY, "--log-checkpoints", "3"]) == 0
    assert [step for step, _ in RunFolder(folder).checkpoints()] == [0, 1, 4, 20]
    return folder


@pytest.fixture
def run(source, tmp_path) -> Path:
    """A fresh copy of the finished run, to damage."""
    return Path(shutil.copytree(source, tmp_path / "run"))


# ---------------------------------------------------------------------------- sizes, probabilities, mappings, options

BAD_OPTIONS = [
    # sizes
    (["sample", "--batch-size", "1000000000", "--length", "1000000"], "would need about 48.0 PB of memory"),
    (["sample", "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["sample", "--length", "-5"], "length must be an integer >= 1"),
    (["train", *TINY, "--batch-size", "0"], "batch_size must be an integer >= 1"),
    (["train", *TINY, "--n-ctx", "1"], "model.n_ctx must be >= 2"),
    (["train", *TINY, "--eval-size", "0"], "eval_size must be an integer >= 1"),
    (["train", "--d-model", "1000000", "--no-progress"], "this run needs about"),
    (["train", *TINY, "--decay-steps", "0"], "decay_steps must be an integer >= 1"),
    # probabilities
    (["sample", "--p-noise", "1.5"], "p_noise must lie in [0, 1)"),
    (["sample", "--p-noise", "nan"], "nan"),  # refused by the parser or by validation: either names it
    (["sample", "--p-noise", "-0.2/n"], "'-0.2' is not a number >= 0"),
    (["sample", "--p-transition", "1"], "p_transition must lie in [0, 1)"),
    (["sample", "--p-noise", "0.2/x"], "cannot read '0.2/x'"),
    (["sample", "--period-prior", "0.5", "0.6", "--periods", "2", "3"], "period_prior must sum to 1"),
    (["sample", "--task", "mess3", "--x", "0.7"], "x must lie in (0, 0.5]"),
    (["sample", "--task", "rrxor", "--p1", "1.5"], "p1 must lie in [0, 1]"),
    (["train", *TINY, "--lr", "-1"], "lr must be a finite number > 0"),
    (["train", *TINY, "--min-lr-ratio", "2"], "min_lr_ratio must lie in [0, 1]"),
    # mappings
    (["sample", "--periods", "2", "3", "--p-noise", "2:0.1"], "missing [3]"),
    (["sample", "--periods", "2", "3", "--p-noise", "2:0.1,3:0.1,9:0.1"], "unknown [9]"),
    (["sample", "--p-noise", "2:0.1,3:x"], "cannot read '2:0.1,3:x'"),
    (["sample", "--periods", "2", "3", "--p-noise", "2:0.1,2:0.4,3:0.1"], "period 2 is given twice"),
    (["train", "--p-transition", "2:0.1,2:0.4,3:0.1,4:0.1,5:0.1"], "period 2 is given twice"),
    # options: abbreviations are refused, not guessed
    (["train", *TINY, "--d-mod", "32"], "unrecognized arguments: --d-mod 32"),
    (["sample", "--batch", "3"], "unrecognized arguments: --batch 3"),
    (["train", "--stochastic", *TINY], "--stochastic needs an n-recurrence --preset"),
]


@pytest.mark.parametrize("args, message", BAD_OPTIONS, ids=[" ".join(a[:1] + a[-2:]) for a, _ in BAD_OPTIONS])
def test_bad_options_are_one_line_exit_2_and_leave_no_folder(args, message, tmp_path, capsys):
    out = tmp_path / "out"
    if args[0] == "train":
        args = [*args, "--out", str(out)]
    outcome = cli(capsys, *args)
    assert outcome.code == 2
    assert message in outcome.line and outcome.line.startswith("nrecur")
    assert not out.exists()


def test_sampling_beyond_the_memory_available_is_refused_with_the_estimate(monkeypatch, capsys):
    monkeypatch.setattr(nrecur.tasks.base, "available_memory", lambda: 1_000_000)
    outcome = cli(capsys, "sample", "--batch-size", "1000", "--length", "100")
    assert outcome.code == 2
    assert "would need about 4.8 MB of memory" in outcome.line and "more than the 1.0 MB of memory available" in outcome.line


def test_training_beyond_the_memory_available_is_refused_before_allocating(run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(train_memory, "available_memory", lambda: 100_000)
    before = snapshot(run)
    outcome = cli(capsys, "train", "--out", tmp_path / "new", *TINY)
    assert outcome.code == 2 and "this run needs about" in outcome.line and "only 100.0 kB is available" in outcome.line
    assert not (tmp_path / "new").exists()
    # A failed start with --overwrite does not destroy the run it would have replaced.
    outcome = cli(capsys, "train", "--out", run, *TINY, "--overwrite")
    assert outcome.code == 2 and "this run needs about" in outcome.line
    assert snapshot(run) == before


def test_the_memory_estimate_counts_the_parameters_of_every_preset_exactly():
    from nrecur.train.presets import PRESETS

    for name, make in PRESETS.items():  # norms and odd shapes: tests/test_model.py
        config = make().run
        assert train_memory.estimate_training_memory(config).parameters == GPT(config.model).num_params, name


def test_a_diverging_training_exits_1_with_one_line(tmp_path, capsys):
    outcome = cli(capsys, "train", "--out", tmp_path / "run", *TINY, "--lr", "1e9", "--grad-clip", "0")
    assert outcome.code == 1 and "training loss became nan" in outcome.line


def test_tokens_outside_the_vocabulary_are_a_clear_error():
    model = GPT(GPTConfig(vocab_size=6, n_ctx=8, d_model=16, n_heads=2, d_head=8, d_mlp=0))
    for bad in ([[0, 6, 1]], [[-1, 2, 3]]):
        with pytest.raises(ValueError, match=r"tokens must lie in 0\.\.5 \(vocab_size=6\)"):
            model(torch.tensor(bad))
    assert model(torch.tensor([[0, 5, 1]])).shape == (1, 3, 6)


def test_a_short_context_gives_one_warning_naming_it(tmp_path, monkeypatch, recwarn, capsys):
    monkeypatch.setattr(nrecur.tasks.nrecurrence, "_WARNED_SHORT", set())
    assert cli(capsys, "train", "--out", tmp_path / "run", *TINY, "--n-ctx", "2", "--steps", "2").code == 0
    short = [str(w.message) for w in recwarn if "shorter than" in str(w.message)]
    assert len(short) == 1 and short[0].startswith("context length 2 is shorter than 3 x the largest period (9)")


# ---------------------------------------------------------------------------- files: checkpoints


def flip_bytes(path: Path, count: int, seed: int, start: int = 0) -> None:
    data = bytearray(path.read_bytes())
    rng = random.Random(seed)
    for index in rng.sample(range(start, len(data)), count):
        data[index] ^= 1 << rng.randrange(8)
    path.write_bytes(bytes(data))


def header_size(path: Path) -> int:
    return 8 + int.from_bytes(path.read_bytes()[:8], "little")


DAMAGE = {
    "garbage": lambda path: path.write_bytes(os.urandom(3000)),
    "empty": lambda path: path.write_bytes(b""),
    "truncated": lambda path: path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2]),
    "truncated header": lambda path: path.write_bytes(path.read_bytes()[:50]),
    "100 flipped bytes": lambda path: flip_bytes(path, 100, seed=0),
    "one flipped bit in the weights": lambda path: flip_bytes(path, 1, seed=1, start=header_size(path)),
    "a python file": lambda path: path.write_text("print('hello')\n"),
}
DAMAGE_MESSAGE = r"is not a readable nrecur checkpoint|is damaged|is not an nrecur checkpoint"


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_checkpoint_is_refused_never_used(run, damage):
    path = only_checkpoint(run)
    DAMAGE[damage](path)
    for load in (load_checkpoint, load_model_tensors):
        with pytest.raises(CheckpointError, match=DAMAGE_MESSAGE):
            load(path)
    with pytest.raises(CheckpointError, match=DAMAGE_MESSAGE):
        load_run(run, step=20)


@pytest.mark.parametrize("seed", range(10))
def test_a_hundred_flipped_bytes_among_the_tensors_are_caught_by_the_checksum(run, seed):
    """Flips in the header break its parsing; flips in the tensor bytes only a checksum can see."""
    path = only_checkpoint(run)
    flip_bytes(path, 100, seed=seed, start=header_size(path))
    with pytest.raises(CheckpointError, match="is damaged: its .* tensors do not match the checksum"):
        load_checkpoint(path)


def test_a_checkpoint_of_the_first_format_still_loads(run):
    """Checkpoints written before checksums existed load unverified."""
    path = only_checkpoint(run)
    current = load_checkpoint(path)
    tensors = {f"model.{name}": t for name, t in current.model.items()}
    save_file(tensors, str(path), metadata={"format": "nrecur-checkpoint-1", "step": "20", "state": "{}"})
    assert load_run(run).step == 20


@pytest.mark.parametrize("damage", ["garbage", "truncated", "100 flipped bytes"])
@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_damaged_only_checkpoint_is_one_line_and_nothing_changes(run, damage, command, capsys):
    for _, path in RunFolder(run).checkpoints()[:-1]:
        path.unlink()
    DAMAGE[damage](only_checkpoint(run))
    before = snapshot(run)
    args = ["eval", run] if command == "eval" else ["train", "--resume", run, "--no-progress"]
    outcome = cli(capsys, *args)
    assert outcome.code == 2 and "step_00000020.safetensors" in outcome.line
    assert snapshot(run) == before


def test_eval_falls_back_to_the_previous_checkpoint_with_a_warning(run, capsys):
    DAMAGE["truncated"](only_checkpoint(run))
    with pytest.warns(UserWarning, match=r"step_00000020\.safetensors .*using the previous checkpoint step_00000004"):
        outcome = cli(capsys, "eval", run)
    assert outcome.code == 0 and "at step 4;" in outcome.out
    with pytest.warns(UserWarning, match="step_00000020"):
        assert load_run(run).step == 4


def test_resume_falls_back_to_the_previous_checkpoint_and_ends_the_same(run, source, capsys):
    """The damaged latest checkpoint is set aside; training from the previous one ends bit for bit as before."""
    (run / "summary.json").unlink()
    damaged = only_checkpoint(run)
    DAMAGE["100 flipped bytes"](damaged)
    with pytest.warns(UserWarning, match=r"step_00000020\.safetensors .*renamed to \*\.damaged.*step_00000004"):
        outcome = cli(capsys, "train", "--resume", run, "--no-progress")
    assert outcome.code == 0, outcome.err
    assert damaged.with_name(damaged.name + ".damaged").exists()
    original, resumed = load_checkpoint(only_checkpoint(source)), load_checkpoint(only_checkpoint(run))
    assert resumed.step == 20
    for name in original.model:
        assert torch.equal(original.model[name], resumed.model[name]), name


def test_a_checkpoint_that_does_not_fit_config_json_is_one_line(run, capsys):
    config = json.loads((run / "config.json").read_text())
    config["model"]["d_model"] = 32
    (run / "config.json").write_text(json.dumps(config))
    before = snapshot(run)
    for args in (["eval", run], ["train", "--resume", run, "--steps", "30", "--no-progress"]):
        outcome = cli(capsys, *args)
        assert outcome.code == 2
        assert "does not fit" in outcome.line and "embed.weight is (6, 16) there but (6, 32) here" in outcome.line
    with pytest.raises(CheckpointError, match="does not fit the model of"):
        load_run(run)
    assert snapshot(run) == before


@pytest.mark.parametrize("what", ["a python file", "a truncated checkpoint", "a damaged run", "an empty file", "a folder without checkpoints"])
def test_a_bad_init_from_is_one_line_and_leaves_no_folder(run, tmp_path, what, capsys):
    if what == "a python file":
        source = tmp_path / "model.py"
        source.write_text("import torch\n")
    elif what == "a truncated checkpoint":
        source = only_checkpoint(run)
        DAMAGE["truncated"](source)
    elif what == "a damaged run":
        source = run
        DAMAGE["100 flipped bytes"](only_checkpoint(run))
    elif what == "an empty file":
        source = tmp_path / "empty.safetensors"
        source.write_bytes(b"")
    else:
        source = tmp_path / "empty-folder"
        source.mkdir()
    before = snapshot(run)
    outcome = cli(capsys, "train", "--out", tmp_path / "ft", *TINY, "--init-from", source)
    assert outcome.code == 2 and "cannot initialize from" in outcome.line
    expected = "no checkpoint there" if what == "a folder without checkpoints" else DAMAGE_MESSAGE
    assert any(part in outcome.line for part in expected.split("|")), outcome.line
    assert not (tmp_path / "ft").exists()
    assert snapshot(run) == before


def test_a_checkpoint_that_does_not_read_back_intact_keeps_the_previous_one(tmp_path, monkeypatch, capsys):
    """The new checkpoint is verified before the previous one is deleted."""
    from nrecur.train import checkpoint

    real = checkpoint.atomic_write_bytes

    def write_damaged_from_step_20(path, data):
        if path.name == "step_00000020.safetensors":
            data = data[:-10] + bytes(b ^ 0xFF for b in data[-10:])  # the last bytes flipped: a bad disk
        return real(path, data)

    monkeypatch.setattr(checkpoint, "atomic_write_bytes", write_damaged_from_step_20)
    outcome = cli(capsys, "train", "--out", tmp_path / "run", *TINY)
    assert outcome.code == 2 and "did not read back intact just after it was written" in outcome.line
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "step_00000010.safetensors").step == 10
    monkeypatch.setattr(checkpoint, "atomic_write_bytes", real)
    with pytest.warns(UserWarning, match="step_00000020"):  # the damaged one is set aside, the run finishes
        assert cli(capsys, "train", "--resume", tmp_path / "run", "--no-progress").code == 0


# ---------------------------------------------------------------------------- files: config, summary, metrics


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "config.json does not hold a valid run config"),
        ('{"task": {"kind": "nrecurrence"}, "model": {"d_model": -1}}', "config.json does not hold a valid run config"),
        ('{"colour": "blue"}', "config.json does not hold a valid run config"),
        (b"\xff\xfe\x00garbage", "config.json is not a text file"),
    ],
    ids=["not json", "invalid value", "unknown field", "binary"],
)
@pytest.mark.parametrize("command", ["eval", "resume"])
def test_a_corrupt_config_json_is_named(run, content, message, command, capsys):
    path = run / "config.json"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    before = snapshot(run)
    args = ["eval", run] if command == "eval" else ["train", "--resume", run, "--no-progress"]
    outcome = cli(capsys, *args)
    assert outcome.code == 2 and message in outcome.line
    assert snapshot(run) == before


@pytest.mark.parametrize("content", ["{half a summ", "[1, 2]", "\xff garbage"])
def test_a_corrupt_summary_json_alone_does_not_block_eval(run, content, capsys):
    (run / "summary.json").write_bytes(content.encode("latin-1"))
    with pytest.warns(UserWarning, match=r"summary\.json .*; ignored"):
        outcome = cli(capsys, "eval", run)
    assert outcome.code == 0 and "model CE" in outcome.out
    with pytest.warns(UserWarning, match="summary.json"):
        assert load_run(run).summary is None


def test_a_corrupt_middle_line_of_metrics_is_named_with_its_line_number(run):
    lines = (run / "metrics.jsonl").read_text().splitlines()
    lines[1] = lines[1][:20]
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.warns(UserWarning, match=r"metrics\.jsonl: line 2 is not a metrics record; skipped"):
        loaded = load_run(run)
    assert [line["step"] for line in loaded.metrics] == [0, 20]


# ---------------------------------------------------------------------------- overwrites


def test_a_folder_with_files_but_no_run_is_not_written(run, tmp_path, capsys):
    """Another run's files without its config.json: neither overwritten nor mixed with."""
    (run / "config.json").unlink()
    before = snapshot(run)
    outcome = cli(capsys, "train", "--out", run, *TINY)
    assert outcome.code == 2 and "is not empty" in outcome.line and "--overwrite" in outcome.line
    assert snapshot(run) == before
    outcome = cli(capsys, "train", "--out", run, *TINY, "--force")
    assert outcome.code == 0
    steps = [step for step, _ in RunFolder(run).checkpoints()]
    assert steps == [20], "the other run's checkpoints must go"
    assert load_run(run).step == 20


def test_an_existing_run_is_not_replaced_without_overwrite(run, tmp_path, capsys):
    before = snapshot(run)
    outcome = cli(capsys, "train", "--out", run, *TINY)
    assert outcome.code == 2 and "already holds a run" in outcome.line
    assert snapshot(run) == before
    (tmp_path / "file").write_text("x")
    outcome = cli(capsys, "train", "--out", tmp_path / "file", *TINY)
    assert outcome.code == 2 and "is a file, not a folder" in outcome.line
    (tmp_path / "empty").mkdir()
    assert cli(capsys, "train", "--out", tmp_path / "empty", *TINY).code == 0


def test_overwrite_and_force_are_one_option_in_train_and_sample(tmp_path, capsys):
    path = tmp_path / "data.npz"
    path.write_bytes(b"precious")
    outcome = cli(capsys, "sample", "--out", path)
    assert outcome.code == 2 and "pass --overwrite to replace it" in outcome.line
    assert path.read_bytes() == b"precious"
    for flag in ("--overwrite", "--force"):
        assert cli(capsys, "sample", "--out", path, flag).code == 0
        assert cli(capsys, "train", "--out", tmp_path / "run", *TINY, "--steps", "2", flag).code == 0
    parser = build_parser()
    for command in ("sample", "train"):
        sub = parser._subparsers._group_actions[0].choices[command]
        action = next(a for a in sub._actions if "--overwrite" in a.option_strings)
        assert action.option_strings == ["--overwrite", "--force"] and "--force is the same option" in action.help


def test_the_main_job_does_not_write_into_a_folder_with_files_but_no_run(tmp_path):
    from nrecur.jobs.main import prepare
    from nrecur.train.presets import get_preset

    folder = RunFolder(tmp_path / "tiny-det")
    folder.path.mkdir()
    (folder.path / "metrics.jsonl").write_text("other\n")
    with pytest.raises(FileExistsError, match="is not empty and holds no run"):
        prepare(get_preset("tiny").run, folder, fresh=False)
    assert snapshot(folder.path) == {"metrics.jsonl": b"other\n"}
    assert prepare(get_preset("tiny").run, folder, fresh=True)


# ---------------------------------------------------------------------------- kills


def test_a_sample_killed_while_writing_leaves_nothing_the_next_write_keeps(tmp_path, capsys):
    """Leftovers of a killed ``nrecur sample --out`` (this version's and older ones) go at the next write;
    nothing else in the folder is touched."""
    leftovers = [tmp_path / ".data.npz.a1b2c3.tmp", tmp_path / "tmpx7y8z9.npz.tmp"]
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    (tmp_path / "notes.tmp").write_text("mine")
    (tmp_path / "other.npz").write_bytes(b"other data")
    assert cli(capsys, "sample", "--out", tmp_path / "data.npz").code == 0
    assert not any(path.exists() for path in leftovers)
    assert (tmp_path / "notes.tmp").read_text() == "mine" and (tmp_path / "other.npz").read_bytes() == b"other data"


NRECUR = [sys.executable, "-c", "import sys; from nrecur.cli import main; sys.exit(main(sys.argv[1:]))"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}


@pytest.mark.slow
def test_a_sigkilled_fine_tune_resumed_from_another_directory_gets_the_same_weights(tmp_path, monkeypatch, capsys):
    """Issue 7, case 1, for real: a fine-tune SIGKILLed before its first checkpoint, resumed from a directory
    where its relative --init-from means another run, ends exactly as an uninterrupted fine-tune."""
    here, elsewhere = tmp_path / "here", tmp_path / "elsewhere"
    options = [*TINY, "--init-from", "det", "--steps", "400", "--checkpoint-every", "1000", "--eval-every", "100"]
    for folder, seed in ((elsewhere, "5"), (here, "0")):  # two different runs, both called "det"
        folder.mkdir()
        monkeypatch.chdir(folder)
        assert cli(capsys, "train", "--out", "det", *TINY, "--init-seed", seed).code == 0
    assert cli(capsys, "train", "--out", tmp_path / "whole", *options).code == 0  # from here/det

    cut = tmp_path / "cut"
    rng = random.Random(os.getpid())
    for _ in range(5):
        shutil.rmtree(cut, ignore_errors=True)
        process = subprocess.Popen([*NRECUR, "train", "--out", str(cut), *options], cwd=here, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and process.poll() is None and not (cut / "config.json").exists():
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.2))
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
        process.wait()
        if process.returncode == -signal.SIGKILL and not RunFolder(cut).checkpoints():
            break
    else:
        pytest.skip("could not kill the fine-tune before its first checkpoint")
    monkeypatch.chdir(elsewhere)
    assert cli(capsys, "train", "--resume", cut, "--no-progress").code == 0
    expected, got = load_checkpoint(only_checkpoint(tmp_path / "whole")), load_checkpoint(only_checkpoint(cut))
    for name in expected.model:
        assert torch.equal(expected.model[name], got.model[name]), name


# ---------------------------------------------------------------------------- disk full


@pytest.fixture
def disk_full(monkeypatch):
    """Every atomic write fails at its flush with ENOSPC, as on a full disk."""

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(nrecur._io.os, "fsync", full)


def test_disk_full_at_the_start_of_a_run_leaves_no_folder(tmp_path, disk_full, capsys):
    outcome = cli(capsys, "train", "--out", tmp_path / "run", *TINY)
    assert outcome.code == 2 and outcome.line == f"nrecur train: error: No space left on device: {tmp_path / 'run' / 'config.json'}"
    assert not (tmp_path / "run").exists()


def test_disk_full_on_resume_or_overwrite_loses_nothing(run, tmp_path, disk_full, capsys):
    (run / "summary.json").unlink()
    only_checkpoint(run).unlink()  # an interrupted run, at step 4
    before = snapshot(run)
    outcome = cli(capsys, "train", "--resume", run, "--no-progress")
    assert outcome.code == 2 and "No space left on device" in outcome.line
    assert snapshot(run) == before
    path = tmp_path / "data.npz"
    path.write_bytes(b"precious")
    outcome = cli(capsys, "sample", "--out", path, "--overwrite")
    assert outcome.code == 2 and outcome.line.endswith(f"No space left on device: {path}")
    assert path.read_bytes() == b"precious" and sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "run"]


def test_disk_full_while_checkpointing_keeps_the_previous_checkpoint(tmp_path, monkeypatch, capsys):
    real = os.fsync
    calls = {"checkpoints": 0}

    def full_from_the_second_checkpoint(fd):
        name = os.readlink(f"/proc/self/fd/{fd}") if os.path.exists(f"/proc/self/fd/{fd}") else ""
        if "safetensors" in name:
            calls["checkpoints"] += 1
            if calls["checkpoints"] >= 2:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(fd)

    if not os.path.exists("/proc/self/fd"):
        pytest.skip("needs /proc/self/fd to tell checkpoint writes apart")
    monkeypatch.setattr(nrecur._io.os, "fsync", full_from_the_second_checkpoint)
    outcome = cli(capsys, "train", "--out", tmp_path / "run", *TINY)
    assert outcome.code == 2 and "No space left on device" in outcome.line and "step_00000020.safetensors" in outcome.line
    assert [step for step, _ in RunFolder(tmp_path / "run").checkpoints()] == [10]
    assert not list((tmp_path / "run").rglob("*.tmp"))
    monkeypatch.setattr(nrecur._io.os, "fsync", real)
    assert cli(capsys, "train", "--resume", tmp_path / "run", "--no-progress").code == 0
    assert load_run(tmp_path / "run").step == 20


# ---------------------------------------------------------------------------- read-only folders


def _permissions_are_enforced(folder: Path) -> bool:
    probe = folder / "probe"
    probe.mkdir()
    probe.chmod(0o555)
    try:
        (probe / "x").write_text("x")
    except PermissionError:
        return True
    finally:
        probe.chmod(0o755)
        shutil.rmtree(probe)
    return False


def test_a_read_only_run_folder(run, tmp_path, capsys):
    """chmod 0o555: eval works, resume and sample fail with one line, nothing changes."""
    if not _permissions_are_enforced(tmp_path):
        pytest.skip("file permissions do not stop this user (root): see the simulated read-only test below")
    (run / "summary.json").unlink()
    only_checkpoint(run).unlink()
    before = snapshot(run)
    folders = [run, *[p for p in run.rglob("*") if p.is_dir()]]
    for folder in folders:
        folder.chmod(0o555)
    try:
        assert cli(capsys, "eval", run).code == 0
        outcome = cli(capsys, "train", "--resume", run, "--no-progress")
        assert outcome.code == 2 and "Permission denied" in outcome.line
        outcome = cli(capsys, "sample", "--out", run / "data.npz")
        assert outcome.code == 2 and "Permission denied" in outcome.line
    finally:
        for folder in folders:
            folder.chmod(0o755)
    assert snapshot(run) == before


def test_a_read_only_run_folder_simulated(run, tmp_path, monkeypatch, capsys):
    """The same where permissions do not apply (root): every new file in the folder is refused."""
    (run / "summary.json").unlink()
    only_checkpoint(run).unlink()
    before = snapshot(run)

    def refuse(*args, dir=None, **kwargs):
        raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

    monkeypatch.setattr(nrecur._io.tempfile, "mkstemp", refuse)
    assert cli(capsys, "eval", run).code == 0  # evaluating writes nothing
    outcome = cli(capsys, "train", "--resume", run, "--no-progress")
    assert outcome.code == 2 and outcome.line == f"nrecur train: error: Permission denied: {run / 'metrics.jsonl'}"
    outcome = cli(capsys, "sample", "--out", tmp_path / "data.npz")
    assert outcome.code == 2 and outcome.line == f"nrecur sample: error: Permission denied: {tmp_path / 'data.npz'}"
    assert snapshot(run) == before


# ---------------------------------------------------------------------------- the real command


def test_the_real_command_prints_no_traceback(run, tmp_path):
    DAMAGE["garbage"](only_checkpoint(run))
    (tmp_path / "model.py").write_text("x = 1\n")
    for args in (
        ["eval", str(run), "--step", "20"],
        ["train", "--out", str(tmp_path / "ft"), *TINY, "--init-from", str(tmp_path / "model.py")],
        ["sample", "--batch-size", "1000000000", "--length", "1000000"],
    ):
        result = subprocess.run([*NRECUR, *args], env=ENV, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2 and "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr

