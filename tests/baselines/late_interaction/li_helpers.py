"""Helpers of the late-interaction tests (imported as ``li_helpers``)."""

from __future__ import annotations


def tiny_model(fusion: str = "none", **kw):
    """A late-interaction model over a small random BERT (fast on CPU); 64-d visual tokens."""
    from grace.retrieval_baselines.late_interaction.configs import ModelConfig
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

    values = {"text_encoder": "random:32", "fusion": fusion, "dim": 32, "visual_dim": 64, "query_maxlen": 16,
              "doc_maxlen": 48, "mapping_tokens": 4, "compressed_tokens": 4, "heads": 2}
    values.update(kw)
    return LateInteractionModel(config=ModelConfig(**values))
