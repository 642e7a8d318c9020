#!/usr/bin/env bash
# Active-learning experiment under Slurm (as mmdet's slurm_train.sh):
#   bash tools/slurm_al_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [al_train.py args ...]
# AL_TOOL=tools/al_compare.py runs a comparison the same way.
set -x
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
WORK_DIR=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
SRUN_ARGS=${SRUN_ARGS:-""}
TOOL=${AL_TOOL:-tools/al_train.py}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
srun -p "${PARTITION}" \
    --job-name="${JOB_NAME}" \
    --gres=gpu:"${GPUS_PER_NODE}" \
    --ntasks="${GPUS}" \
    --ntasks-per-node="${GPUS_PER_NODE}" \
    --cpus-per-task="${CPUS_PER_TASK}" \
    --kill-on-bad-exit=1 \
    ${SRUN_ARGS} \
    python -u "$TOOL" "${CONFIG}" --work-dir="${WORK_DIR}" --launcher=slurm "${@:5}"
