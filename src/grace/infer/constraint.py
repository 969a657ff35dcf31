"""Trie constraints for beam search: a vectorised processor over the CSR table, and the GENRE reference.

Both implement the small :class:`Constraint` protocol that :func:`grace.infer.beam_search.beam_search`
drives: ``init_state(n)`` → per-row state, ``apply(sequences, scores, state)`` → masked scores,
``advance(state, tokens)`` → next state. The beam loop re-indexes the state with the beam order itself.

- :class:`TrieLogitsProcessor` keeps ONE trie node id per row as a tensor. Its fan-out table lets the beam
  loop gather each row's F allowed tokens (and their child nodes) and rank K × F candidates instead of
  K × V; without the table (too large), masking is one gather/scatter over the CSR slices of all rows at
  once and advancing one ``searchsorted`` over globally sorted ``node * T + token`` keys. No Python loop
  over rows, no ``.tolist()``.
- :class:`PrefixAllowedReference` is the GENRE-style ``prefix_allowed_tokens_fn`` (Python, ``trie.get``
  on each row's generated suffix): slow, obviously correct, kept as the reference the tests compare with.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch

from grace.errors import GraceError


class Constraint(Protocol):
    """What the beam loop needs from a decoding constraint (both constraints below implement all of it)."""

    #: whether :meth:`apply` reads each row's tokens (the loop then materialises prompt + generated rows)
    needs_sequences: bool
    #: the state of a dead row (one that left the trie); padding of :meth:`candidates`
    sink: int

    def init_state(self, n_rows: int, device: torch.device | None = None) -> Any: ...

    def candidates(self, state: Any) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows, F) allowed tokens and their next states, when the constraint can list them (the loop then
        ranks K × F children instead of K × V); None otherwise."""

    def apply(self, sequences: torch.Tensor, scores: torch.Tensor, state: Any) -> torch.Tensor: ...

    def advance(self, state: Any, tokens: torch.Tensor) -> Any: ...

    def select(self, state: Any, index: torch.Tensor) -> Any: ...


def _as_tensor(array: Any, device: torch.device | str | None) -> torch.Tensor:
    if isinstance(array, torch.Tensor):
        return array.to(device=device, dtype=torch.int64)
    return torch.as_tensor(np.asarray(array, dtype=np.int64), device=device)


