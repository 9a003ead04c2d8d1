"""Workers forked from the server (nrecur._processes): they start with torch imported, the passive wait policy,
their threads set and SIGTERM back, and they die with the process that started them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from nrecur._processes import _alive

REPORT = textwrap.dedent(
    """
    import json, os, signal, sys
    from nrecur._processes import worker_context, worker_started

    def report(connection, parent):
        started = worker_started(parent, threads=1)
        import threadpoolctl, torch
        connection.send({
            "started": started, "modules": [m for m in ("torch", "torch._dynamo") if m in sys.modules],
            "policy": os.environ.get("OMP_WAIT_POLICY"), "torch_threads": torch.get_num_threads(),
            "pools": sorted({pool["num_threads"] for pool in threadpoolctl.threadpool_info()}),
            "sigterm_default": signal.getsignal(signal.SIGTERM) == signal.SIG_DFL,
        })

    if __name__ == "__main__":
        context = worker_context()
        mine, theirs = context.Pipe()
        process = context.Process(target=report, args=(theirs, os.getpid()))
        process.start()
        print(json.dumps(mine.recv()))
        process.join()
        print(process.exitcode)
    """
)


def test_a_worker_starts_with_torch_the_passive_policy_one_thread_and_sigterm_back(tmp_path):
    script = tmp_path / "report.py"
    script.write_text(REPORT)
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    import json

    lines = run.stdout.splitlines()
    report = json.loads(lines[0])
    assert report["started"] and report["modules"] == ["torch", "torch._dynamo"]
    assert report["policy"] == "PASSIVE"  # the server started inside side_by_side; the caller's environment had none
    assert report["torch_threads"] == 1 and report["pools"] == [1]
    assert report["sigterm_default"]  # the server ignores SIGTERM; the worker must not
    assert lines[1] == "0"


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
    from nrecur._processes import worker_context, worker_started

    def work(parent):
        if not worker_started(parent, threads=1):
            return
        print("armed", flush=True)
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
    worker = None
    try:
        worker = int(parent.stdout.readline())
        assert parent.stdout.readline().strip() == "armed"  # the worker watches its parent now
        assert _alive(worker)
        parent.send_signal(signal.SIGKILL)  # no chance to end its workers: the watcher must
        parent.wait()
        deadline = time.monotonic() + 20
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "the worker outlived the process that started it"
    finally:
        parent.kill()
        if worker is not None and _alive(worker):
            os.kill(worker, signal.SIGKILL)
