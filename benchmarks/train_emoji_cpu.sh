#!/usr/bin/env bash
# CPU training of the OFFLINE DEFAULT model (pretrained SmolLM2-135M + frozen EfficientNet-Lite0 tokens,
# `smollm2-effnet`) on the embedded emoji benchmark, structured ids over the SmolLM2 tokenizer.
# Prints the identifier-token loss per step and seconds/step (RUN/ckpt/metrics.json).
# Usage: benchmarks/train_emoji_cpu.sh [RUN=runs/emoji-smollm2] [STEPS=30] [NPROC=1]
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
RUN=${RUN:-runs/emoji-smollm2}; STEPS=${STEPS:-30}; NPROC=${NPROC:-1}
[ -f "$RUN/data/dataset.json" ] || grace data build emoji --out "$RUN/data"
[ -f "$RUN/features/efficientnet-lite0/meta.json" ] && [ -f "$RUN/features/efficientnet-lite0/tokens.npy" ] || \
  grace data features --dataset "$RUN/data/dataset.json" --out "$RUN/features/efficientnet-lite0" --tokens
[ -f "$RUN/ids/structured/ids.json" ] || grace ids build --dataset "$RUN/data/dataset.json" --scheme structured \
  --features-cache "$RUN/features/efficientnet-lite0" --tokenizer smollm2 --out "$RUN/ids/structured"
[ -f "$RUN/shards/structured/shards.json" ] || grace shards build --dataset "$RUN/data/dataset.json" \
  --ids "$RUN/ids/structured" --out "$RUN/shards/structured"
cat > "$RUN/train.yaml" <<EOF
shards_dir: $RUN/shards/structured
ids_dir: $RUN/ids/structured
features_cache: $RUN/features/efficientnet-lite0
model: smollm2-effnet
output_dir: $RUN/ckpt
steps: $STEPS
lr: 1.0e-4
warmup_steps: 3
batch_size_i2id: 4
batch_size_t2id: 4
max_length: 48
gradient_checkpointing: true
export: false
resume: false
EOF
rm -rf "$RUN/ckpt"
python -m torch.distributed.run --nproc_per_node "$NPROC" -m grace.cli train --config "$RUN/train.yaml"
python - "$RUN/ckpt/metrics.json" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
losses = m["losses"]
print(json.dumps({k: v for k, v in m.items() if k not in ("losses", "steps")}, indent=1))
print(f"identifier-token loss: first {losses[0]:.3f}, last {losses[-1]:.3f}; "
      f"mean of first 5 {sum(losses[:5]) / 5:.3f} -> last 5 {sum(losses[-5:]) / 5:.3f}")
EOF
