#!/usr/bin/env bash
# Distributed active-learning experiment on one or more nodes (as mmdet's dist_train.sh):
#   bash tools/dist_al_train.sh CONFIG GPUS [al_train.py args ...]
# AL_TOOL=tools/al_compare.py runs a comparison the same way.
CONFIG=$1
GPUS=$2
NNODES=${NNODES:-1}
NODE_RANK=${NODE_RANK:-0}
PORT=${PORT:-29500}
MASTER_ADDR=${MASTER_ADDR:-"127.0.0.1"}
TOOL=${AL_TOOL:-$(dirname "$0")/al_train.py}

PYTHONPATH="$(dirname "$0")/..":$PYTHONPATH \
python -m torch.distributed.run \
    --nnodes="$NNODES" \
    --node_rank="$NODE_RANK" \
    --master_addr="$MASTER_ADDR" \
    --nproc_per_node="$GPUS" \
    --master_port="$PORT" \
    "$TOOL" "$CONFIG" --launcher pytorch "${@:3}"
