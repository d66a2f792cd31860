#!/usr/bin/env bash
# Create ./.venv and install nde with the given extras (default: all).
#
# The venv sees the system's site-packages, so a torch that is already installed
# (and satisfies torch>=2.1) is reused rather than downloaded again. Only when no
# torch is importable does this script install one: $NDE_TORCH if set, else
# torch==2.13.0 (a CPU build is available offline on the project's machines).
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv --system-site-packages .venv
VPY=.venv/bin/python
"$VPY" -m pip install -q --upgrade pip >/dev/null
if ! "$VPY" -c "import torch" 2>/dev/null; then
    "$VPY" -m pip install -q "${NDE_TORCH:-torch==2.13.0}"
fi
"$VPY" -m pip install -q -e ".[${1:-all}]"
