"""OpenMP's wait policy for torch processes that nrecur starts side by side.

OpenMP reads ``OMP_WAIT_POLICY`` once, when torch loads. With its default
policy a lone process is fastest (its threads spin briefly between the many
small kernels of a small model), but processes side by side on a small CPU
then spin-wait on each other and throughput collapses; ``PASSIVE`` avoids
that. So nrecur leaves the policy of the process a user starts alone, and
gives ``PASSIVE`` to the workers it starts side by side, unless the
environment already sets a policy.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

__all__ = ["side_by_side", "side_by_side_env"]

VARIABLE = "OMP_WAIT_POLICY"


def side_by_side_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with ``OMP_WAIT_POLICY=PASSIVE`` unless it sets a policy (for ``subprocess`` calls)."""
    return env if VARIABLE in env else {**env, VARIABLE: "PASSIVE"}


@contextlib.contextmanager
def side_by_side() -> Iterator[None]:
    """Processes started inside inherit ``OMP_WAIT_POLICY=PASSIVE`` unless the environment sets a policy;
    the environment is as before afterwards."""
    if VARIABLE in os.environ:
        yield
        return
    os.environ[VARIABLE] = "PASSIVE"
    try:
        yield
    finally:
        os.environ.pop(VARIABLE, None)
