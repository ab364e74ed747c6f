#!/usr/bin/env bash
# One benchmark cell with torchrun: torchrun starts every rank, each runs the same cell in-process; rank 0 evaluates
# on the whole test split and writes the results. `agebench bench --config X --list` shows the cell indices.
# One node (torchrun --standalone):
#   bash experiments/cluster/torchrun.sh experiments/paper/morph2.yaml 0 4
# Several nodes: the same command on every host, with NNODES, NODE_RANK and a c10d rendezvous endpoint (host:port
# of one of them, reachable from all) in the environment; the results folder must be the same shared path:
#   host-a$ NNODES=2 NODE_RANK=0 RDZV_ENDPOINT=host-a:29400 bash experiments/cluster/torchrun.sh CONFIG 0 4
#   host-b$ NNODES=2 NODE_RANK=1 RDZV_ENDPOINT=host-a:29400 bash experiments/cluster/torchrun.sh CONFIG 0 4
# Tested on CPU (gloo): one host, and two "nodes" of one process each on localhost (tests/test_cluster.py).
set -euo pipefail
CONFIG=${1:?bench config}
CELL=${2:?cell index or dataset/model/seedK}
NPROC=${3:-4}
shift 3 || true
NNODES=${NNODES:-1}
if ((NNODES == 1)) && [[ -z ${RDZV_ENDPOINT:-} ]]; then
  LAUNCH=(--standalone)
else
  LAUNCH=(--nnodes "$NNODES" --node-rank "${NODE_RANK:?NODE_RANK for a multi-node launch}"
    --rdzv-backend c10d --rdzv-endpoint "${RDZV_ENDPOINT:?RDZV_ENDPOINT=host:port for a multi-node launch}"
    --rdzv-id "${RDZV_ID:-agebench}")
fi
torchrun "${LAUNCH[@]}" --nproc-per-node "$NPROC" -m agebench bench --config "$CONFIG" --out "${RESULTS:-results}" \
  --cell "$CELL" trainer.devices="$NPROC" trainer.num_nodes="$NNODES" trainer.strategy=ddp "$@"
