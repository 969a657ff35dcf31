"""ColBERT tokenisation (markers, [MASK] augmentation, punctuation), fusion shapes, save/load, real MiniLM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from li_helpers import tiny_model


def test_query_augmentation_markers_and_doc_punctuation():
    model = tiny_model()
    batch = model.tokenize_queries(["red circle", None])
    ids = batch["input_ids"]
    assert ids.shape == (2, model.config.query_maxlen)
    assert (ids[:, 0] == model.tokenizer.cls_token_id).all() and (ids[:, 1] == model.q_marker).all()
    assert (ids[0, -1] == model.mask_id) and (ids == model.tokenizer.pad_token_id).sum() == 0
    docs = model.tokenize_docs(["a red, round circle."])
    assert docs["input_ids"][0, 1] == model.d_marker
    kept = docs["input_ids"][0][docs["doc_mask"][0]].tolist()
    assert model.tokenizer.convert_tokens_to_ids(",") not in kept and model.tokenizer.convert_tokens_to_ids(".") not in kept
    q, q_mask = model.encode_queries(["red circle"])
    assert q.shape == (1, model.config.query_maxlen, model.config.dim) and bool(q_mask.all())
    assert torch.allclose(q.norm(dim=-1), torch.ones(q.shape[:2]), atol=1e-5)


@pytest.mark.parametrize("fusion,extra", [("flmr", 4 + 9), ("retxknow", 4), ("mire", 0)])
def test_fusion_adds_image_tokens(fusion, extra, visual_bank):
    model = tiny_model(fusion).eval()
    with torch.no_grad():
        text_only, _ = model.encode_queries(["what is this?"] * 2)
        fused, mask = model.encode_queries(["what is this?"] * 2, torch.from_numpy(visual_bank[:2]))
    assert fused.shape[1] == model.config.query_maxlen + extra and mask.shape == fused.shape[:2]
    assert not torch.allclose(fused[0], fused[1])  # the image changes the query
    if fusion == "mire":  # fusion-free: same token count, text tokens updated by cross-attention
        assert not torch.allclose(fused, text_only)
    if fusion == "retxknow":  # the compression depends on the text: relevance-weighted visual tokens
        with torch.no_grad():
            other, _ = model.encode_queries(["a totally different question"] * 2, torch.from_numpy(visual_bank[:2]))
        assert not torch.allclose(fused[:, -4:], other[:, -4:])


def test_image_docs_and_save_load_roundtrip(tmp_path, visual_bank):
    model = tiny_model("flmr")
    d, mask = model.encode_image_docs(torch.from_numpy(visual_bank[:3]))
    assert d.shape == (3, 1 + 9, model.config.dim) and bool(mask.all())
    model.save(tmp_path / "m")
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

    loaded = LateInteractionModel.load(tmp_path / "m")
    with torch.no_grad():
        a, _ = model.eval().encode_queries(["hello"], torch.from_numpy(visual_bank[:1]))
        b, _ = loaded.encode_queries(["hello"], torch.from_numpy(visual_bank[:1]))
    assert torch.allclose(a, b, atol=1e-6)


def test_real_offline_minilm_backbone(tmp_path):
    """The offline default: all-MiniLM-L6-v2 (384-d) + ColBERT head; the frozen backbone is not saved."""
    from safetensors.torch import load_file

    from grace.retrieval_baselines.late_interaction.configs import ModelConfig
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

    model = LateInteractionModel(config=ModelConfig(text_encoder="minilm", fusion="flmr", dim=64)).eval()
    assert model.backbone.config.hidden_size == 384 and model.q_marker == 1 and model.d_marker == 2
    with torch.no_grad():
        q, _ = model.encode_queries(["a hammer"], torch.randn(1, 49, 1280))
        d, _ = model.encode_docs(["hammer: a hand tool with a heavy rigid head", "a yellow fruit"])
    assert q.shape == (1, 32 + 8 + 49, 64) and d.shape[0] == 2
    model.save(tmp_path / "m")
    assert not any(k.startswith("backbone.") for k in load_file(str(tmp_path / "m" / "model.safetensors")))
    again = LateInteractionModel.load(tmp_path / "m")
    with torch.no_grad():
        d2, _ = again.encode_docs(["hammer: a hand tool with a heavy rigid head", "a yellow fruit"])
    assert torch.allclose(d, d2, atol=1e-5)
    assert np.isfinite(d.numpy()).all()
