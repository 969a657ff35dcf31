"""Helpers for the infer tests: random tries and tiny random causal LMs (no other stage needed)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import numpy as np


class DictTrie:
    """A plain nested-dict trie implementing :class:`grace.identifiers.trie.TrieIndex` (no stored values)."""

    def __init__(self, sequences):
        self.root: dict = {}
        self.sequences = [list(s) for s in sequences]
        for seq in self.sequences:
            node = self.root
            for tok in seq:
                node = node.setdefault(tok, {})

    def get(self, prefix):
        node = self.root
        for tok in prefix:
            if tok not in node:
                return []
            node = node[tok]
        return sorted(node)

    def __len__(self):
        return len(self.sequences)

    @property
    def max_length(self):
        return max(len(seq) for seq in self.sequences)

    def map_sequence(self, token_ids):
        return None  # no values: the retriever reads the image from the identifier map

    def __iter__(self):
        return iter(self.sequences)

    def __contains__(self, seq):
        return list(seq) in self.sequences

    def transitions(self):
        offsets, tokens, children, queue = [0], [], [], [self.root]
        i = 0
        while i < len(queue):
            node = queue[i]
            for tok in sorted(node):
                tokens.append(tok)
                children.append(len(queue))
                queue.append(node[tok])
            offsets.append(len(tokens))
            i += 1
        return SimpleNamespace(offsets=np.array(offsets), tokens=np.array(tokens, dtype=np.int64),
                               children=np.array(children, dtype=np.int64))


def random_sequences(n, vocab, eos, *, min_len=2, max_len=5, seed=0):
    """``n`` distinct random token sequences (tokens in [2, vocab) minus eos), each ending with ``eos``."""
    rng = random.Random(seed)
    out = set()
    while len(out) < n:
        length = rng.randint(min_len, max_len)
        out.add(tuple(rng.choice([t for t in range(2, vocab) if t != eos]) for _ in range(length)) + (eos,))
    return [list(s) for s in sorted(out)]


def tiny_llama(vocab=48, seed=0):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         pad_token_id=0, bos_token_id=1, eos_token_id=vocab - 1)
    return LlamaForCausalLM(config).eval()


class CharTokenizer:
    """A stand-in for IdentifierTokenizer: characters → ids in [2, 40), special ids above."""

    pad_token_id, image_token_id, eoc_token_id = 0, 46, 47

    def encode_text(self, text):
        return [2 + (ord(c) % 38) for c in text]

    def decode_identifier(self, ids):
        return " ".join(str(i) for i in ids)


class MapIds:
    """A stand-in for IdentifierMap over identifier strings ``"t1 t2 …"``."""

    def __init__(self, image_to_id):
        self.image_to_id = dict(image_to_id)
        self._to_image = {v: k for k, v in image_to_id.items()}

    def to_image(self, identifier):
        return self._to_image[identifier]


def tiny_generative_retriever(n_images=40, seed=0, num_beams=5, batch_size=8):
    """A GenerativeRetriever over an untrained tiny Llama, a char tokenizer and random identifiers."""
    from grace.infer.retriever import GenerativeRetriever

    tok = CharTokenizer()
    seqs = random_sequences(n_images, 40, tok.eoc_token_id, min_len=2, max_len=4, seed=seed)
    ids = {f"img{i}": tok.decode_identifier(s[:-1]) for i, s in enumerate(seqs)}
    return GenerativeRetriever(tiny_llama(48, seed), tok, MapIds(ids), DictTrie(seqs), num_beams=num_beams,
                               batch_size=batch_size)
