"""FlamingoModel: zero-init gates, media masking, KV-cache decoding, generate, export, factory errors."""

from __future__ import annotations

import pytest
import torch
from model_helpers import EOC, IMAGE, PAD, VOCAB, PatchVisual, activate_gates, features, prompt, tiny_model

from grace.errors import GraceError


@pytest.fixture(scope="module")
def model():
    m = tiny_model()
    activate_gates(m)
    return m


def test_fresh_gates_equal_bare_lm():
    from transformers import AutoModelForCausalLM

    m = tiny_model()
    bare = AutoModelForCausalLM.from_config(m.lang_encoder.config)
    state = {k.replace("old_decoder_blocks.", "model.layers."): v for k, v in m.lang_encoder.state_dict().items()
             if ".decoder_layer." not in k and "gated_cross_attn" not in k}
    assert not bare.load_state_dict(state, strict=False).missing_keys
    ids = prompt()
    with torch.no_grad():
        ours = m(lang_x=ids, vision_features=features()).logits
        ref = bare.eval()(input_ids=ids).logits
    assert ours.shape == (2, 10, VOCAB)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    activate_gates(m)
    with torch.no_grad():
        assert not torch.allclose(m(lang_x=ids, vision_features=features()).logits, ref, atol=1e-3)


@torch.no_grad()
def test_media_masking(model):
    ids = prompt(image_at=(3, 7))
    f = features(images=2)
    base = model(lang_x=ids, vision_features=f).logits
    f_first = f.clone()
    f_first[:, 0] = torch.randn(2, 4, 32)  # change image 1: tokens 3..6 change, tokens before 3 and from 7 on do not
    changed = model(lang_x=ids, vision_features=f_first).logits
    diff = (changed - base).abs().amax(-1)
    assert diff[:, :3].max() < 1e-6
    assert diff[:, 3:7].min() > 1e-4
    f_second = f.clone()
    f_second[:, 1] = torch.randn(2, 4, 32)
    diff2 = (model(lang_x=ids, vision_features=f_second).logits - base).abs().amax(-1)
    assert diff2[:, :7].max() < 1e-6 and diff2[:, 7:].min() > 1e-4


@torch.no_grad()
def test_cross_attention_sees_only_most_recent_image():
    from grace.model.modules import MaskedCrossAttention

    torch.manual_seed(0)
    xattn = MaskedCrossAttention(dim=16, dim_visual=8, dim_head=4, heads=2)
    x, media = torch.randn(1, 5, 16), torch.randn(1, 2, 3, 8)
    text_time = torch.tensor([[0, 1, 1, 2, 2]])
    out = xattn(x, media, text_time)
    assert torch.equal(out[:, 0], xattn.to_out(torch.zeros(1, 8))[:, None][:, 0])  # no image yet: no attention
    other = media.clone()
    other[:, 0] = torch.randn(3, 8)
    diff = (xattn(x, other, text_time) - out).abs().amax(-1)[0]
    assert diff[1:3].min() > 1e-4 and diff[3:].max() == 0 and diff[0] == 0


@torch.no_grad()
def test_null_image_and_no_vision_equal(model):
    ids = prompt()
    nulls = model.null_vision_features(2)
    assert nulls.shape == (2, 1, 4, 32) and not nulls.any()
    torch.testing.assert_close(model(lang_x=ids).logits, model(lang_x=ids, vision_features=nulls).logits)


@torch.no_grad()
@pytest.mark.parametrize("split", [2, 6, 9])
def test_incremental_decoding_matches_full_forward(model, split):
    ids, f = prompt(length=12), features()
    full = model(lang_x=ids, vision_features=f).logits
    first = model(lang_x=ids[:, :split], vision_features=f, use_cache=True)
    logits = [first.logits]
    past = first.past_key_values
    for t in range(split, 12):  # one token at a time, like a decoder
        out = model(lang_x=ids[:, t:t + 1], vision_features=f, past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, 1), full, atol=1e-5, rtol=0)


@torch.no_grad()
def test_cache_survives_beam_expansion_and_reorder(model):
    """The infer stage's adapter prefills B rows, repeat-interleaves the cache to B*beams and reorders it."""
    ids, f = prompt(length=8), features()
    out = model(lang_x=ids, vision_features=f, use_cache=True)
    past = out.past_key_values
    past.batch_repeat_interleave(2)
    past.reorder_cache(torch.tensor([1, 0, 3, 2]))
    nxt = torch.tensor([[5], [6], [7], [8]])
    step = model(lang_x=nxt, vision_features=f.repeat_interleave(2, 0), past_key_values=past, use_cache=True)
    full = model(lang_x=torch.cat([ids.repeat_interleave(2, 0), nxt], 1), vision_features=f.repeat_interleave(2, 0))
    torch.testing.assert_close(step.logits[:, -1], full.logits[:, -1], atol=1e-5, rtol=0)


