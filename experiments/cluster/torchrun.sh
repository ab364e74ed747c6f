#!/usr/bin/env bash
# One benchmark cell on one node with torchrun: torchrun starts every rank, each runs the same cell in-process,
# rank 0 evaluates on the whole test split and writes the results. `--list` shows the cell indices.
#   bash experiments/cluster/torchrun.sh experiments/paper/morph2.yaml 0 4
# Tested on CPU (gloo) with: bash experiments/cluster/torchrun.sh experiments/bench.yaml 0 2 trainer.accelerator=cpu
set -euo pipefail
CONFIG=${1:?bench config}
CELL=${2:?cell index or dataset/model/seedK}
NPROC=${3:-4}
shift 3 || true
torchrun --standalone --nproc-per-node "$NPROC" -m agebench bench --config "$CONFIG" --out "${RESULTS:-results}" \
  --cell "$CELL" trainer.devices="$NPROC" trainer.strategy=ddp "$@"
