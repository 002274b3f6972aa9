#!/usr/bin/env bash
# Create .venv (if missing) and install actionray with the pinned, tested versions (constraints.txt).
# Usage: bash scripts/setup.sh [--test]   (--test also installs the test tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
# torch first and alone: the plain pin takes the local CPU wheel here and the CUDA build on a GPU machine,
# and no other requirement can then pull a different torch.
python -m pip install -q "torch==2.13.0"
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
# decord2 installs the same `decord` module as the old `decord` 0.6.0 wheel; with both installed the module's
# files belong to two distributions and whichever came last wins, so the old one goes first, and decord2 with it
# (removing the old one deletes files the two share; the install below then puts decord2 back whole). actionray
# refuses to decode otherwise: actionray/platform/data/decode.py, check_decord_distribution.
if python -m pip show -q decord 2>/dev/null; then python -m pip uninstall -y -q decord decord2; fi
python -m pip install -q -c constraints.txt -e ".${extras}"
python -c "import actionray.platform.data.decode, torch, ray, mlflow, decord; import actionray; print('installed actionray', actionray.__version__, '| torch', torch.__version__, '| ray', ray.__version__, '| mlflow', mlflow.__version__)"
