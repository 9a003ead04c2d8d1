import fcntl
import os
import shutil
from pathlib import Path

# Several torch processes on a small CPU must not spin-wait on each other.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# pytest-xdist's workers (./test.sh starts one per core) each get one thread, and so do the processes they
# start, unless the environment says otherwise: more threads than cores only wait on each other.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def tiny_analyzed_run(folder: Path) -> Path:
    """A finite-mode run with held-out rules and an intervention, its probes and geometry (with the
    geometry at every checkpoint): every kind of curve, table and section a report page has. Its MLP and
    softmax probes take a few Adam steps each: the page shows their tables, whatever they read."""
    from nrecur import NRecurrence, train
    from nrecur.cli import main
    from nrecur.model import GPTConfig
    from nrecur.train import RunConfig, TrainConfig
    from nrecur.train.interventions import Intervention

    task = NRecurrence(vocab_size=4, periods=(2, 3, 4))
    model = GPTConfig(vocab_size=4, n_ctx=12, d_model=32, n_layers=2, n_heads=4, d_head=8, d_mlp=64)
    settings = TrainConfig(
        mode="finite", train_size=128, held_out_fraction=0.25, steps=60, batch_size=64, eval_every=20, eval_size=128,
        device="cpu", log_checkpoints=3, interventions=(Intervention(kind="ablate", layer=0, head=1, start=0, end=30),),
    )  # fmt: skip
    train(RunConfig(task=task, model=model, train=settings), folder, progress=False)
    assert main(["analyze", str(folder), "--what", "probes", "geometry", "--checkpoints", "all", "--sequences", "48", "--set", "probes.mlp_steps=10", "--no-progress"]) == 0
    return folder


@pytest.fixture(scope="session")
def analyzed_runs(tmp_path_factory) -> Path:
    """A folder of runs, made once per session and only read: ``tiny`` (:func:`tiny_analyzed_run`) and ``fresh``,
    a copy of its config without metrics (training has not evaluated yet). A test that writes copies it first.
    pytest-xdist's workers share it: the first to need it makes it in their common temporary folder while
    holding a lock, and the others wait for it there."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the session's folder, above each worker's own
    folder, done = shared / "analyzed", shared / "analyzed.done"
    with open(shared / "analyzed.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # a worker that failed halfway left it
            run = tiny_analyzed_run(folder / "runs" / "tiny")
            (folder / "runs" / "fresh").mkdir()
            shutil.copy(run / "config.json", folder / "runs" / "fresh" / "config.json")
            done.touch()
    return folder / "runs"
