"""Which LM weights train (``lm_training``: full / frozen / lora): trainable sets, learning, export + merge."""

from __future__ import annotations

import pytest
import torch
from model_helpers import features, prompt, tiny_model

from grace.errors import GraceError


def _trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def _adapt(model, steps: int = 5) -> list[float]:
    """A few AdamW steps on one fixed batch; the losses."""
    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-2)
    ids, feats, losses = prompt(), features(), []
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        loss = model(lang_x=ids, vision_features=feats, labels=ids).loss
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_trainable_parts_per_mode():
    full, frozen, lora = (tiny_model(lm_training=mode) for mode in ("full", "frozen", "lora"))
    assert any("self_attn" in n for n in _trainable(full))
    for model in (frozen, lora):
        names = _trainable(model)
        assert any(n.startswith("perceiver.") for n in names) and any("gated_cross_attn" in n for n in names)
        assert "lang_encoder.model.embed_tokens.weight" in names
        assert not any(("self_attn" in n or "mlp" in n) and "lora_" not in n for n in names)
    lora_names = {n for n in _trainable(lora) if "lora_" in n}
    assert any("self_attn.q_proj.lora_A" in n for n in lora_names) and any("mlp.down_proj.lora_B" in n for n in lora_names)
    assert not any("gated_cross_attn" in n for n in lora_names), "LoRA must wrap only the LM's own layers"
    assert not any("lora_" in n for n, _ in frozen.named_parameters())
    n_train = {name: sum(p.numel() for p in m.trainable_parameters()) for name, m in
               (("full", full), ("frozen", frozen), ("lora", lora))}
    assert n_train["frozen"] < n_train["lora"] < n_train["full"]


def test_lora_learns_and_leaves_the_base_weights_alone():
    model = tiny_model(lm_training="lora", lora_rank=4)
    base = {n: p.detach().clone() for n, p in model.named_parameters() if "base_layer" in n}
    losses = _adapt(model, steps=8)
    assert losses[-1] < 0.8 * losses[0]
    assert all(torch.equal(p, base[n]) for n, p in model.named_parameters() if n in base)
    assert any(p.abs().sum() > 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_lora_export_reloads_identically_merged_or_not(tmp_path):
    from grace.model import load_pretrained

    model = tiny_model(lm_training="lora", lora_rank=4)
    _adapt(model, steps=3)
    model.eval()
    model.save_pretrained(tmp_path)
    with torch.no_grad():
        want = model(lang_x=prompt(), vision_features=features()).logits
    for merge in (False, True):
        loaded, _ = load_pretrained(tmp_path, merge_lora=merge)
        assert loaded.config.lm_training == "lora"
        merged = [m.merged for m in loaded.modules() if hasattr(m, "merged") and hasattr(m, "lora_A")]
        assert merged and all(flag == merge for flag in merged)
        with torch.no_grad():
            got = loaded(lang_x=prompt(), vision_features=features()).logits
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_lm_training_config_errors_and_legacy_flag():
    from grace.model.config import resolve_config

    with pytest.raises(GraceError, match="lm_training must be one of"):
        tiny_model(lm_training="half")
    with pytest.raises(GraceError, match="lora_rank"):
        tiny_model(lm_training="lora", lora_rank=0)
    with pytest.raises(GraceError, match="cannot add LoRA adapters"):
        tiny_model(lm_training="lora", lora_target_modules=["no_such_proj"])
    assert resolve_config("tiny", freeze_lm=True).lm_training == "frozen"  # exports before lm_training
    assert resolve_config("tiny", freeze_lm=False).lm_training == "full"
    assert resolve_config("openflamingo-3b").lm_training == "frozen"
