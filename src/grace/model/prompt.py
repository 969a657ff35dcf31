"""The GRACE prompt: the one definition of what the model reads, shared by training and inference.

Sequences are concatenated token-id lists, never a re-tokenised joined string:

- i2id (memorise): ``<image> id {ID}<|endofchunk|>`` with the image's features;
- t2id (retrieve): ``caption:{query}<image> id {ID}<|endofchunk|>`` with the *null image*
  (:meth:`grace.model.FlamingoModel.null_vision_features`: zeros, ``n_visual_tokens`` × ``vis_dim``).

Rows are left-padded so that every target ends its row, in training as at inference; positions count
real tokens only. Training (``grace.train.data``) and inference (``grace.infer.retriever``) both build
their inputs here, and a test asserts the two give identical model inputs for one query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100
QUERY_PREFIX = "caption:"
ID_CUE = "id"


def prompt_ids(tokenizer: Any, text: str | None = None) -> list[int]:
    """Token ids of the prompt: the t2id prompt for a query ``text``, the i2id prompt when it is None/""."""
    prompt = list(tokenizer.encode_text(QUERY_PREFIX + text)) if text else []
    return prompt + [tokenizer.image_token_id] + list(tokenizer.encode_text(ID_CUE))


def target_ids(tokenizer: Any, identifier: str) -> list[int]:
    """The identifier's tokens followed by ``<|endofchunk|>`` (what is generated, and what is labelled)."""
    return list(tokenizer.encode_identifier(identifier)) + [tokenizer.eoc_token_id]


def training_sequence(tokenizer: Any, identifier: str, text: str | None) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of one sample: only the identifier and the final end-of-chunk carry labels."""
    prompt, target = prompt_ids(tokenizer, text), target_ids(tokenizer, identifier)
    return prompt + target, [IGNORE_INDEX] * len(prompt) + target


def left_pad(rows: Sequence[Sequence[int]], pad_id: int,
             labels: Sequence[Sequence[int]] | None = None) -> dict[str, torch.Tensor]:
    """Left-pad token rows → ``lang_x``, ``attention_mask``, ``position_ids`` (0 at each row's first real
    token), and ``labels`` (IGNORE_INDEX on padding) when given."""
    if not rows:
        raise ValueError("left_pad needs at least one row")
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
            mask[i, width - len(row):] = 1
    out = {"lang_x": ids, "attention_mask": mask, "position_ids": (mask.cumsum(-1) - 1).clamp_min(0)}
    if labels is not None:
        lab = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(labels):
            if row:
                lab[i, width - len(row):] = torch.tensor(list(row), dtype=torch.long)
        out["labels"] = lab
    return out
