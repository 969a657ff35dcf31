"""The offline default config: pretrained SmolLM2-135M (GGUF) + frozen EfficientNet-Lite0 (slow: ~30 s)."""

from __future__ import annotations

import pytest
import torch


@pytest.mark.slow
def test_smollm2_effnet_fresh_model_is_the_pretrained_lm():
    from grace.model import create_model
    from grace.model.factory import build_lm

    model = create_model("smollm2-effnet", image_token_id=49152, vocab_size=49160).eval()
    assert model.config.vocab_size == 49160 and model.vision_encoder.dim == 1280
    assert not any(p.requires_grad for p in model.vision_encoder.parameters())
    bare = build_lm(model.config).eval()
    ids = torch.tensor([[1, 504, 3458, 314, 49152, 260, 1345]])
    pixels = torch.randn(1, 1, 1, 3, 224, 224)
    with torch.no_grad():
        ours = model(lang_x=ids, vision_x=pixels).logits[..., :49152]
        ref = bare(inputs_embeds=model.lang_encoder.get_input_embeddings()(ids)).logits  # bare has no row 49152
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)
