#!/usr/bin/env bash
# Run a Ray Tune sweep of a search space on the cluster as a Ray job (one MLflow parent run, a child per trial).
#
# Usage: scripts/submit_sweep.sh CONFIG SPACE [--num-samples N] [--scheduler asha|none] [--max-concurrent K]
#                                [--resume] [--name NAME] [--set KEY=VALUE ...]
#   e.g. scripts/submit_sweep.sh configs/gcnet_ucf101_8f.yaml gcnet_default --num-samples 16
# SPACE: a name from `actionray tune --list-spaces` or a YAML file inside the repository.
source "$(dirname "$0")/_common.sh"
[ $# -ge 2 ] || usage 1
config=$1 space=$2; shift 2
submit_job sweep tune "$config" --space "$space" "$@"
