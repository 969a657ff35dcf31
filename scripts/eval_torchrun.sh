#!/usr/bin/env bash
# Evaluate retrievers under torchrun: queries are sharded across processes (gloo on CPU, nccl on GPU).
# Usage: NPROC=2 scripts/eval_torchrun.sh --dataset RUN/data/dataset.json \
#          --retriever generative:RUN/ckpt/structured/export --retriever clip_faiss:RUN/index/clip --out RUN/results
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT as for any torchrun job.
# Environment: grace-infer (envs/infer.yml), or the active venv / .venv (faiss for the dense indexes, peft for
# models trained with LoRA).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/stage_env.sh
use_env grace-infer grace faiss peft
exec python -m torch.distributed.run --nproc_per_node "${NPROC:-2}" --nnodes "${NNODES:-1}" \
  --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29512}" \
  -m grace.cli eval "$@"
