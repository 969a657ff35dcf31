"""The static decode path: a preallocated beam KV cache (in-place writes, only generated positions re-ordered)
and a fixed step count with no host synchronisation give the same hypotheses as the growing DynamicCache
loop with its early stop — on bare LMs and Flamingo models, uneven-depth tries, left-padded prompts and
batches where some queries finish before others."""

from __future__ import annotations

import pytest
import torch
from infer_helpers import DictTrie, random_sequences, tiny_llama
from test_infer_vision_cache import EOS as F_EOS
from test_infer_vision_cache import V as F_V
from test_infer_vision_cache import _flamingo
from test_infer_vision_cache import _prompts as flamingo_prompts

from grace.infer.beam_search import CausalLMAdapter, beam_search, compile_for_decoding
from grace.infer.constraint import PrefixAllowedReference, TrieLogitsProcessor
from grace.infer.kv_cache import StaticBeamCache, static_cache_supported
from grace.infer.retriever import FlamingoAdapter, make_adapter

V, EOS = 48, 47


def _prompts(batch: int, length: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V - 1, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    ids[0, :3], mask[0, :3] = 0, 0  # one left-padded row
    return ids, mask


def _assert_same(a, b, rows: int, tol: float = 1e-5) -> None:
    for row in range(rows):
        ha, hb = a.detailed_hypotheses(row), b.detailed_hypotheses(row)
        assert [h[0] for h in ha] == [h[0] for h in hb]
        assert [h[1] for h in ha] == pytest.approx([h[1] for h in hb], abs=tol)
        assert [x for h in ha for x in h[2]] == pytest.approx([x for h in hb for x in h[2]], abs=tol)


@pytest.mark.parametrize(("seed", "beams", "fanout"), [(0, 1, True), (1, 4, True), (2, 10, True), (0, 10, False),
                                                     (1, 4, False)])
def test_static_fixed_steps_equal_dynamic_early_stop(seed, beams, fanout):
    seqs = random_sequences(70, V, EOS, seed=seed, min_len=1, max_len=6)  # uneven depths, 2..7 tokens
    trie = DictTrie(seqs)
    depth = max(len(s) for s in seqs)
    model = tiny_llama(V, seed)
    ids, mask = _prompts(5, 7, seed)

    def run(static: bool, early_stop: bool):
        constraint = TrieLogitsProcessor(trie.transitions(), max_fanout_entries=1 << 22 if fanout else 0)
        return beam_search(CausalLMAdapter(model, static_cache=static), ids, mask, num_beams=beams,
                           max_new_tokens=depth, eos_token_id=EOS, constraint=constraint, early_stop=early_stop)

    reference = run(static=False, early_stop=True)
    for static, early_stop in [(True, True), (False, False), (True, False)]:
        out = run(static, early_stop)
        _assert_same(out, reference, ids.shape[0])
        assert all(h[0] in trie for row in range(ids.shape[0]) for h in out.hypotheses(row))


def test_static_equals_genre_reference_constraint():
    """The sequence-reading GENRE reference constraint sees the same rows on the static path."""
    trie = DictTrie(random_sequences(50, V, EOS, seed=4, max_len=4))
    model = tiny_llama(V, 4)
    ids, mask = _prompts(3, 6, 4)
    kwargs = {"num_beams": 5, "max_new_tokens": 5, "eos_token_id": EOS,
              "constraint": PrefixAllowedReference(trie, ids.shape[1])}
    _assert_same(beam_search(CausalLMAdapter(model, static_cache=True), ids, mask, **kwargs),
                 beam_search(CausalLMAdapter(model), ids, mask, **kwargs), ids.shape[0])


@pytest.mark.parametrize("with_images", [False, True])
def test_static_flamingo_equals_dynamic(with_images):
    model = _flamingo(1)
    trie = DictTrie(random_sequences(60, F_V, F_EOS, seed=1, min_len=1, max_len=5))
    ids, mask = flamingo_prompts(5, 1)
    features = torch.randn(5, 1, 4, model.config.vis_dim, generator=torch.Generator().manual_seed(1)) \
        if with_images else None

    def run(static: bool):
        adapter = FlamingoAdapter(model, vision_features=features, static_cache=static)
        return beam_search(adapter, ids, mask, num_beams=6, max_new_tokens=6, eos_token_id=F_EOS,
                           constraint=TrieLogitsProcessor(trie.transitions()), early_stop=not static)

    _assert_same(run(True), run(False), ids.shape[0])


def test_static_cache_writes_in_place_and_keeps_the_prompt():
    model = tiny_llama(V, 0)
    ids, mask = _prompts(2, 5, 0)
    beams, steps = 3, 4
    adapter = CausalLMAdapter(model, static_cache=True)
    adapter.prefill(ids, mask, beams, steps)
    static = adapter.static
    assert isinstance(static, StaticBeamCache)
    layer = static.cache.layers[0]
    pointers = (layer.keys.data_ptr(), static.mask.data_ptr())
    prompt_keys = layer.keys[:, :, :5].clone()
    assert layer.keys.shape[0] == 2 * beams and layer.keys.shape[2] == 5 + steps
    assert static.mask[:, 5:].sum() == 0 and torch.equal(static.mask[:, :5], mask.repeat_interleave(beams, 0))
    # a query's beams start from one prompt: its expanded rows are equal
    torch.testing.assert_close(layer.keys[0, :, :5], layer.keys[beams - 1, :, :5])
    swap = torch.tensor([2, 0, 1, 5, 3, 4])  # beams re-ordered within each query
    for step in range(steps):
        adapter.step(torch.full((2 * beams,), 7 + step))
        after_step = layer.keys[:, :, 5:6 + step].clone()
        adapter.reorder(swap)
        torch.testing.assert_close(layer.keys[:, :, 5:6 + step], after_step[swap])
        assert torch.equal(layer.keys[:, :, :5], prompt_keys)  # the prompt never moves
        assert int(static.mask[:, 5 + step].min()) == 1 and static.mask[:, 6 + step:].sum() == 0
    assert (layer.keys.data_ptr(), static.mask.data_ptr()) == pointers  # no reallocation: static addresses
    with pytest.raises(RuntimeError, match="static cache full"):
        adapter.step(torch.full((2 * beams,), 9))


def test_unsupported_cache_falls_back_to_dynamic():
    model = tiny_llama(V, 0)
    assert not static_cache_supported(model, ((torch.zeros(1), torch.zeros(1)),))  # a legacy tuple cache
    ids, mask = _prompts(2, 5, 0)
    adapter = CausalLMAdapter(model, static_cache=True)
    adapter.prefill(ids, mask, 2)  # no step budget given: nothing to preallocate for
    assert adapter.static is None and adapter.past is not None
    assert make_adapter(model, static_cache=True).static_cache


def test_retriever_decodes_statically_and_compile_falls_back_on_cpu(caplog):
    from infer_helpers import tiny_generative_retriever

    from grace.retriever import Query

    queries = [Query(text=t) for t in ["a red fox", "blue", "b", "tea"]]
    default = tiny_generative_retriever(seed=3)
    assert default.static_cache and default.early_stop and default.step_model is None
    dynamic = tiny_generative_retriever(seed=3)
    dynamic.static_cache = False
    with caplog.at_level("WARNING", logger="grace.fallbacks"):
        compiled = tiny_generative_retriever(seed=3)
        compiled.step_model = compile_for_decoding(compiled.model, "cpu")
    assert compiled.step_model is compiled.model and "needs a CUDA device" in caplog.text
    results = [r.search(queries, 5) for r in (default, dynamic, compiled)]
    assert [[h.image_id for h in hits] for hits in results[0]] == [[h.image_id for h in hits] for hits in results[1]]
    assert results[0] == results[2]


def test_compile_failure_falls_back_to_eager(caplog):
    from grace.infer.beam_search import _CompiledOrEager

    def broken(**_):
        raise RuntimeError("backend exploded\nlong trace")

    step = _CompiledOrEager(lambda **kw: kw["x"] + 1, broken)
    with caplog.at_level("WARNING", logger="grace.fallbacks"):
        assert step(x=1) == 2 and step(x=2) == 3
    assert step.compiled is None and caplog.text.count("backend exploded") == 1
