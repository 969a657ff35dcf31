#!/usr/bin/env bash
# GPU decoding benchmark (issue #12, P6): `grace bench decode` on one CUDA GPU over a grid of beams and
# batch sizes, for SmolLM2-135M (bare LM, offline weights) and the SmolLM2 Flamingo (smollm2-effnet; random
# new weights), fp32 reference loop vs the new loop (static beam cache, fixed step count on a GPU) in fp32, on
# a DynamicCache, in bf16, and in bf16 with its step compiled (COMPILE=0 to skip). One call, from the repository root:
#
#   bash benchmarks/gpu_decode.sh                    # results under runs/bench_decode_gpu/
#   WHEELS=/path/to/wheelhouse bash benchmarks/gpu_decode.sh   # install from local wheels first (no network)
#   DEVICE=cpu LM=tiny-llama MODELS="tiny-llama tiny" BEAMS=4 BATCHES=4 SIZES="1000 3000" \
#     bash benchmarks/gpu_decode.sh                  # smoke test on CPU
#
# Each (beams, batch) point writes OUT/beams<B>-batch<N>/results.{json,md} and latency_vs_corpus.png;
# OUT/summary.md gathers the loop rows (queries/s: reference, new, new bf16). P6 target: >= 1,000 q/s at
# beam 10 with the trie constraint on, for the 135M model.
set -euo pipefail
OUT=${OUT:-runs/bench_decode_gpu}
DEVICE=${DEVICE:-cuda}
BEAMS=${BEAMS:-"10 20"}
BATCHES=${BATCHES:-"64 128 256 512"}
SIZES=${SIZES:-"1000 10000 100000 1000000"}
MODELS=${MODELS:-"smollm2 smollm2-effnet"}  # loop benchmark models
LM=${LM:-smollm2}                             # P1 / P2 model
COMPILE=${COMPILE:-1}                         # also time the compiled step (CUDA graphs)
COMPILE_FLAG=$([[ "$COMPILE" == 1 ]] && echo "--compile" || echo "")
if [[ -n "${WHEELS:-}" ]]; then
  python -m pip install --no-index --find-links "$WHEELS" -e ".[baselines]"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
python - <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
PY
mkdir -p "$OUT"
for beams in $BEAMS; do
  for batch in $BATCHES; do
    # shellcheck disable=SC2086
    python -m grace.cli bench decode --model "$LM" --device "$DEVICE" --num-beams "$beams" --batch-size "$batch" \
      --loop-batch "$batch" --loop-models $MODELS --sizes $SIZES --p2-queries "$batch" \
      $COMPILE_FLAG --out "$OUT/beams$beams-batch$batch" 2>&1 | tail -n 60
  done
done
python - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = ["| model | beams | batch | reference q/s | new q/s | new bf16 q/s | new bf16 compiled q/s | speedup | bf16 speedup | bf16 top-1 = fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|"]
for path in sorted(out.glob("beams*-batch*/results.json")):
    for r in json.loads(path.read_text())["loop"]:
        rows.append(f"| {r['model']} | {r['beams']} | {r['batch']} | {r['reference_qps']:.1f} | {r['new_qps']:.1f} | "
                    f"{r.get('new_bf16_qps', float('nan')):.1f} | {r.get('new_compiled_qps', float('nan')):.1f} | {r['speedup']:.2f} | {r.get('bf16_speedup', float('nan')):.2f} | "
                    f"{r.get('bf16_top1_equal', float('nan')):.3f} |")
(out / "summary.md").write_text("\n".join(rows) + "\n")
print("\n".join(rows))
PY
