#!/usr/bin/env bash
# Identifier-scheme ablation: for each scheme ids -> shards -> trie -> train -> eval, one table
# (RUN/results/ablation.{md,png,json}). Re-running reuses every artefact already built under RUN.
# Usage: scripts/ablate_identifiers.sh [--run runs/emoji] [--schemes numeric structured ...] [--steps N] [--nproc N]
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec grace ablate "$@"
