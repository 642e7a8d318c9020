#!/usr/bin/env bash
# Paying per second: which way of asking saves annotator time? On one config, every
# budget in annotator seconds (active_learning.cost='seconds'):
#   image-level  RandomStrategy and $BEST (whole images labeled)
#   box-level    box_ll (Learning Loss), box_entropy (entropy): the selected images'
#                most uncertain regions asked, confident detections pseudo-labeled
#   image-level  ppal (PPALStrategy)
# The two comparisons run at once (each with the given --jobs), then one report of all
# five against random, in seconds (OUT/compare.*) and in boxes (OUT/in_boxes/compare.*).
#
#   bash bench/cost_arms.sh CONFIG OUT BUDGET_SECONDS [al_compare options, e.g. --seeds 0 1 2 --jobs 3]
#
# BUDGET_SECONDS: each cycle's budget, e.g. what 100 random images cost (the main job's
# config: 1750; NEU-DET, 2.3 boxes an image: 1700). Environment: BEST (the image-level
# strategy to beat, default LearningLossDiversityStrategy), ASKED (regions asked per
# image, default 3), CFG_OPTIONS (more --cfg-options for every run, space-separated).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
usage='usage: bash bench/cost_arms.sh CONFIG OUT BUDGET_SECONDS [al_compare options]'
CONFIG=${1:?$usage}
OUT=${2:?$usage}
BUDGET=${3:?$usage}
shift 3
BEST=${BEST:-LearningLossDiversityStrategy}
ASKED=${ASKED:-3}
bash tools/install.sh
PY=$(cat .mmal-python)
source bench/lib/two_comparisons.sh
share_threads "$@"
read -r -a extra <<< "${CFG_OPTIONS:-}"
seconds=(active_learning.cost=seconds "active_learning.budget_per_cycle=$BUDGET" "${extra[@]}")
"$PY" tools/al_compare.py "$CONFIG" --strategies RandomStrategy "$BEST" ppal=PPALStrategy \
    --work-dir "$OUT/image" "$@" --cfg-options "${seconds[@]}" &
image=$!
"$PY" tools/al_compare.py "$CONFIG" \
    --strategies box_ll=LearningLossStrategy box_entropy=EntropyStrategy \
    --work-dir "$OUT/box" "$@" --cfg-options "${seconds[@]}" \
    "active_learning.box_level.max_asked_per_image=$ASKED" &
box=$!
wait_both cost_arms $image $box
"$PY" tools/al_compare.py --plot-only --work-dir "$OUT" --merge "$OUT/image" "$OUT/box" \
    --cost seconds
"$PY" tools/al_compare.py --plot-only --work-dir "$OUT/in_boxes" \
    --merge "$OUT/image" "$OUT/box" --cost boxes
