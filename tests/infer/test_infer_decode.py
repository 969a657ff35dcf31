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


def test_fanout_candidates_are_exactly_the_trie_children():
    trie = DictTrie(random_sequences(60, V, EOS, seed=5, min_len=1, max_len=6))
    proc = TrieLogitsProcessor(trie.transitions())
    assert proc.fanout_tokens is not None and proc.fanout == max(len(trie.get(s[:i])) for s in trie for i in range(len(s)))
    for seq in list(trie)[:20]:
        state = proc.init_state(1)
        for i, tok in enumerate(seq):
            tokens, children = proc.candidates(state)
            real = children[0] != proc.sink
            assert tokens[0][real].tolist() == trie.get(seq[:i])
            # the child reached through the table is the node advance() finds
            j = tokens[0].tolist().index(tok)
            state = proc.advance(state, torch.tensor([tok]))
            assert int(children[0, j]) == int(state)
    assert (proc.candidates(torch.tensor([proc.sink]))[1] == proc.sink).all()  # the sink has no children
    assert TrieLogitsProcessor(trie.transitions(), max_fanout_entries=1).candidates(proc.init_state(2)) is None


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("beams", [2, 10, 25])
def test_fanout_loop_equals_vocabulary_wide_loop(seed, beams):
    """Ranking K x F trie children == masking K x V logits: same hypotheses and scores, on uneven-depth
    tries (identifiers of 1-7 tokens, so finished and live beams mix), beams above and below the fan-out."""
    trie = DictTrie(random_sequences(120, V, EOS, seed=seed, min_len=1, max_len=7))
    model = tiny_llama(V, seed)
    ids, mask = _prompts(5, 6, seed)
    fanout = TrieLogitsProcessor(trie.transitions())
    wide = TrieLogitsProcessor(trie.transitions(), max_fanout_entries=0)
    assert fanout.fanout_tokens is not None and wide.fanout_tokens is None
    for length_penalty in (0.0, 1.0):
        a = _search(model, ids, mask, fanout, beams, lp=length_penalty, max_new=8)
        b = _search(model, ids, mask, wide, beams, lp=length_penalty, max_new=8)
        for row in range(ids.shape[0]):
            ha, hb = a.detailed_hypotheses(row), b.detailed_hypotheses(row)
            assert [h[0] for h in ha] == [h[0] for h in hb] and all(h[0] in trie for h in ha)
            assert [h[1] for h in ha] == pytest.approx([h[1] for h in hb], abs=1e-5)
            assert [h[2] for h in ha] == [pytest.approx(h[2], abs=1e-5) for h in hb]
            if length_penalty == 1.0:  # per-token log-probs add up to the normalised score
                assert all(sum(h[2]) / len(h[0]) == pytest.approx(h[1], abs=1e-4) for h in ha)
