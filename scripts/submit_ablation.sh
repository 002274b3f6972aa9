#!/usr/bin/env bash
# Run an ablation grid (cells x seeds, in parallel over the cluster) as a Ray job; the table lands in MLflow.
#
# Usage: scripts/submit_ablation.sh CONFIG (--preset NAME | --grid KEY=V1,V2 ...) [--seeds N]
#                                   [--max-concurrent K] [--resume] [--name NAME] [--set KEY=VALUE ...]
#   e.g. scripts/submit_ablation.sh configs/gcnet_hmdb51_8f.yaml --preset gcnet_ablation --seeds 3
source "$(dirname "$0")/_common.sh"
[ $# -ge 2 ] || usage 1
submit_job ablation ablate "$@"
