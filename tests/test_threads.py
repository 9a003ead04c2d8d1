"""OpenMP's wait policy: PASSIVE for the workers nrecur starts side by side, unless the environment sets one."""

from __future__ import annotations

import os
import subprocess
import sys

from nrecur._threads import side_by_side, side_by_side_env

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
    assert side_by_side_env({"OMP_WAIT_POLICY": "ACTIVE"})["OMP_WAIT_POLICY"] == "ACTIVE"
    assert side_by_side_env({"PATH": "/bin"}) == {"PATH": "/bin", "OMP_WAIT_POLICY": "PASSIVE"}
