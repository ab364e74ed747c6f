#!/usr/bin/env bash
# Submit every cell of a bench config as one SLURM array (experiments/cluster/slurm_array.sbatch):
#   bash experiments/cluster/submit_array.sh CONFIG [SBATCH OPTIONS...] [-- BENCH OVERRIDES...]
# It counts the cells (`agebench bench --list`, with the same overrides), makes the log folder, and prints the job
# id. RESULTS (default results/paper) is where the cells go; LOGS (default logs) where the task logs go.
set -euo pipefail
CONFIG=${1:?usage: submit_array.sh CONFIG [sbatch options] [-- bench overrides]}
shift
SBATCH_ARGS=()
while (($#)) && [[ $1 != -- ]]; do
  SBATCH_ARGS+=("$1")
  shift
done
(($#)) && shift # the --
LOGS=${LOGS:-logs}
export RESULTS=${RESULTS:-results/paper}
N=$(agebench bench --config "$CONFIG" --out "$RESULTS" --list "$@" | wc -l)
((N > 0)) || { echo "submit_array: $CONFIG has no cells" >&2; exit 1; }
mkdir -p "$LOGS"
sbatch --parsable --array="0-$((N - 1))" --output="$LOGS/%x-%A_%a.out" "${SBATCH_ARGS[@]}" \
  "$(dirname "$0")/slurm_array.sbatch" "$CONFIG" "$@"
