#!/usr/bin/env bash
# The main job: set up .venv, then run the whole pipeline on the embedded emoji benchmark.
# Extra arguments go to `grace demo` (default: --quick, which finishes in <=15 minutes on 2 CPU cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ $# -eq 0 ]; then set -- --quick; fi
exec grace demo "$@"
