#!/usr/bin/env bash
# Create .venv and install nrecur into it (idempotent; reinstalls when pyproject.toml changes).
#
# PyTorch goes in first, pinned, so that installing nrecur never makes pip pick
# another build: on Linux x86-64 PyPI's torch==2.13.0 is the CUDA build (it runs
# on CPU too); on a machine that provides a local CPU wheel it is that one. To
# choose another build, set TORCH_SPEC, e.g.
#   TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" ./run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
VENV=.venv
STAMP="$VENV/.nrecur-installed"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[install] creating $VENV with $($PYTHON --version 2>&1)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    echo "[install] $TORCH_SPEC"
    # shellcheck disable=SC2086
    "${PIP[@]}" install $TORCH_SPEC
fi

want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ] || ! "$VENV/bin/python" -c "import nrecur" 2>/dev/null; then
    echo "[install] nrecur and its dependencies (editable, with test tools and the docs' builder)"
    "${PIP[@]}" install -e ".[dev,docs]"
    echo "$want" > "$STAMP"
fi

# The reports' browser test (tests/test_report_browser.py) runs Debian's Chromium package through Playwright;
# no browser is downloaded from anywhere else. A no-op when chromium is there; the test skips, saying why,
# where it cannot be installed (not root, or no apt-get).
if ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[install] chromium (Debian package, for the report's browser test)"
        export DEBIAN_FRONTEND=noninteractive
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1 \
            || echo "[install] could not install chromium; the browser test will skip"
    else
        echo "[install] chromium is missing (apt-get install chromium as root); the browser test will skip"
    fi
fi
