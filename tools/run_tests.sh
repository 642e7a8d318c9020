#!/usr/bin/env bash
# Set up if needed, lint, and run the test suite. Extra arguments go to
# pytest (e.g. -m "not slow" for the quick tests only).
#
# Label Studio, for the test against the real tool, is installed into its
# own environment outside the repo (tools/install_label_studio.sh; about a
# minute and 1 GB the first time, cached after). Where it cannot be
# installed, that test is skipped and says why; MMAL_SKIP_LABEL_STUDIO=1
# does not try.
#
# The tests run in parallel, one pytest-xdist worker per core, each with one
# thread (tests/conftest.py); MMAL_TEST_WORKERS=N sets the count (0: one
# process, as plain pytest).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/install.sh
PY=$(cat .mmal-python)
"$PY" -m ruff check .
if [ "${MMAL_SKIP_LABEL_STUDIO:-0}" != 1 ]; then
    bash tools/install_label_studio.sh >/dev/null \
        || echo "run_tests: Label Studio could not be installed; its live test will be skipped" >&2
fi
"$PY" -m pytest -n "${MMAL_TEST_WORKERS:-auto}" --dist worksteal "$@"
