#!/usr/bin/env bash
# Set everything up and run the main job (`nrecur run`); extra arguments go to `nrecur run`.
set -euo pipefail
cd "$(dirname "$0")"
scripts/install.sh
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
exec .venv/bin/nrecur run "$@"
