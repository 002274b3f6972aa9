# Shared helpers for scripts/submit_*.sh and scripts/fetch_results.sh (sourced, not run).
#
# Environment (all optional):
#   RAY_ADDRESS           job server; default http://127.0.0.1:8265 (keep `ray dashboard cluster.yaml` running)
#   CLUSTER_YAML          launcher config used to find the head's private IP; default cluster.yaml
#   ACTIONRAY_MLFLOW_URI  MLflow as seen from cluster nodes; default http://<head private IP>:5000
#   ACTIONRAY_STORAGE     shared train.storage_path for multi-node runs (e.g. s3://bucket/actionray/runs)
#   DRY_RUN=1             print the ray command instead of running it
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export RAY_ADDRESS=${RAY_ADDRESS:-http://127.0.0.1:8265}
CLUSTER_YAML=${CLUSTER_YAML:-cluster.yaml}
LAST_JOB_FILE=runs/last_job_id

usage() {  # print the calling script's header comment (lines 2.. up to the first non-comment)
  sed -n '2,/^[^#]/{/^#/s/^# \{0,1\}//p}' "$0"
  exit "${1:-0}"
}

head_private_ip() {
  ray exec "$CLUSTER_YAML" 'hostname -I | cut -d" " -f1' 2>/dev/null | tail -n 1 | tr -d '[:space:]'
}

cluster_mlflow_uri() {
  if [ -n "${ACTIONRAY_MLFLOW_URI:-}" ]; then echo "$ACTIONRAY_MLFLOW_URI"; return; fi
  if [ "${DRY_RUN:-0}" = 1 ]; then echo "http://HEAD_PRIVATE_IP:5000"; return; fi
  local ip; ip=$(head_private_ip)
  [ -n "$ip" ] || { echo "cannot find the head IP with 'ray exec $CLUSTER_YAML'; set ACTIONRAY_MLFLOW_URI" >&2; exit 2; }
  echo "http://$ip:5000"
}

# submit_job NAME_PREFIX ACTIONRAY_ARGS... : ray job submit of `python -m actionray ARGS` with MLflow + storage.
submit_job() {
  local prefix=$1; shift
  local uri id env_json
  uri=$(cluster_mlflow_uri)
  id="${prefix}-$(date -u +%Y%m%d-%H%M%S)"
  env_json=$(printf '{"env_vars": {"MLFLOW_TRACKING_URI": "%s"}, "excludes": ["runs/", "mlruns/", "mlartifacts/", "demo_data/", "*.db", ".venv/"]}' "$uri")
  local args=("$@" --set "tracking.uri=$uri")
  if [ -n "${ACTIONRAY_STORAGE:-}" ]; then args+=(--set "train.storage_path=$ACTIONRAY_STORAGE"); fi
  local cmd=(ray job submit --address "$RAY_ADDRESS" --submission-id "$id" --working-dir .
             --runtime-env-json "$env_json" -- python -m actionray "${args[@]}")
  if [ "${DRY_RUN:-0}" = 1 ]; then printf '%q ' "${cmd[@]}"; echo; return; fi
  mkdir -p "$(dirname "$LAST_JOB_FILE")"
  echo "$id" > "$LAST_JOB_FILE"
  echo "submitting job $id (MLflow $uri); follow with: ray job logs -f $id" >&2
  "${cmd[@]}"
}
