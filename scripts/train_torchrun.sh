#!/usr/bin/env bash
# Train GRACE with DeepSpeed ZeRO-3 under torchrun (nccl + bf16 on GPUs, gloo + fp32 on CPU).
# Usage (one node, all GPUs):   scripts/train_torchrun.sh --config run.yaml
#       (CPU, 2 processes):     NPROC=2 scripts/train_torchrun.sh --config run.yaml --device cpu
#       (multi-node, per node): NNODES=2 NODE_RANK=0|1 MASTER_ADDR=host0 MASTER_PORT=29500 \
#                               scripts/train_torchrun.sh --config run.yaml
# NPROC defaults to the number of visible GPUs (1 without GPUs). A killed job resumes from
# OUTPUT_DIR/checkpoints/latest when re-run with the same config and the same number of processes.
# Environment: grace-train (envs/train.yml), or the active venv / .venv when it has DeepSpeed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/stage_env.sh
use_env grace-train grace deepspeed
if [[ -z "${NPROC:-}" ]]; then
  NPROC=$(python -c "import torch; print(max(1, torch.cuda.device_count()))")
fi
# CPU runs: one thread per process unless told otherwise (processes share the cores).
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-$(( $(nproc) / NPROC > 0 ? $(nproc) / NPROC : 1 ))}"
exec python -m torch.distributed.run --nproc_per_node "$NPROC" --nnodes "${NNODES:-1}" \
  --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29511}" \
  -m grace.cli train "$@"
