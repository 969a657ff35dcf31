"""Prefix trie over identifier token sequences (``encode_identifier(id) + [eoc]``), marisa-backed.

Sequences are stored in a ``marisa_trie.BinaryTrie`` (each token packed as 4 big-endian bytes) for
compact storage, membership and sequence → image lookup; the node structure is a CSR transition table
(:class:`TransitionTable`) built with numpy in O(total tokens), which ``get`` walks with searchsorted and
the vectorised beam-search constraint consumes directly. API in the spirit of GENRE's ``trie.py``.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from grace.errors import GraceError, InputError
from grace.io_utils import atomic_path, read_json, save_config, write_json

TOKEN_BYTES = 4
FILES = {"marisa": "trie.marisa", "table": "transitions.npz", "images": "images.json"}


@dataclass
class TransitionTable:
    """CSR token transitions: node ``n``'s allowed tokens are ``tokens[offsets[n]:offsets[n+1]]``
    (ascending) leading to ``children[...]``; the root is node 0."""

    offsets: np.ndarray  # int64 (num_nodes + 1,)
    tokens: np.ndarray  # int64 (E,)
    children: np.ndarray  # int64 (E,)

    @property
    def num_nodes(self) -> int:
        return len(self.offsets) - 1

    @property
    def num_edges(self) -> int:
        return len(self.tokens)

    def step(self, node: int, token: int) -> int:
        """Child of ``node`` by ``token``, or -1."""
        lo, hi = int(self.offsets[node]), int(self.offsets[node + 1])
        j = lo + int(np.searchsorted(self.tokens[lo:hi], token))
        return int(self.children[j]) if j < hi and self.tokens[j] == token else -1

    def save(self, path: str | os.PathLike) -> None:
        with atomic_path(path, suffix=".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, offsets=self.offsets, tokens=self.tokens, children=self.children)

    @classmethod
    def load(cls, path: str | os.PathLike) -> TransitionTable:
        with np.load(path) as data:
            return cls(data["offsets"], data["tokens"], data["children"])


def pack(sequence: Sequence[int]) -> bytes:
    return np.asarray(sequence, dtype=">u4").tobytes()


def unpack(key: bytes) -> list[int]:
    return np.frombuffer(key, dtype=">u4").astype(np.int64).tolist()


def _padded(sequences: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """(rows (n, L) int64 padded with -1, lengths (n,))."""
    lengths = np.fromiter((len(s) for s in sequences), dtype=np.int64, count=len(sequences))
    width = int(lengths.max())
    rows = np.full((len(sequences), width), -1, dtype=np.int64)
    if (lengths == width).all():
        rows[:] = np.asarray(sequences, dtype=np.int64)
    else:
        mask = np.arange(width)[None, :] < lengths[:, None]
        rows[mask] = np.fromiter(itertools.chain.from_iterable(sequences), dtype=np.int64, count=int(lengths.sum()))
    return rows, lengths


def _keys(rows: np.ndarray, lengths: np.ndarray) -> list[bytes]:
    """marisa keys of padded rows: each row's first ``length`` tokens as big-endian uint32 bytes."""
    width = rows.shape[1] * TOKEN_BYTES
    buf = np.ascontiguousarray(rows, dtype=">u4").tobytes()
    ends = (lengths * TOKEN_BYTES).tolist()
    return [buf[i * width:i * width + end] for i, end in enumerate(ends)]


def build_transitions(sequences: Sequence[Sequence[int]] | tuple[np.ndarray, np.ndarray]) -> TransitionTable:
    """CSR table of the prefix tree of ``sequences``, vectorised per depth.

    Rows are sorted lexicographically; a row starts a new node at depth ``d`` when it differs from the
    previous row in its first ``d+1`` tokens. Nodes are numbered depth by depth in row order, so edges
    come out grouped by parent with ascending tokens, and ``children`` is simply 1..num_nodes-1.
    """
    rows, lengths = sequences if isinstance(sequences, tuple) else _padded(sequences)
    rows = rows[np.lexsort(rows.T[::-1])]
    lengths = (rows >= 0).sum(axis=1)
    n, width = rows.shape
    equal = np.ones((n, width), dtype=bool)
    equal[1:] = rows[1:] == rows[:-1]
    lcp = np.cumprod(equal, axis=1).sum(axis=1)  # shared prefix length with the previous row
    lcp[0] = 0
    parents_all, tokens_all = [], []
    parent_of_row = np.zeros(n, dtype=np.int64)  # node id at depth d-1 for each row (root for d = 0)
    next_id = 1
    for d in range(width):
        alive = lengths > d
        new = alive & (lcp <= d)
        count = int(new.sum())
        node_of_row = next_id - 1 + np.cumsum(new)
        parents_all.append(parent_of_row[new])
        tokens_all.append(rows[new, d])
        parent_of_row = np.where(alive, node_of_row, -1)
        next_id += count
    parents = np.concatenate(parents_all)
    tokens = np.concatenate(tokens_all)
    offsets = np.zeros(next_id + 1, dtype=np.int64)
    np.cumsum(np.bincount(parents, minlength=next_id), out=offsets[1:])
    return TransitionTable(offsets, tokens.astype(np.int64), np.arange(1, next_id, dtype=np.int64))


