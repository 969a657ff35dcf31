"""The identifier head: an LM output layer that scores only the tokens an identifier can contain.

A generative retriever's targets are identifier tokens (plus the ``<|endofchunk|>`` that closes every
identifier), and its decoder throws away every other logit. The full head still multiplies each hidden
state by the whole vocabulary (SmolLM2: 49K rows); :class:`IdentifierHead` multiplies it by the identifier
rows only. It replaces the LM's output layer and shares its ``weight``/``bias`` Parameters, so state-dict
keys, weight tying with the input embeddings and ZeRO-3's gathering of the layer stay as they were; its
logits are those rows of the full head's logits, in ``token_ids`` order (the *columns*).

Normalisation (``FlamingoConfig.output_head``) is a stated choice:

- ``full``: the plain LM head; log-softmax over the whole vocabulary, masked by the trie (GENRE, GRACE);
- ``ids``: this head; the softmax runs over the identifier vocabulary, the same in training (the loss) and
  in decoding (the beam scores).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from grace.errors import GraceError

OUTPUT_HEADS = ("full", "ids")
IGNORE_INDEX = -100


class IdentifierHead(nn.Linear):
    """The LM's output layer restricted to ``token_ids`` (sorted, unique): logits (..., len(token_ids)).

    Training gathers the rows on every call (their gradients reach the shared weight); with no gradient
    needed (decoding) the gathered rows are kept and reused until the weight changes, so a decode loop
    gathers them once per model, not once per step."""

    def __init__(self, head: nn.Linear, token_ids: Sequence[int]):
        nn.Module.__init__(self)
        ids = sorted({int(t) for t in token_ids})
        if not ids:
            raise GraceError("the identifier head needs at least one identifier token")
        vocab = int(getattr(head.weight, "ds_shape", head.weight.shape)[0])
        if ids[0] < 0 or ids[-1] >= vocab:
            raise GraceError(f"identifier token ids must lie in the vocabulary [0, {vocab}); got {ids[0]}..{ids[-1]}")
        self.in_features, self.out_features = head.in_features, head.out_features
        self.weight = head.weight
        self.bias = head.bias
        device = head.weight.device
        self.register_buffer("token_ids", torch.tensor(ids, dtype=torch.long, device=device), persistent=False)
        column_of = torch.full((vocab,), -1, dtype=torch.long, device=device)
        column_of[self.token_ids] = torch.arange(len(ids), device=device)
        self.register_buffer("column_of", column_of, persistent=False)
        self._rows: tuple[tuple, torch.Tensor, torch.Tensor | None] | None = None

    def rows(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The identifier rows of the weight (and bias), gathered now or reused from the last no-grad call."""
        key = (self.weight.data_ptr(), self.weight._version, self.weight.dtype, self.weight.device)
        if self._rows is not None and self._rows[0] == key and not torch.is_grad_enabled():
            return self._rows[1], self._rows[2]
        weight = self.weight.index_select(0, self.token_ids)
        bias = self.bias.index_select(0, self.token_ids) if self.bias is not None else None
        self._rows = None
        if not torch.is_grad_enabled():
            self._rows = (key, weight, bias)
        return weight, bias

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        weight, bias = self.rows()
        return F.linear(hidden, weight, bias)

    def columns(self, labels: torch.Tensor) -> torch.Tensor:
        """Token-id labels → column labels (``IGNORE_INDEX`` kept); one-line error on a label the head cannot
        score (the model was given a target that is not an identifier)."""
        labelled = labels != IGNORE_INDEX
        cols = self.column_of[labels.clamp(0, self.column_of.numel() - 1)]
        bad = labelled & ((cols < 0) | (labels >= self.column_of.numel()) | (labels < 0))
        if bool(bad.any()):
            token = int(labels[bad][0])
            raise GraceError(f"label token {token} is not an identifier token: the identifier head (output_head "
                             "ids) scores identifier tokens only; train this model with output_head full")
        return torch.where(labelled, cols, torch.full_like(labels, IGNORE_INDEX))

    def check_covers(self, tokens: torch.Tensor) -> None:
        """One-line error when a trie can emit a token this head does not score (the trie and the model were
        built for different identifiers)."""
        tokens = tokens.to(self.column_of.device)
        outside = (tokens >= self.column_of.numel()) | (self.column_of[tokens.clamp_max(self.column_of.numel() - 1)] < 0)
        if bool(outside.any()):
            raise GraceError(f"the trie emits token {int(tokens[outside][0])}, which the model's identifier head "
                             "does not score: the trie and the model were built for different identifiers")

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, vocabulary={self.out_features}, identifier_tokens={self.token_ids.numel()}"


def install_identifier_head(lm: nn.Module, token_ids: Sequence[int]) -> IdentifierHead:
    """Replace ``lm``'s output layer by an :class:`IdentifierHead` over ``token_ids`` (in place)."""
    head = lm.get_output_embeddings()  # an IdentifierHead is a Linear too: a new token set replaces it
    if not isinstance(head, nn.Linear):
        raise GraceError(f"the identifier head needs a linear output layer; {type(lm).__name__}'s is "
                         f"{type(head).__name__}: use output_head full")
    new = IdentifierHead(head, token_ids)
    lm.set_output_embeddings(new)
    return new


def identifier_head(lm: nn.Module) -> IdentifierHead | None:
    """``lm``'s identifier head, or None when its output layer scores the whole vocabulary."""
    head = lm.get_output_embeddings()
    return head if isinstance(head, IdentifierHead) else None
