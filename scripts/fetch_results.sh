#!/usr/bin/env bash
# Fetch what a cluster job produced: its status and driver log, and (optionally) a sweep/ablation table
# re-rendered from MLflow and a run's artifacts.
#
# Usage: scripts/fetch_results.sh [JOB_ID] [--sweep NAME_OR_RUN_ID | --ablation NAME_OR_RUN_ID]
#                                 [--run RUN_ID] [--out DIR]
#   JOB_ID defaults to the last job submitted from this checkout (runs/last_job_id); DIR defaults to runs/results/JOB_ID.
#   MLflow is read at MLFLOW_TRACKING_URI (default http://127.0.0.1:5000: forward it with
#   `ray attach cluster.yaml --port-forward 5000` in another terminal).
source "$(dirname "$0")/_common.sh"
job="" kind="" target="" run="" out=""
while [ $# -gt 0 ]; do
  case $1 in
    -h|--help) usage 0 ;;
    --sweep|--ablation) kind=${1#--}; target=$2; shift 2 ;;
    --run) run=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; usage 1 ;;
    *) job=$1; shift ;;
  esac
done
if [ -z "$job" ] && [ -f "$LAST_JOB_FILE" ]; then job=$(cat "$LAST_JOB_FILE"); fi
[ -n "$job" ] || { echo "no JOB_ID given and no $LAST_JOB_FILE" >&2; usage 1; }
out=${out:-runs/results/$job}
export MLFLOW_TRACKING_URI=${MLFLOW_TRACKING_URI:-http://127.0.0.1:5000}
run_or_echo() { if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "$@"; echo; else "$@"; fi; }
mkdir -p "$out"
run_or_echo ray job status --address "$RAY_ADDRESS" "$job" || true
if [ "${DRY_RUN:-0}" = 1 ]; then
  run_or_echo ray job logs --address "$RAY_ADDRESS" "$job"
else
  ray job logs --address "$RAY_ADDRESS" "$job" > "$out/driver.log" && echo "driver log: $out/driver.log"
fi
if [ -n "$kind" ]; then
  run_or_echo python -m actionray report "--$kind" "$target" --tracking-uri "$MLFLOW_TRACKING_URI" --html "$out/$kind.html"
  run_or_echo python -m actionray report "--$kind" "$target" --tracking-uri "$MLFLOW_TRACKING_URI"
fi
if [ -n "$run" ]; then
  run_or_echo mlflow artifacts download --run-id "$run" --dst-path "$out/artifacts"
fi
