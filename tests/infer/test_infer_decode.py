"""Trie-constrained beam search: vectorised processor == GENRE reference == HF generate; validity."""

from __future__ import annotations

import pytest
import torch
from infer_helpers import DictTrie, random_sequences, tiny_llama

from grace.infer.beam_search import CausalLMAdapter, beam_search
from grace.infer.constraint import PrefixAllowedReference, TrieLogitsProcessor

V, EOS = 48, 47


def _prompts(batch, length, seed, pad_left=True):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, V - 1, (batch, length), generator=gen)
    mask = torch.ones(batch, length, dtype=torch.long)
    if pad_left and batch > 1:
        mask[0, :2] = 0
        ids[0, :2] = 0
    return ids, mask


def _search(model, ids, mask, constraint, beams, lp=1.0, max_new=6):
    return beam_search(CausalLMAdapter(model), ids, mask, num_beams=beams, max_new_tokens=max_new,
                       eos_token_id=EOS, constraint=constraint, length_penalty=lp)


def test_processor_masks_exactly_trie_children():
    seqs = random_sequences(40, V, EOS, seed=3)
    trie = DictTrie(seqs)
    proc = TrieLogitsProcessor(trie.transitions())
    # walk every prefix of every sequence: the allowed set equals trie.get(prefix)
    for seq in seqs[:20]:
        state = proc.init_state(1)
        for i, tok in enumerate(seq):
            scores = proc.apply(None, torch.zeros(1, V), state)
            allowed = torch.nonzero(torch.isfinite(scores[0])).flatten().tolist()
            assert allowed == trie.get(seq[:i])
            state = proc.advance(state, torch.tensor([tok]))
        assert torch.isinf(proc.apply(None, torch.zeros(1, V), state)).all()  # leaf: nothing allowed
    # a token outside the trie leads to the sink, which allows nothing
    bad = proc.advance(proc.init_state(1), torch.tensor([1]))
    assert int(bad) == proc.sink and torch.isinf(proc.apply(None, torch.zeros(1, V), bad)).all()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("beams", [1, 3, 10])
def test_vectorised_equals_reference(seed, beams):
    trie = DictTrie(random_sequences(80, V, EOS, seed=seed, max_len=5))
    model = tiny_llama(V, seed)
    ids, mask = _prompts(4, 6, seed)
    fast = _search(model, ids, mask, TrieLogitsProcessor(trie.transitions()), beams)
    ref = _search(model, ids, mask, PrefixAllowedReference(trie, ids.shape[1]), beams)
    for row in range(ids.shape[0]):
        a, b = fast.hypotheses(row), ref.hypotheses(row)
        assert [h[0] for h in a] == [h[0] for h in b]
        assert [h[1] for h in a] == pytest.approx([h[1] for h in b], abs=1e-5)
        assert len(a) == beams


@pytest.mark.parametrize("length_penalty", [0.0, 1.0, 2.0])
def test_matches_hf_generate_with_genre_prefix_fn(length_penalty):
    trie = DictTrie(random_sequences(60, V, EOS, seed=5))
    model = tiny_llama(V, 5)
    ids, mask = _prompts(3, 5, 5)
    ref = PrefixAllowedReference(trie, ids.shape[1])
    beams = 4
    out = _search(model, ids, mask, TrieLogitsProcessor(trie.transitions()), beams, lp=length_penalty)
    gen = model.generate(ids, attention_mask=mask, num_beams=beams, num_return_sequences=beams, max_new_tokens=6,
                         eos_token_id=EOS, pad_token_id=0, length_penalty=length_penalty, do_sample=False,
                         prefix_allowed_tokens_fn=lambda b, s: ref.prefix_allowed_tokens_fn(b, s) or [0],
                         output_scores=True, return_dict_in_generate=True)
    seqs = gen.sequences[:, ids.shape[1]:].view(3, beams, -1)
    scores = gen.sequences_scores.view(3, beams)
    for row in range(3):
        hf = [s.tolist() for s, x in zip(seqs[row], scores[row]) if x > -1e8]
        hf = [s[: s.index(EOS) + 1] for s in hf]
        mine = out.hypotheses(row)
        assert [h[0] for h in mine] == hf
        assert [h[1] for h in mine] == pytest.approx(scores[row][: len(hf)].tolist(), abs=1e-4)


def test_every_result_is_in_the_trie_on_thousands_of_queries():
    """Untrained model, 2000 random prompts, varied identifier lengths: 100% valid, distinct results."""
    trie = DictTrie(random_sequences(300, V, EOS, seed=7, min_len=1, max_len=7))
    model = tiny_llama(V, 7)
    proc = TrieLogitsProcessor(trie.transitions())
    valid = total = 0
    for chunk in range(8):
        ids, mask = _prompts(250, 4, 100 + chunk, pad_left=False)
        out = _search(model, ids, mask, proc, 5, max_new=8)
        for row in range(ids.shape[0]):
            hyps = [h[0] for h in out.hypotheses(row)]
            assert len(hyps) == 5 and len({tuple(h) for h in hyps}) == 5
            valid += sum(h in trie for h in hyps)
            total += len(hyps)
    assert total == 2000 * 5 and valid == total


def test_unconstrained_search_runs_without_trie():
    model = tiny_llama(V, 0)
    ids, mask = _prompts(2, 4, 0)
    out = _search(model, ids, mask, None, 3, max_new=4)
    assert out.scores.shape == (2, 3) and (out.lengths <= 4).all()
