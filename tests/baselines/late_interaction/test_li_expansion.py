"""Document expansion: an image document carries its texts' tokens too, so a query that matches only the
texts finds the image; an image without texts keeps its own tokens only."""

from __future__ import annotations

import torch
from li_helpers import tiny_model


def test_expanded_image_docs_add_the_text_tokens(visual_bank):
    from grace.retrieval_baselines.late_interaction.collection import ExpandedImageDocs, ImageDocs
    from grace.retrieval_baselines.late_interaction.maxsim import maxsim

    model = tiny_model("flmr").eval()
    texts = ["zebra crossing ; striped road", "", "yellow banana"]
    with torch.no_grad():
        plain, plain_mask = ImageDocs(visual_bank[:3]).encode(model, [0, 1, 2])
        expanded, mask = ExpandedImageDocs(visual_bank[:3], texts).encode(model, [0, 1, 2])
        _, text_mask = model.encode_docs(texts)
    width = plain.shape[1]
    assert torch.equal(expanded[:, :width], plain) and torch.equal(mask[:, :width], plain_mask)
    assert mask[0, width:].sum() == text_mask[0].sum() > 0  # the texts' document tokens follow the image's
    assert not mask[1, width:].any()  # no text: the image's own tokens only
    with torch.no_grad():
        q, q_mask = model.encode_queries(["zebra crossing striped road"])
        scores_plain = maxsim(q, plain, plain_mask, q_mask)
        scores = maxsim(q, expanded, mask, q_mask)
    assert torch.equal(scores[0, 1], scores_plain[0, 1])  # unchanged without text
    assert scores[0, 0] > scores_plain[0, 0]  # the matching texts raise the image's score
