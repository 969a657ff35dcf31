"""Shared builders for the grace.model tests (tiny random models, no downloads)."""

from __future__ import annotations

import torch
from torch import nn

VOCAB, IMAGE, EOC, PAD = 260, 256, 257, 258


def tiny_model(**overrides):
    from grace.model import create_model

    kwargs = dict(vocab_size=VOCAB, image_token_id=IMAGE, eoc_token_id=EOC, pad_token_id=PAD)
    kwargs.update(overrides)
    return create_model("tiny", **kwargs).eval()


def activate_gates(model, value: float = 0.5) -> None:
    """Open the tanh gates (fresh ones are zero, i.e. the cross-attention is a no-op)."""
    with torch.no_grad():
        for block in model.gated_cross_attn_layers:
            if block is not None:
                block.attn_gate.fill_(value)
                block.ff_gate.fill_(value)


def prompt(batch: int = 2, length: int = 10, image_at: tuple[int, ...] = (3,), seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 250, (batch, length), generator=g)
    for pos in image_at:
        ids[:, pos] = IMAGE
    return ids


def features(batch: int = 2, images: int = 1, seed: int = 1, tokens: int = 4, dim: int = 32) -> torch.Tensor:
    return torch.randn(batch, images, tokens, dim, generator=torch.Generator().manual_seed(seed))


class PatchVisual(nn.Module):
    """A tiny conv 'vision tower': (N, 3, 16, 16) → (N, 4, dim) tokens (or (None, tokens) like open_clip)."""

    def __init__(self, dim: int = 32, as_tuple: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=8, stride=8)
        self.dim = dim
        self.as_tuple = as_tuple

    def forward(self, pixels: torch.Tensor):
        tokens = self.proj(pixels).flatten(2).transpose(1, 2)
        return (None, tokens) if self.as_tuple else tokens
