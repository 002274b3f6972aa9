#!/usr/bin/env bash
# README command 1: install everything, then run the main job on the embedded defaults
# (local Ray, MLflow in ./mlflow.db, generated demo videos in ./demo_data).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
. .venv/bin/activate
actionray demo "$@"
