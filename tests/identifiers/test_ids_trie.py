"""The constraint trie: exact acceptance, prefix children, CSR table == get(), save/load, build_trie."""

from __future__ import annotations

import numpy as np
import pytest

from grace.errors import GraceError
from grace.identifiers import Trie, build_trie, create_scheme

EOC = 99


def random_sequences(n, seed, vocab=6, max_len=5):
    rng = np.random.default_rng(seed)
    seqs = {tuple(rng.integers(0, vocab, rng.integers(1, max_len + 1)).tolist()) + (EOC,) for _ in range(n)}
    return sorted(list(s) for s in seqs)


def _prefix_children(seqs):
    children: dict[tuple, set] = {}
    for s in seqs:
        for d in range(len(s)):
            children.setdefault(tuple(s[:d]), set()).add(s[d])
    return children


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_trie_exact(seed):
    seqs = random_sequences(150, seed)
    trie = Trie(seqs, values=[f"img{i}" for i in range(len(seqs))])
    assert len(trie) == len(seqs) and sorted(trie) == seqs
    expected = _prefix_children(seqs)
    for prefix, kids in expected.items():  # every prefix gives exactly the right children
        assert trie.get(list(prefix)) == sorted(kids)
    for i, s in enumerate(seqs):
        assert s in trie and trie.get(s) == [] and trie.map_sequence(s) == f"img{i}"
    rng = np.random.default_rng(seed + 10)
    for _ in range(300):  # random sequences: accepted iff they are in the set
        cand = rng.integers(0, 7, rng.integers(1, 6)).tolist() + [EOC]
        assert (cand in trie) == (cand in seqs)
        assert (trie.map_sequence(cand) is not None) == (cand in seqs)
        walk_ok = all(t in trie.get(cand[:d]) for d, t in enumerate(cand))
        assert walk_ok == (tuple(cand[:-1]) in expected and EOC in expected[tuple(cand[:-1])])
    assert trie.get([EOC]) == [] and trie.get([7, 7]) == []


def test_transitions_agree_with_get():
    seqs = random_sequences(200, 5)
    trie = Trie(seqs)
    table = trie.transitions()
    assert table.offsets.dtype == table.tokens.dtype == table.children.dtype == np.int64
    prefixes = list(_prefix_children(seqs)) + [tuple(s) for s in seqs]
    assert table.num_nodes == len(set(prefixes)) and table.num_edges == table.num_nodes - 1
    seen = set()
    for prefix in prefixes:
        node = trie.node(prefix)
        seen.add(node)
        lo, hi = table.offsets[node], table.offsets[node + 1]
        assert table.tokens[lo:hi].tolist() == trie.get(list(prefix))
        assert np.all(np.diff(table.tokens[lo:hi]) > 0)
        for tok, child in zip(table.tokens[lo:hi], table.children[lo:hi]):
            assert child == trie.node(list(prefix) + [int(tok)])
    assert seen == set(range(table.num_nodes)) and trie.node([]) == 0


def test_save_load_and_prefix_sequences(tmp_path):
    seqs = [[1, 2], [1, 2, 3], [4], [70000, 5]]  # a sequence that is a prefix of another; a large id
    trie = Trie(seqs, values=["a", "b", "c", "d"])
    assert trie.get([1, 2]) == [3] and [1, 2] in trie and trie.get([70000]) == [5]
    trie.save(tmp_path / "t", config={"split": "test"})
    again = Trie.load(tmp_path / "t")
    assert sorted(again) == sorted(seqs) and again.map_sequence([70000, 5]) == "d"
    for name in ("offsets", "tokens", "children"):
        assert np.array_equal(getattr(again.transitions(), name), getattr(trie.transitions(), name))
    assert (tmp_path / "t" / "config.json").is_file()


def test_trie_bad_input(tmp_path):
    with pytest.raises(GraceError, match="no sequences"):
        Trie([])
    with pytest.raises(GraceError, match="duplicate"):
        Trie([[1, 2], [1, 2]])
    with pytest.raises(GraceError, match="non-negative"):
        Trie([[1, -2]])
    with pytest.raises(GraceError, match="not a saved trie"):
        Trie.load(tmp_path)


@pytest.mark.parametrize("name", ["numeric", "structured", "semantic"])
def test_build_trie_over_split(name, shared_tiny_dataset):
    feats = np.random.default_rng(0).normal(size=(24, 8)).astype(np.float32)
    idmap = create_scheme(name, tokenizer="byte", k=3, c=4).build(shared_tiny_dataset, feats)
    tok = idmap.tokenizer()
    test_ids = [r.image_id for r in shared_tiny_dataset.split("test")]
    trie = build_trie(idmap, tok, image_ids=test_ids)
    assert len(trie) == len(test_ids)
    for image_id in shared_tiny_dataset.image_ids():
        seq = tok.encode_identifier(idmap.to_id(image_id)) + [tok.eoc_token_id]
        assert (seq in trie) == (image_id in test_ids)
        assert trie.map_sequence(seq) == (image_id if image_id in test_ids else None)
    assert len(build_trie(idmap, tok)) == len(shared_tiny_dataset)
