#!/usr/bin/env bash
# Set everything up and run the test suite (GPU tests skip without a GPU).
# pytest's exit code is passed on: 5 ("no tests collected") fails like any other.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/python -m pytest "$@"
