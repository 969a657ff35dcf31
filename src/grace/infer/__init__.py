"""Inference: trie-constrained beam search, the generative retriever, the evaluation harness, ablation,
the demo and decoding benchmarks.

Public API (imported lazily so ``grace --help`` stays fast):
- ``TrieLogitsProcessor`` (vectorised, CSR) and ``PrefixAllowedReference`` (GENRE-style reference);
- ``beam_search(adapter, input_ids, attention_mask, *, num_beams, max_new_tokens, eos_token_id,
  constraint=None, length_penalty=1.0)`` with ``CausalLMAdapter`` for any HF causal LM / FlamingoModel;
- ``GenerativeRetriever`` (a :class:`grace.retriever.Retriever`);
- ``evaluate(retriever, queries, gold, ks=(1, 5, 10))`` and ``recall_at_k``;
- ``run_eval`` / ``run_ablation`` / ``run_demo`` / ``run_bench`` behind ``grace eval|ablate|demo|bench decode``.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "TrieLogitsProcessor": "grace.infer.constraint",
    "PrefixAllowedReference": "grace.infer.constraint",
    "beam_search": "grace.infer.beam_search",
    "BeamOutput": "grace.infer.beam_search",
    "CausalLMAdapter": "grace.infer.beam_search",
    "GenerativeRetriever": "grace.infer.retriever",
    "evaluate": "grace.infer.evaluate",
    "recall_at_k": "grace.infer.evaluate",
    "run_eval": "grace.infer.eval_run",
    "run_ablation": "grace.infer.ablate",
    "run_demo": "grace.infer.demo",
    "run_bench": "grace.infer.bench",
}

__all__ = [
    "BeamOutput", "CausalLMAdapter", "GenerativeRetriever", "PrefixAllowedReference", "TrieLogitsProcessor",
    "beam_search", "evaluate", "recall_at_k", "run_ablation", "run_bench", "run_demo", "run_eval",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'grace.infer' has no attribute {name!r}")
