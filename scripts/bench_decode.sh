#!/usr/bin/env bash
# Decoding benchmarks: P1 (constrained vs unconstrained beam search; vectorised vs GENRE reference processor),
# the decode loop vs the reference loop, and P2 (latency vs 1K..1M ids, beside CLIP-FAISS). Extra arguments go to benchmarks/bench_decode.py (e.g. --device cuda).
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec python benchmarks/bench_decode.py --out "${OUT:-runs/bench_decode}" "$@"
