#!/usr/bin/env bash
# Train one config on the Ray cluster as a Ray job (logs stream until it ends; Ctrl-C leaves it running).
#
# Usage: scripts/submit_train.sh CONFIG [--set KEY=VALUE ...] [--resume]
#   e.g. scripts/submit_train.sh configs/gcnet_ucf101_8f.yaml --set scaling.num_workers=4 --set scaling.use_gpu=true
# Needs: `ray dashboard cluster.yaml` running (or RAY_ADDRESS); see scripts/_common.sh for the environment.
source "$(dirname "$0")/_common.sh"
[ $# -ge 1 ] && [ "$1" != "-h" ] && [ "$1" != "--help" ] || usage 1
submit_job train train "$@"
