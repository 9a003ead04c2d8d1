"""Threads and OpenMP's wait policy: PASSIVE for the workers nrecur starts side by side, unless the environment
sets one; a training's threads and policy chosen from the load, explicit settings first."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import types

import pytest

import nrecur._threads as threads_module
from nrecur._threads import choose_threading, side_by_side

CHILD = [sys.executable, "-c", "import os; print(os.environ.get('OMP_WAIT_POLICY', 'unset'))"]


def child_policy() -> str:
    return subprocess.run(CHILD, capture_output=True, text=True, check=True).stdout.strip()


def test_children_started_side_by_side_wait_passively_and_the_parent_is_left_as_it_was(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    with side_by_side():
        assert child_policy() == "PASSIVE"
    assert "OMP_WAIT_POLICY" not in os.environ and child_policy() == "unset"


def test_a_policy_the_environment_sets_is_kept(monkeypatch):
    for given in ("ACTIVE", ""):
        monkeypatch.setenv("OMP_WAIT_POLICY", given)
        with side_by_side():
            assert child_policy() == given
        assert os.environ["OMP_WAIT_POLICY"] == given


# --- a training's threads and wait policy, chosen from the load


def test_a_quiet_machine_gets_every_core_and_openmps_default_policy():
    choice = choose_threading(cores=4, busy=0.2, env={})
    assert (choice.threads, choice.wait_policy, choice.threads_given) == (4, None, False)
    assert "all 4 cores" in choice.reason and "0.2 of 4" in choice.reason


@pytest.mark.parametrize(("busy", "threads"), [(0.6, 3), (1.0, 3), (1.6, 2), (3.0, 1), (9.0, 1)])
def test_beside_busy_processes_the_free_cores_wait_passively(busy, threads):
    choice = choose_threading(cores=4, busy=busy, env={})
    assert (choice.threads, choice.wait_policy) == (threads, "PASSIVE")
    assert f"{threads} of 4 cores" in choice.reason


def test_one_busy_process_on_two_cores_leaves_one_thread():
    assert (choose_threading(cores=2, busy=1.0, env={}).threads, choose_threading(cores=2, busy=0.3, env={}).threads) == (1, 2)


def test_explicit_threads_and_policy_win_over_the_load():
    busy = choose_threading(cores=2, busy=1.8, env={"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "ACTIVE"})
    assert (busy.threads, busy.wait_policy, busy.threads_given) == (2, "ACTIVE", True)
    assert "as given (OMP_NUM_THREADS)" in busy.reason and "OMP_WAIT_POLICY=ACTIVE as given" in busy.reason
    flag = choose_threading(cores=2, busy=0.0, env={"OMP_NUM_THREADS": "2"}, threads=1)  # --threads beats the variable
    assert (flag.threads, flag.threads_given) == (1, True) and "(--threads)" in flag.reason
    spin = choose_threading(cores=2, busy=1.8, env={"GOMP_SPINCOUNT": "300000"})  # GNU OpenMP's own setting
    assert (spin.threads, spin.wait_policy) == (1, None) and "GOMP_SPINCOUNT=300000 as given" in spin.reason
    quiet = choose_threading(cores=2, busy=0.0, env={"OMP_WAIT_POLICY": "PASSIVE"})
    assert (quiet.threads, quiet.wait_policy) == (2, "PASSIVE")
    unreadable = choose_threading(cores=2, busy=1.5, env={"OMP_NUM_THREADS": "two"})  # not a count: the load decides
    assert (unreadable.threads, unreadable.threads_given) == (1, False)
    assert "OMP_NUM_THREADS='two' ignored: not a positive integer" in unreadable.reason and "\n" not in unreadable.reason
    zero = choose_threading(cores=2, busy=0.0, env={"OMP_NUM_THREADS": "0"})
    assert zero.threads == 2 and "all 2 cores (OMP_NUM_THREADS='0' ignored" in zero.reason
    assert "ignored" not in choose_threading(cores=2, busy=0.0, env={"OMP_NUM_THREADS": "two"}, threads=1).reason  # --threads wins


def test_an_unmeasured_load_leaves_openmp_its_own_choice():
    choice = choose_threading(cores=2, busy=float("nan"), env={})
    assert (choice.threads, choice.wait_policy) == (2, None) and "not measured" in choice.reason


def test_plan_sets_the_policy_only_where_none_is_given(monkeypatch):
    monkeypatch.setattr(threads_module, "busy_cores", lambda seconds=0.25: 5.0)
    monkeypatch.delitem(sys.modules, "torch", raising=False)  # as in `nrecur train` before torch loads
    env: dict[str, str] = {}
    choice = threads_module.plan_threads(env=env)
    assert choice.wait_policy == "PASSIVE" and env == {"OMP_WAIT_POLICY": "PASSIVE"}
    monkeypatch.setitem(sys.modules, "torch", types.ModuleType("torch"))  # torch loaded: too late to choose
    late: dict[str, str] = {}
    choice = threads_module.plan_threads(env=late)
    assert choice.wait_policy is None and late == {} and "torch loaded already" in choice.reason
    given = {"OMP_WAIT_POLICY": "ACTIVE"}
    assert threads_module.plan_threads(env=given).wait_policy == "ACTIVE" and given == {"OMP_WAIT_POLICY": "ACTIVE"}


def spin_count(code: str, env: dict[str, str]) -> str:
    """GOMP_SPINCOUNT as GNU OpenMP reports it when torch loads (OMP_DISPLAY_ENV): 0 under PASSIVE."""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env={**env, "OMP_DISPLAY_ENV": "VERBOSE"})
    found = re.search(r"GOMP_SPINCOUNT = '(\d+)'", run.stderr)
    if found is None:
        pytest.skip("torch's OpenMP is not GNU OpenMP (it does not display GOMP_SPINCOUNT)")
    return found[1]


def test_the_chosen_policy_reaches_openmp_when_chosen_before_torch_loads():
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
    busy = "import nrecur._threads as t; t.busy_cores = lambda seconds=0.25: {}; t.plan_threads(); import torch; torch.ones(2).sum()"
    assert spin_count(busy.format(1.5), env) == "0"  # beside a busy process: PASSIVE, threads never spin
    assert spin_count(busy.format(0.0), env) != "0"  # alone: OpenMP's default, threads spin briefly
    late = "import torch; import nrecur._threads as t; t.busy_cores = lambda seconds=0.25: 1.5; c = t.plan_threads(); torch.ones(2).sum(); assert 'kept' in c.reason"
    assert spin_count(late, env) != "0"  # torch loaded first: too late, and the choice says so


def test_nrecur_train_logs_its_threads_and_a_given_count_wins(tmp_path):
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    env.pop("OMP_NUM_THREADS", None)
    command = [sys.executable, "-m", "nrecur", "train", "--preset", "tiny", "--steps", "2", "--no-progress", "--threads", "1"]
    run = subprocess.run([*command, "--out", str(tmp_path / "a")], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert "threads: " in run.stderr and "1 threads as given (--threads)" in run.stderr and "OMP_WAIT_POLICY=PASSIVE as given" in run.stderr
    wrong = subprocess.run([*command[:-1], "0", "--out", str(tmp_path / "b")], capture_output=True, text=True, env=env)
    assert wrong.returncode == 2 and "--threads must be an integer >= 1, got 0" in wrong.stderr


def test_the_watcher_follows_the_load_after_two_looks_and_leaves_given_threads(monkeypatch):
    import torch

    from nrecur.train.threads import ThreadWatcher

    class Meter:
        readings = [1.5, 1.5, 0.1, 1.5, 0.1, 0.1]

        def others(self) -> float:
            return self.readings.pop(0)

    before = torch.get_num_threads()
    trainer = types.SimpleNamespace(step=0)
    try:
        watcher = ThreadWatcher(choose_threading(2, 0.0, {}), every_seconds=0.0, cores=2)
        watcher.apply()
        watcher._meter = Meter()
        seen = []
        for step in range(6):
            trainer.step = step
            watcher.on_step(trainer, None)
            seen.append(torch.get_num_threads())
        assert seen == [2, 1, 1, 1, 1, 2]  # a burst of one look changes nothing
        assert [change[:2] for change in watcher.changes] == [(1, 1), (5, 2)]
        fixed = ThreadWatcher(choose_threading(2, 0.0, {}, threads=2), every_seconds=0.0, cores=2)
        fixed.apply()
        fixed._meter = Meter()
        for step in range(4):
            fixed.on_step(trainer, None)
        assert torch.get_num_threads() == 2 and fixed.changes == []
    finally:
        torch.set_num_threads(before)
