#!/usr/bin/env bash
# Set up if needed, lint, and run the test suite. Extra arguments go to
# pytest (e.g. -m "not slow" for the quick tests only).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/install.sh
PY=$(cat .mmal-python)
"$PY" -m ruff check .
"$PY" -m pytest "$@"
