#!/usr/bin/env bash
# Install Label Studio into its own virtualenv, outside the repo, for the tests
# that run a real server (tests/labelstudio_server.py). It pins Django and many
# other packages, so it never shares MMAL's environment.
#
#   bash tools/install_label_studio.sh      # create or reuse; prints the venv path
#
# Environment variables:
#   MMAL_LABEL_STUDIO         the venv folder (default: ~/.cache/mmal/labelstudio-venv);
#                             the tests read the same variable
#   MMAL_LABEL_STUDIO_SPEC    what to install (default: label-studio==1.23.2, the
#                             version tests/data/labelstudio_export*_sample.json
#                             were recorded with)
#   MMAL_LABEL_STUDIO_PYTHON  interpreter to create the venv with (default: the
#                             first python3.1x >= 3.10 on PATH)
#
# A finished install leaves a stamp naming the spec; a second run with the same
# spec only re-checks the command. It also migrates the database copy that
# test servers start from (~20 s once, then each server starts in ~3 s).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${MMAL_LABEL_STUDIO:-${XDG_CACHE_HOME:-$HOME/.cache}/mmal/labelstudio-venv}
SPEC=${MMAL_LABEL_STUDIO_SPEC:-label-studio==1.23.2}
STAMP="$VENV/.mmal-installed"
# Label Studio asks for sentry-sdk>=2.16 with no upper bound, and its settings
# pass an option (send_default_pii) that sentry-sdk 3.0 rejects: with 3.x no
# label-studio command starts ("TypeError: Unknown option").
PINS="sentry-sdk<3"

die() { printf 'install_label_studio: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'install_label_studio: %s\n' "$*" >&2; }

find_python() {
  if [ -n "${MMAL_LABEL_STUDIO_PYTHON:-}" ]; then
    echo "$MMAL_LABEL_STUDIO_PYTHON"; return
  fi
  local candidate
  for candidate in python3.12 python3.11 python3.10 python3.13 python3; do
    if command -v "$candidate" >/dev/null 2>&1 &&
       "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
      command -v "$candidate"; return
    fi
  done
  die "no Python >= 3.10 on PATH (Label Studio needs one); set MMAL_LABEL_STUDIO_PYTHON"
}

works() { "$VENV/bin/label-studio" --help >/dev/null 2>&1; }

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$SPEC $PINS" ] && works; then
  log "reusing $VENV ($SPEC)"
else
  created=""
  if [ ! -x "$VENV/bin/python" ]; then
    PY=$(find_python)
    log "creating $VENV with $PY"
    mkdir -p "$(dirname "$VENV")"
    "$PY" -m venv "$VENV" || die "could not create a venv at $VENV with $PY"
    created=1
  fi
  log "installing $SPEC (about 1 GB, a minute or two)"
  rm -f "$STAMP"
  if ! "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$SPEC" $PINS >&2; then
    [ -n "$created" ] && rm -rf "$VENV"
    die "pip could not install $SPEC into $VENV (see pip's message above);" \
      "try another version with MMAL_LABEL_STUDIO_SPEC=label-studio==<version>"
  fi
  works || die "$VENV/bin/label-studio does not run after installing $SPEC"
  # The database copy belongs to the version it was migrated with.
  rm -rf "$VENV/mmal-database"
  echo "$SPEC $PINS" > "$STAMP"
fi

"$VENV/bin/python" "$REPO/tests/labelstudio_server.py" prepare >&2 ||
  die "label-studio could not migrate its database (see above)"
echo "$VENV"
