#!/usr/bin/env bash
# Evaluate retrievers under torchrun: queries are sharded across processes (gloo on CPU, nccl on GPU).
# Usage: NPROC=2 scripts/eval_torchrun.sh --dataset RUN/data/dataset.json \
#          --retriever generative:RUN/ckpt/structured/export --retriever clip_faiss:RUN/index/clip --out RUN/results
# Multi-node: set NNODES, NODE_RANK, MASTER_ADDR, MASTER_PORT as for any torchrun job.
set -euo pipefail
cd "$(dirname "$0")/.."
. "${VENV:-.venv}/bin/activate"
export HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" TRANSFORMERS_OFFLINE="${TRANSFORMERS_OFFLINE:-1}" TOKENIZERS_PARALLELISM=false
exec python -m torch.distributed.run --nproc_per_node "${NPROC:-2}" --nnodes "${NNODES:-1}" \
  --node_rank "${NODE_RANK:-0}" --master_addr "${MASTER_ADDR:-127.0.0.1}" --master_port "${MASTER_PORT:-29512}" \
  -m grace.cli eval "$@"
