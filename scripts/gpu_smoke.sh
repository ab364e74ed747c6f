#!/usr/bin/env bash
# GPU smoke check, for a node before a long job is queued on it (a few minutes on one GPU):
#   1. profile the three paper models at 224 px, fp32 and bf16-mixed + channels_last (batch-1 latency,
#      batch-256 throughput), as JSON files;
#   2. run experiments/paper/synth_gpu.yaml (full-size models, 2 epochs, bf16-mixed) on the synthetic set;
#   3. write the leaderboard in every format.
# Usage: scripts/gpu_smoke.sh [RESULTS]   (default results/gpu_smoke; AGEBENCH="python -m agebench" works too)
set -euo pipefail
out=${1:-results/gpu_smoke}
ab=${AGEBENCH:-agebench}
mkdir -p "$out"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.csv"
[ -f data/synth/manifest.csv ] || $ab synth --out data/synth --n 5000 --seed 0
for model in hybrid convnext vit; do
  $ab profile --model "$model" --img-size 224 --batch-size 256 --device cuda --precision 32-true --json \
    > "$out/profile_${model}_fp32.json"
  $ab profile --model "$model" --img-size 224 --batch-size 256 --device cuda --precision bf16-mixed \
    --channels-last --json > "$out/profile_${model}_bf16.json"
  echo "profiled $model"
done
$ab bench --config experiments/paper/synth_gpu.yaml --out "$out"
$ab leaderboard "$out" --format all --out "$out"
