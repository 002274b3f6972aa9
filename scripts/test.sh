#!/usr/bin/env bash
# README command 2: install everything plus the test tools, then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh --test
. .venv/bin/activate
# Tests start (and stop) their own local Ray instances; never attach to a cluster address lying around.
unset RAY_ADDRESS RAY_API_SERVER_ADDRESS
# Lint first (pyproject.toml [tool.ruff]): seconds, and a finding fails CI before the 30-minute suite starts.
ruff check actionray tests benchmarks scripts
set +e
python -m pytest -q -p no:cacheprovider --timeout=900 --durations=30 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi
exit "$rc"
