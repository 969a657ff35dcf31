#!/usr/bin/env bash
# The test command: sets up .venv (idempotent) and runs pytest. `scripts/test.sh --slow` runs slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ "${1:-}" = "--slow" ]; then
  shift
  exec python -m pytest -m slow -q "$@"
fi
exec python -m pytest -q --durations=20 "$@"  # the slowest tests, to keep this run under 10 minutes
