#!/usr/bin/env bash
# Set everything up and run the test suite (GPU tests skip without a GPU).
# pytest's exit code is passed on: 5 ("no tests collected") fails like any other.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
# One pytest-xdist worker per core, at most 8, each with one thread (tests/conftest.py). A later -n overrides it:
# -n 0 runs in this process.
workers=$(nproc 2>/dev/null || echo 2)
exec .venv/bin/python -m pytest -n "$(( workers < 8 ? workers : 8 ))" --dist worksteal "$@"
