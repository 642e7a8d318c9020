#!/usr/bin/env bash
# Does selection still pay when the unlabeled pool trains the model too? Four arms on
# the generated VOC data, by default the small Faster R-CNN on one iteration schedule:
#   random, Learning Loss             SUPERVISED=configs/active_learning/ll_faster-rcnn-tiny_iter600_synthetic-voc.py
#   random_semi, ll_semi (SoftTeacher) SEMI=configs/active_learning/ll_soft-teacher_faster-rcnn-tiny_synthetic-voc.py
# or the main job's small SSD and its mean teacher (epochs become iterations):
#   SUPERVISED=configs/active_learning/ll_ssd-tiny_synthetic-voc.py
#   SEMI=configs/active_learning/ll_mean-teacher_ssd-tiny_synthetic-voc.py
# The two comparisons run at once (each with the given --jobs), then one report of
# all four arms against random: OUT/compare.{csv,json,md,png}.
#
#   [SUPERVISED=.. SEMI=..] bash bench/semi_supervised_arms.sh OUT [al_compare options, e.g. --seeds 0 1 2 --jobs 3]
#
# Cost with one thread on a 2-core CPU: a SoftTeacher iteration 4.2 s (600 a cycle: about
# 40 min), a mean-teacher SSD run about 35 min (2,560 iterations of 0.7 s); a GPU runs
# the twelve runs of three seeds in parallel.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${1:?usage: bash bench/semi_supervised_arms.sh OUT [al_compare options]}
shift
SUPERVISED=${SUPERVISED:-configs/active_learning/ll_faster-rcnn-tiny_iter600_synthetic-voc.py}
SEMI=${SEMI:-configs/active_learning/ll_soft-teacher_faster-rcnn-tiny_synthetic-voc.py}
bash tools/install.sh
PY=$(cat .mmal-python)
source bench/lib/two_comparisons.sh
share_threads "$@"
"$PY" tools/generate_data.py voc data/synthetic_voc/VOCdevkit
"$PY" tools/al_compare.py "$SUPERVISED" \
    --strategies RandomStrategy LearningLossStrategy --work-dir "$OUT/supervised" "$@" &
supervised=$!
"$PY" tools/al_compare.py "$SEMI" \
    --strategies random_semi=RandomStrategy ll_semi=LearningLossStrategy \
    --work-dir "$OUT/semi" "$@" &
semi=$!
wait_both semi_supervised_arms $supervised $semi
"$PY" tools/al_compare.py --plot-only --work-dir "$OUT" --merge "$OUT/supervised" "$OUT/semi"
