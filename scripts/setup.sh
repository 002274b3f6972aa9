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
python -m pip install -q -c constraints.txt -e ".${extras}"
python -c "import actionray, torch, ray, mlflow, decord; print('installed actionray', actionray.__version__, '| torch', torch.__version__, '| ray', ray.__version__, '| mlflow', mlflow.__version__)"
