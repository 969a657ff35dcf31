"""An OpenFlamingo (open-flamingo 2.0.1) model's state dict loads into ours and gives the same logits."""

from __future__ import annotations

import sys
import types

import pytest
import torch
from model_helpers import EOC, IMAGE, PatchVisual, prompt


def _import_open_flamingo():
    pytest.importorskip("einops_exts")
    if "open_clip" not in sys.modules:  # open_flamingo/__init__ imports its factory, which imports open_clip
        try:
            import open_clip  # noqa: F401
        except ImportError:
            sys.modules["open_clip"] = types.ModuleType("open_clip")
    flamingo = pytest.importorskip("open_flamingo.src.flamingo")
    from open_flamingo.src.flamingo_lm import FlamingoLMMixin
    from open_flamingo.src.utils import extend_instance

    return flamingo.Flamingo, FlamingoLMMixin, extend_instance


@pytest.mark.parametrize("every", [1, 2])
def test_openflamingo_checkpoint_loads_with_identical_logits(every):
    from transformers import AutoConfig, AutoModelForCausalLM

    from grace.model import create_model, load_state

    Flamingo, FlamingoLMMixin, extend_instance = _import_open_flamingo()
    lm_cfg = AutoConfig.for_model("llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                  num_attention_heads=4, num_key_value_heads=2, vocab_size=260)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(lm_cfg)
    extend_instance(lm, FlamingoLMMixin)
    lm.set_decoder_layers_attr_name("model.layers")
    vision = torch.nn.Module()
    vision.visual = PatchVisual(as_tuple=True)
    of = Flamingo(vision, lm, eoc_token_id=EOC, media_token_id=IMAGE, vis_dim=32, cross_attn_every_n_layers=every)
    with torch.no_grad():
        for n, p in of.named_parameters():
            if n.endswith("_gate"):
                p.fill_(0.7)
    of.eval()

    # OpenFlamingo's perceiver / cross-attention defaults, our tiny LM shape
    ours = create_model("tiny", pretrained_lm=False, lm_config=lm_cfg, vision_encoder=PatchVisual(),
                        image_token_id=IMAGE, eoc_token_id=EOC, cross_attn_every_n_layers=every,
                        perceiver_depth=6, perceiver_heads=8, perceiver_dim_head=64, perceiver_latents=64,
                        perceiver_ff_mult=4, xattn_heads=8, xattn_dim_head=64, xattn_ff_mult=4).eval()
    of_state = of.state_dict()
    assert set(of_state) == set(ours.state_dict())  # identical parameter names / layout
    load_state(ours, of_state, source="openflamingo")

    ids = prompt(length=12, image_at=(2, 7))
    mask = torch.ones_like(ids)
    mask[1, :1] = 0
    pixels = torch.randn(2, 2, 1, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref = of(vision_x=pixels, lang_x=ids, attention_mask=mask).logits
        got = ours(lang_x=ids, attention_mask=mask, vision_x=pixels).logits
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)
    assert not torch.allclose(ref, ours.lang_encoder(input_ids=ids, attention_mask=mask).logits, atol=1e-3)