@torch.no_grad()
def test_generate_greedy_and_constrained_beams(model):
    from transformers import LogitsProcessorList, MinLengthLogitsProcessor

    ids, f = prompt(length=6), features()
    mask = torch.ones_like(ids)
    greedy = model.generate(ids, mask, vision_features=f, max_new_tokens=4, do_sample=False)
    seq = ids
    for _ in range(4):  # reference: argmax of full forwards
        nxt = model(lang_x=seq, vision_features=f).logits[:, -1].argmax(-1, keepdim=True)
        seq = torch.cat([seq, nxt], 1)
    assert torch.equal(greedy, seq)

    allowed = [11, 22, 33, EOC]
    beams = model.generate(ids, mask, vision_features=f, max_new_tokens=3, num_beams=4, num_return_sequences=2,
                           do_sample=False, eos_token_id=EOC,
                           prefix_allowed_tokens_fn=lambda batch_id, sent: allowed,
                           logits_processor=LogitsProcessorList([MinLengthLogitsProcessor(7, eos_token_id=EOC)]))
    assert beams.shape[0] == 4 and beams.shape[1] == 9
    new = beams[:, 6:]
    assert set(new.flatten().tolist()) <= set(allowed) | {PAD}
    assert (new[:, 0] != EOC).all()  # min length forbids stopping at once


def test_export_reload_identity(model, tmp_path):
    from grace.model import load_pretrained

    model.save_pretrained(tmp_path / "export")
    assert (tmp_path / "export" / "model.safetensors").is_file() and (tmp_path / "export" / "config.json").is_file()
    reloaded, tok = load_pretrained(tmp_path / "export")
    assert tok is None and reloaded.config == model.config
    ids, f = prompt(), features()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(lang_x=ids, vision_features=f).logits,
                                   model(lang_x=ids, vision_features=f).logits, atol=0, rtol=0)


def test_vision_x_pixels_path():
    m = tiny_model(vision_encoder=PatchVisual())
    activate_gates(m)
    pixels = torch.randn(2, 1, 1, 3, 16, 16)
    with torch.no_grad():
        via_pixels = m(lang_x=prompt(), vision_x=pixels).logits
        tokens = m.vision_encoder(pixels.flatten(0, 2)).view(2, 1, 4, 32)
        via_features = m(lang_x=prompt(), vision_features=tokens).logits
    torch.testing.assert_close(via_pixels, via_features)
    assert not any(p.requires_grad for p in m.vision_encoder.parameters())


def test_training_step_freezing_and_checkpointing():
    m = tiny_model(lm_training="frozen").train()
    names = {n for n, p in m.named_parameters() if p.requires_grad}
    assert any(n.startswith("perceiver.") for n in names) and any("gated_cross_attn" in n for n in names)
    assert "lang_encoder.model.embed_tokens.weight" in names
    assert not any("self_attn" in n or "mlp" in n for n in names)
    assert len(m.trainable_parameters()) == len(names)

    def grads(model):
        model.zero_grad()
        ids = prompt()
        model(lang_x=ids, vision_features=features(), labels=ids).loss.backward()
        return [p.grad.clone() for p in model.trainable_parameters()]

    activate_gates(m)
    plain = grads(m)
    m.gradient_checkpointing_enable()
    for a, b in zip(plain, grads(m)):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)
    assert any(g.abs().sum() > 0 for g in plain)


def test_factory_errors(tmp_path):
    from grace.model import create_model, load_pretrained

    with pytest.raises(GraceError, match="unknown model config"):
        create_model("no-such-config", vocab_size=VOCAB, image_token_id=IMAGE)
    with pytest.raises(GraceError, match="unknown config keys"):
        create_model("tiny", vocab_size=VOCAB, image_token_id=IMAGE, perceiver_dpeth=2)
    with pytest.raises(GraceError, match="image_token_id"):
        create_model("tiny", vocab_size=VOCAB)
    with pytest.raises(GraceError, match="outside the vocabulary"):
        create_model("tiny", vocab_size=100, image_token_id=IMAGE)
    with pytest.raises(GraceError, match="not a grace model export"):
        load_pretrained(tmp_path)
    m = tiny_model()
    with pytest.raises(GraceError, match="vision_features must be"):
        m(lang_x=prompt(), vision_features=torch.zeros(2, 1, 4, 31))
    with pytest.raises(GraceError, match="no vision encoder"):
        m(lang_x=prompt(), vision_x=torch.zeros(2, 1, 1, 3, 16, 16))


def test_loss_on_the_labelled_tail_equals_the_full_loss_and_its_gradients(model):
    """Left-padded training rows: only the last positions get logits, yet loss and gradients are HF's."""
    ids = prompt(length=12)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    positions = (mask.cumsum(-1) - 1).clamp_min(0)
    labels = torch.full_like(ids, -100)
    labels[0, -3:], labels[1, -2:] = ids[0, -3:], ids[1, -2:]
    kwargs = dict(lang_x=ids, attention_mask=mask, position_ids=positions, vision_features=features())
    model.zero_grad()
    tail = model(labels=labels, **kwargs)
    tail.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert tail.logits.shape[1] == 4  # 3 labelled positions + the one before them
    model.zero_grad()
    full = model.lang_encoder  # the same call without the tail shortcut: transformers' own loss
    model._condition(None, features(), 2)
    try:
        ref = full(input_ids=ids, attention_mask=mask, position_ids=positions, labels=labels)
    finally:
        model._clear()
    ref.loss.backward()
    torch.testing.assert_close(tail.loss, ref.loss, atol=1e-6, rtol=0)
    for name, grad in grads.items():
        torch.testing.assert_close(grad, dict(model.named_parameters())[name].grad, atol=1e-6, rtol=1e-5)
    model.zero_grad()
