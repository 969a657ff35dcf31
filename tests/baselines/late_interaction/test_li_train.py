"""Every fusion style learns (image + generic question) → passage: the loss falls; text-only cannot."""

from __future__ import annotations

import numpy as np
import pytest
from li_helpers import tiny_model

from grace.retrieval_baselines.late_interaction.collection import CachedTextDocs
from grace.retrieval_baselines.late_interaction.train import fit

PASSAGES = [f"passage {w}" for w in ("apple", "hammer", "violin", "rocket", "tiger", "castle",
                                     "bridge", "candle", "anchor", "kettle", "pepper", "tulip")]


def _train(fusion, visual, steps=40):
    model = tiny_model(fusion, query_maxlen=8)
    docs = CachedTextDocs.build(model, PASSAGES)
    history = fit(model, query_texts=["what is this?"] * 12, query_visual=visual, positives=list(range(12)),
                  docs=docs, steps=steps, batch_size=12, lr=1e-2, hard_negatives=1, seed=0)
    return history


@pytest.mark.parametrize("fusion", ["flmr", "retxknow", "mire"])
def test_fusion_loss_falls(fusion, visual_bank):
    history = _train(fusion, visual_bank)
    assert np.mean(history[-5:]) < 0.5 * np.mean(history[:3]), history


def test_text_only_cannot_use_the_image(visual_bank):
    history = _train("none", visual_bank, steps=15)
    assert np.mean(history[-5:]) > 0.8 * np.log(12)  # identical questions: chance level
