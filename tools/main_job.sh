#!/usr/bin/env bash
# The main job: set up if needed, generate the default VOC-format data if
# absent, and run a short Learning Loss experiment with the small SSD config.
# Extra arguments go to tools/al_train.py (e.g. --cfg-options ...).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash tools/install.sh
PY=$(cat .mmal-python)
"$PY" tools/generate_data.py voc data/synthetic_voc/VOCdevkit
"$PY" tools/al_train.py configs/active_learning/ll_ssd-tiny_synthetic-voc.py \
  --work-dir work_dirs/main_job --resume "$@"
