"""Inference: trie-constrained beam search, the generative retriever, evaluation metrics, search and serve.

It imports neither training nor the baselines; the run orchestration (``grace eval / ablate / demo``, which
loads any retriever kind) is ``grace.experiments``, one floor up.

Public API (imported lazily so ``grace --help`` stays fast):
- ``TrieLogitsProcessor`` (vectorised, CSR) and ``PrefixAllowedReference`` (GENRE-style reference), both
  :class:`~grace.infer.constraint.Constraint`;
- ``beam_search(adapter, input_ids, attention_mask, *, num_beams, max_new_tokens, eos_token_id,
  constraint=None, length_penalty=1.0)`` with ``CausalLMAdapter`` for any HF causal LM / FlamingoModel;
- ``GenerativeRetriever`` (a :class:`grace.retriever.Retriever`);
- ``evaluate(retriever, queries, gold, ks=(1, 5, 10))`` and ``recall_at_k``;
- ``SearchService`` (``grace search``) and ``create_app`` / ``serve`` (``grace serve``, in ``grace.infer.server``).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Constraint": "grace.infer.constraint",
    "TrieLogitsProcessor": "grace.infer.constraint",
    "PrefixAllowedReference": "grace.infer.constraint",
    "beam_search": "grace.infer.beam_search",
    "BeamOutput": "grace.infer.beam_search",
    "CausalLMAdapter": "grace.infer.beam_search",
    "GenerativeRetriever": "grace.infer.retriever",
    "evaluate": "grace.infer.evaluate",
    "recall_at_k": "grace.infer.evaluate",
    "SearchService": "grace.infer.search",
}

__all__ = [
    "BeamOutput", "CausalLMAdapter", "Constraint", "GenerativeRetriever", "PrefixAllowedReference", "SearchService",
    "TrieLogitsProcessor", "beam_search", "evaluate", "recall_at_k",
]


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'grace.infer' has no attribute {name!r}")
