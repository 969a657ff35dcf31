"""The decoder's vision cache: perceiver latents and cross-attention K/V computed once per query (the null
image once per search) give the same beams as recomputing them at every step, and are computed once."""

from __future__ import annotations

import pytest
import torch
from infer_helpers import DictTrie, random_sequences

from grace.infer.beam_search import beam_search
from grace.infer.constraint import TrieLogitsProcessor
from grace.infer.retriever import FlamingoAdapter
from grace.model import create_model

V, EOS, IMAGE, PAD = 60, 59, 1, 0


def _flamingo(seed: int):
    torch.manual_seed(seed)
    model = create_model("tiny", vocab_size=V, image_token_id=IMAGE, eoc_token_id=EOS, pad_token_id=PAD).eval()
    with torch.no_grad():  # open the gates so the image changes every logit
        for block in model.gated_cross_attn_layers:
            if block is not None:
                block.attn_gate.fill_(1.0)
                block.ff_gate.fill_(1.0)
    return model


def _prompts(batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, EOS, (batch, 7), generator=gen)
    ids[:, 4] = IMAGE  # text, <image>, id cue (the t2id prompt's layout)
    mask = torch.ones_like(ids)
    ids[0, :2], mask[0, :2] = PAD, 0  # one left-padded row
    return ids, mask


def _search(model, ids, mask, trie, beams, *, cached: bool, features=None):
    adapter = FlamingoAdapter(model, vision_features=features, cache_vision=cached)
    # the reference: vision recomputed every step and the vocabulary-wide constraint (no fan-out table)
    constraint = TrieLogitsProcessor(trie.transitions(), max_fanout_entries=1 << 22 if cached else 0)
    return beam_search(adapter, ids, mask, num_beams=beams, max_new_tokens=6, eos_token_id=EOS,
                       constraint=constraint, pad_token_id=PAD)


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("with_images", [False, True])
@pytest.mark.parametrize("beams", [1, 4, 10])
def test_cached_vision_equals_recomputed(seed, with_images, beams):
    model = _flamingo(seed)
    trie = DictTrie(random_sequences(60, V, EOS, seed=seed, min_len=1, max_len=5))  # uneven depths
    ids, mask = _prompts(5, seed)
    features = torch.randn(5, 1, 4, model.config.vis_dim, generator=torch.Generator().manual_seed(seed)) \
        if with_images else None
    fast = _search(model, ids, mask, trie, beams, cached=True, features=features)
    ref = _search(model, ids, mask, trie, beams, cached=False, features=features)
    for row in range(ids.shape[0]):
        a, b = fast.detailed_hypotheses(row), ref.detailed_hypotheses(row)
        assert [h[0] for h in a] == [h[0] for h in b]
        assert [h[1] for h in a] == pytest.approx([h[1] for h in b], abs=1e-5)
        assert [x for h in a for x in h[2]] == pytest.approx([x for h in b for x in h[2]], abs=1e-5)
        assert all(h[0] in trie for h in a)


def test_vision_side_runs_once_per_search():
    model = _flamingo(0)
    trie = DictTrie(random_sequences(60, V, EOS, seed=0, min_len=3, max_len=5))
    ids, mask = _prompts(4, 0)
    calls = {"perceiver": [], "to_kv": []}
    model.perceiver.register_forward_hook(lambda m, a, out: calls["perceiver"].append(out.shape[0]))
    for block in model.gated_cross_attn_layers:
        if block is not None:
            block.attn.to_kv.register_forward_hook(lambda m, a, out: calls["to_kv"].append(out.shape[0]))
    layers = sum(block is not None for block in model.gated_cross_attn_layers)

    _search(model, ids, mask, trie, 6, cached=True)
    assert calls["perceiver"] == [1]  # the null image: one row for the whole batch
    assert len(calls["to_kv"]) == layers and set(calls["to_kv"]) == {4}  # once per layer, per query
    calls["perceiver"].clear(), calls["to_kv"].clear()
    _search(model, ids, mask, trie, 6, cached=False)
    assert len(calls["perceiver"]) >= 3 and 24 in calls["perceiver"]  # every step, on every beam
    assert len(calls["to_kv"]) >= 3 * layers


def test_null_image_latents_are_the_zero_features_latents():
    model = _flamingo(0)
    with torch.no_grad():
        once = model.encode_vision(batch_size=3)
        per_row = model.encode_vision(vision_features=model.null_vision_features(3))
    assert once.shape == per_row.shape
    torch.testing.assert_close(once, per_row)
