"""Workers forked from the server (nrecur._processes): they start without importing torch, and die with the
process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from nrecur._processes import _alive, worker_context


def _report_modules(connection) -> None:
    connection.send((sorted(name for name in ("torch", "torch._dynamo") if name in sys.modules), os.environ.get("OMP_WAIT_POLICY")))


def test_a_worker_starts_with_torch_already_imported_and_the_passive_wait_policy(monkeypatch):
    context = worker_context()
    mine, theirs = context.Pipe()
    process = context.Process(target=_report_modules, args=(theirs,))
    process.start()
    modules, policy = mine.recv()
    process.join(timeout=30)
    assert process.exitcode == 0
    assert modules == ["torch", "torch._dynamo"]
    assert policy is not None  # the server started inside side_by_side (or the environment set a policy)


def test_alive_says_no_for_an_exited_process_and_for_a_zombie():
    assert _alive(os.getpid())
    child = subprocess.Popen(["sleep", "30"])
    assert _alive(child.pid)
    child.kill()
    deadline = time.monotonic() + 10
    while _alive(child.pid) and time.monotonic() < deadline:  # killed, not yet reaped: a zombie
        time.sleep(0.01)
    assert not _alive(child.pid)
    child.wait()
    assert not _alive(child.pid)


PARENT = textwrap.dedent(
    """
    import os, sys, time
    from nrecur._processes import die_with, worker_context

    def work(parent):
        if not die_with(parent):
            return
        time.sleep(120)

    if __name__ == "__main__":
        process = worker_context().Process(target=work, args=(os.getpid(),), daemon=True)
        process.start()
        print(process.pid, flush=True)
        time.sleep(120)
    """
)


def test_a_worker_dies_when_the_process_that_started_it_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(parent.stdout.readline())
        time.sleep(0.5)  # the worker has armed its death signal
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)  # no chance to end its workers: the kernel must
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived the process that started it"
    finally:
        parent.kill()