class TrieIndex(Protocol):
    """What decoding needs from a trie over a corpus's identifier token sequences; :class:`Trie` implements
    it (and so do the tests' stand-ins)."""

    def get(self, prefix: Sequence[int]) -> list[int]:
        """Allowed next tokens after ``prefix`` (ascending); [] at a leaf or off the trie."""

    def transitions(self) -> TransitionTable:
        """The CSR transition table (root = node 0) that the vectorised constraint reads."""

    def map_sequence(self, token_ids: Sequence[int]) -> str | None:
        """The value (image id) stored for a complete sequence, or None (not in the trie, or no values)."""

    @property
    def max_length(self) -> int:
        """Tokens in the longest sequence: the most steps a constrained decoder takes."""


class Trie:
    """Constraint trie over token-id sequences; ``values`` (e.g. image ids) are attached per sequence."""

    def __init__(self, sequences: Iterable[Sequence[int]] = (), values: Sequence[str] | None = None, *,
                 _marisa=None, _table: TransitionTable | None = None, _values: list[str] | None = None):
        import marisa_trie

        if _marisa is not None:
            self._marisa, self._table, self._values = _marisa, _table, _values
            return
        sequences = sequences if isinstance(sequences, list) else list(sequences)
        if not sequences:
            raise InputError("cannot build a trie over no sequences")
        if values is not None and len(values) != len(sequences):
            raise InputError(f"{len(values)} values for {len(sequences)} sequences")
        rows, lengths = _padded(sequences)
        if lengths.min() < 1 or rows.min() < -1 or ((rows == -1).sum() != rows.size - lengths.sum()):
            raise InputError("trie sequences must be non-empty lists of non-negative token ids")
        keys = _keys(rows, lengths)
        self._marisa = marisa_trie.BinaryTrie(keys)
        if len(self._marisa) != len(keys):
            raise InputError(f"{len(keys) - len(self._marisa)} duplicate sequences (identifiers that tokenise "
                             "identically)")
        self._values = None
        if values is not None:
            self._values = [""] * len(keys)
            for key, value in zip(keys, values):
                self._values[self._marisa[key]] = str(value)
        self._table = build_transitions((rows, lengths))

    def __len__(self) -> int:
        return len(self._marisa)

    def __iter__(self) -> Iterator[list[int]]:
        for key in self._marisa.iterkeys():
            yield unpack(key)

    def __contains__(self, sequence: object) -> bool:
        try:
            return pack(sequence) in self._marisa  # type: ignore[arg-type]
        except (TypeError, ValueError, OverflowError):
            return False

    def node(self, prefix: Sequence[int]) -> int:
        """Node reached by ``prefix`` (-1 if it leaves the trie)."""
        node = 0
        for token in prefix:
            node = self._table.step(node, int(token))
            if node < 0:
                return -1
        return node

    def get(self, prefix: Sequence[int]) -> list[int]:
        """Allowed next tokens after ``prefix`` (ascending); [] at a leaf or off the trie."""
        node = self.node(prefix)
        if node < 0:
            return []
        t = self._table
        return t.tokens[t.offsets[node]:t.offsets[node + 1]].tolist()

    def transitions(self) -> TransitionTable:
        return self._table

    @property
    def max_length(self) -> int:
        """Tokens in the longest sequence (the depth of the transition table, level by level)."""
        offsets, children = np.asarray(self._table.offsets), np.asarray(self._table.children)
        frontier, depth = np.zeros(1, dtype=np.int64), 0
        while True:
            starts, counts = offsets[frontier], offsets[frontier + 1] - offsets[frontier]
            total = int(counts.sum())
            if total == 0:
                return depth
            first = np.repeat(starts - (np.cumsum(counts) - counts), counts)  # each edge's slice start, shifted
            frontier = children[first + np.arange(total)]
            depth += 1

    def map_sequence(self, token_ids: Sequence[int]) -> str | None:
        """The value (image id) of a complete sequence, or None if it is not in the trie."""
        try:
            index = self._marisa[pack(token_ids)]
        except (KeyError, ValueError, OverflowError):
            return None
        return self._values[index] if self._values is not None else str(index)

    def save(self, directory: str | os.PathLike, config: dict | None = None) -> Path:
        """``trie.marisa`` + ``transitions.npz`` (+ ``images.json``) + ``config.json``, each atomic."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        with atomic_path(directory / FILES["marisa"]) as tmp:
            self._marisa.save(str(tmp))
        self._table.save(directory / FILES["table"])
        if self._values is not None:
            write_json(directory / FILES["images"], self._values)
        save_config(directory, {"sequences": len(self), "nodes": self._table.num_nodes,
                                "edges": self._table.num_edges, **(config or {})})
        return directory

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Trie:
        import marisa_trie

        directory = Path(directory)
        for name in ("marisa", "table"):
            if not (directory / FILES[name]).is_file():
                raise InputError("not a saved trie (missing file)", path=directory / FILES[name])
        trie = marisa_trie.BinaryTrie()
        trie.load(str(directory / FILES["marisa"]))
        values = read_json(directory / FILES["images"]) if (directory / FILES["images"]).is_file() else None
        return cls(_marisa=trie, _table=TransitionTable.load(directory / FILES["table"]), _values=values)


def build_trie(idmap, tokenizer, image_ids: Sequence[str] | None = None) -> Trie:
    """Trie over ``encode_identifier(id) + [eoc]`` of ``image_ids`` (default all images of ``idmap``)."""
    image_ids = list(idmap.image_to_id) if image_ids is None else list(image_ids)
    if not image_ids:
        raise GraceError("no images to build a trie over")
    eoc = tokenizer.eoc_token_id
    sequences = [tokenizer.encode_identifier(idmap.to_id(i)) + [eoc] for i in image_ids]
    return Trie(sequences, values=image_ids)