class TrieLogitsProcessor:
    """Vectorised trie constraint over a CSR transition table (root = node 0).

    ``table`` has ``offsets`` (num_nodes+1,), ``tokens`` (E,) sorted ascending within each node, and
    ``children`` (E,). An extra *sink* node without children absorbs rows that took a forbidden token
    (only possible for rows whose every continuation was already -inf), so they stay dead.
    """

    needs_sequences = False  # state-driven: the beam loop need not materialise the rows

    def __init__(self, table: Any, device: torch.device | str | None = None, *,
                 max_fanout_entries: int = 1 << 22):
        offsets = _as_tensor(table.offsets, device)
        self.tokens = _as_tensor(table.tokens, device)
        self.children = _as_tensor(table.children, device)
        self.num_nodes = int(offsets.numel() - 1)
        if self.num_nodes < 1 or self.tokens.numel() != self.children.numel():
            raise GraceError("malformed trie transition table (offsets/tokens/children sizes disagree)")
        self.sink = self.num_nodes
        self.offsets = torch.cat([offsets, offsets[-1:]])  # sink: empty slice
        self.counts = self.offsets[1:] - self.offsets[:-1]
        # node of each edge, and globally sorted keys node * stride + token for one searchsorted per step
        self.stride = int(self.tokens.max().item()) + 1 if self.tokens.numel() else 1
        edge_node = torch.repeat_interleave(torch.arange(self.num_nodes, device=offsets.device), self.counts[:-1])
        self.keys = edge_node * self.stride + self.tokens
        self._build_fanout(edge_node, max_fanout_entries)

    def _build_fanout(self, edge_node: torch.Tensor, budget: int) -> None:
        """Dense (nodes+1, F) tables of each node's child tokens and child nodes (F = the largest fan-out;
        padding: token 0 → the sink), so a beam step gathers F candidates per row instead of scanning the
        vocabulary. Skipped (``fanout_tokens`` None) when nodes × F exceeds ``budget`` (e.g. 1M atomic ids
        under one root): the beam loop then masks the full vocabulary."""
        self.fanout = int(self.counts.max().item()) if self.tokens.numel() else 0
        self.fanout_tokens = self.fanout_children = None
        if self.fanout == 0 or (self.num_nodes + 1) * self.fanout > budget:
            return
        device = self.tokens.device
        within = torch.arange(self.tokens.numel(), device=device) - self.offsets[edge_node]
        self.fanout_tokens = torch.zeros((self.num_nodes + 1, self.fanout), dtype=torch.int64, device=device)
        self.fanout_children = torch.full_like(self.fanout_tokens, self.sink)
        self.fanout_tokens[edge_node, within] = self.tokens
        self.fanout_children[edge_node, within] = self.children

    @property
    def device(self) -> torch.device:
        return self.tokens.device

    def candidates(self, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
        """(rows, F) child tokens and child nodes of each row's node (padding: token 0 → the sink), or None
        without a fan-out table. Candidates are in token order, as the vocabulary-wide path ranks them."""
        if self.fanout_tokens is None:
            return None
        return self.fanout_tokens[state], self.fanout_children[state]

    def init_state(self, n_rows: int, device: torch.device | None = None) -> torch.Tensor:
        return torch.zeros(n_rows, dtype=torch.int64, device=device or self.device)

    def allowed_mask_indices(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, token) index pairs of every allowed transition of every row, built without a row loop."""
        starts = self.offsets[nodes]
        counts = self.counts[nodes]
        rows = torch.repeat_interleave(torch.arange(nodes.numel(), device=nodes.device), counts)
        # position of each edge within its row's slice: arange(total) - first index of the row's block
        block_start = torch.cumsum(counts, 0) - counts
        within = torch.arange(rows.numel(), device=nodes.device) - block_start[rows]
        return rows, self.tokens[starts[rows] + within]

    def apply(self, sequences: torch.Tensor | None, scores: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """Scores with every token outside the trie set to -inf, IN PLACE (one gather, one fill, one scatter:
        no (rows, vocab) mask is allocated)."""
        rows, tokens = self.allowed_mask_indices(state)
        tokens = tokens.clamp_max(scores.shape[-1] - 1)  # ids beyond the LM's vocab cannot be emitted anyway
        kept = scores[rows, tokens]
        scores.fill_(float("-inf"))
        scores[rows, tokens] = kept
        return scores

    def advance(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child node of each (node, token) pair; the sink when the token is not a child."""
        query = state * self.stride + tokens
        pos = torch.searchsorted(self.keys, query).clamp_max(max(self.keys.numel() - 1, 0))
        if self.keys.numel() == 0:
            return torch.full_like(state, self.sink)
        found = (self.keys[pos] == query) & (state != self.sink) & (tokens < self.stride)
        return torch.where(found, self.children[pos], torch.full_like(state, self.sink))

    def select(self, state: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return state[index]


class PrefixAllowedReference:
    """GENRE-style constraint: ``prefix_allowed_tokens_fn(batch_id, sent) = trie.get(generated suffix)``.

    ``prompt_len`` is the (left-padded) prompt length; every row's generated tokens start there.
    Stateless: it reads each row's sequence, so beam re-ordering needs no bookkeeping.
    """

    needs_sequences = True
    sink = -1  # stateless: no dead-row state

    def __init__(self, trie: Any, prompt_len: int):
        self.trie = trie
        self.prompt_len = prompt_len

    def prefix_allowed_tokens_fn(self, batch_id: int, sent: torch.Tensor) -> list[int]:
        return list(self.trie.get(sent[self.prompt_len:].tolist()))

    def init_state(self, n_rows: int, device: torch.device | None = None) -> None:
        return None

    def candidates(self, state: Any) -> None:
        """None: the reference masks the whole vocabulary."""
        return

    def apply(self, sequences: torch.Tensor, scores: torch.Tensor, state: Any = None) -> torch.Tensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, sent in enumerate(sequences):
            allowed = self.prefix_allowed_tokens_fn(row, sent)
            if allowed:
                mask[row, allowed] = 0.0
        return scores + mask

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """HF ``LogitsProcessor`` signature, so the reference also drives ``model.generate``."""
        return self.apply(input_ids, scores)

    def advance(self, state: Any, tokens: torch.Tensor) -> None:
        return None

    def select(self, state: Any, index: torch.Tensor) -> None:
        return None
