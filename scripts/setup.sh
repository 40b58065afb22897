#!/usr/bin/env bash
# Create .venv in the repository root when it is missing and install the project into it.
#   scripts/setup.sh        the engine and its runtime dependencies
#   scripts/setup.sh dev    the same plus the test and lint tools
# A machine without an NVIDIA GPU gets torch's CPU build; one with a GPU keeps (or gets) a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$python" -m venv .venv
    .venv/bin/python -m pip install --quiet --upgrade pip
fi
pip=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    "${pip[@]}" "torch==${TORCH_VERSION:-2.13.0}"
fi
extra=""
[ "${1:-}" = "dev" ] && extra="[dev]"
"${pip[@]}" -e ".${extra}"
