"""Flamingo building blocks (after lucidrains' flamingo-pytorch / OpenFlamingo), with OpenFlamingo's
parameter names so its checkpoints load unchanged: perceiver resampler and gated cross-attention.

All constructors are keyword-only; the tanh gates start at zero so a fresh model equals its LM.
"""

from __future__ import annotations

import torch
from torch import nn


def FeedForward(dim: int, mult: float = 4) -> nn.Sequential:  # noqa: N802 (OpenFlamingo's name/layout)
    """LayerNorm → Linear → GELU → Linear (no biases), indices 0..3 as in OpenFlamingo."""
    inner = int(dim * mult)
    return nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, inner, bias=False), nn.GELU(),
                         nn.Linear(inner, dim, bias=False))


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """(..., n, h*d) → (..., h, n, d)."""
    *lead, n, hd = x.shape
    return x.view(*lead, n, heads, hd // heads).transpose(-3, -2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(..., h, n, d) → (..., n, h*d)."""
    x = x.transpose(-3, -2)
    return x.reshape(*x.shape[:-2], x.shape[-2] * x.shape[-1])


class PerceiverAttention(nn.Module):
    """Latents attend to [media; latents] (Flamingo), or to the media only (``latents_in_keys=False``, the
    Perceiver's cross-attention).

    Over few image tokens (one pooled feature vector), Flamingo's form can collapse: the logits between the
    learned latents grow until every latent attends to the latents only, and the resampler's output stops
    depending on the image (measured on the quick model: the media's attention weight underflowed to exactly
    0 after 300 AdamW steps at lr 2e-3, and the loss with another image's features equalled the loss with
    the true one). With the media as the only keys, every latent reads the image.
    """

    def __init__(self, *, dim: int, dim_head: int = 64, heads: int = 8, latents_in_keys: bool = True):
        super().__init__()
        self.latents_in_keys = latents_in_keys
        self.scale = dim_head ** -0.5
        self.heads = heads
        inner = dim_head * heads
        self.norm_media = nn.LayerNorm(dim)
        self.norm_latents = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def forward(self, x: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """x (b, T, n1, D) media, latents (b, T, n2, D) → (b, T, n2, D)."""
        x = self.norm_media(x)
        latents = self.norm_latents(latents)
        q = self.to_q(latents)
        k, v = self.to_kv(torch.cat((x, latents), dim=-2) if self.latents_in_keys else x).chunk(2, dim=-1)
        q, k, v = (_split_heads(t, self.heads) for t in (q, k, v))
        sim = (q * self.scale) @ k.transpose(-1, -2)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        return self.to_out(_merge_heads(sim.softmax(dim=-1) @ v))


class PerceiverResampler(nn.Module):
    """Resample each image's tokens to ``num_latents`` latents: (b, T, F, v, D) → (b, T, num_latents, D)."""

    def __init__(self, *, dim: int, depth: int = 6, dim_head: int = 64, heads: int = 8, num_latents: int = 64,
                 max_num_media: int | None = None, max_num_frames: int | None = None, ff_mult: float = 4,
                 latents_in_keys: bool = True):
        super().__init__()
        self.latents = nn.Parameter(torch.randn(num_latents, dim))
        self.frame_embs = nn.Parameter(torch.randn(max_num_frames, dim)) if max_num_frames else None
        self.media_time_embs = nn.Parameter(torch.randn(max_num_media, 1, dim)) if max_num_media else None
        self.layers = nn.ModuleList(
            nn.ModuleList([PerceiverAttention(dim=dim, dim_head=dim_head, heads=heads,
                                              latents_in_keys=latents_in_keys),
                           FeedForward(dim, ff_mult)])
            for _ in range(depth)
        )
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, T, F, v, d = x.shape
        if self.frame_embs is not None:
            x = x + self.frame_embs[:F].view(1, 1, F, 1, d)
        x = x.reshape(b, T, F * v, d)
        if self.media_time_embs is not None:
            x = x + self.media_time_embs[:T]
        latents = self.latents.expand(b, T, *self.latents.shape)
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm(latents)


class MaskedCrossAttention(nn.Module):
    """Text attends to visual latents; ``text_time`` (b, n_txt) = 1-based index of the image each text
    token may see (0 = none: its output is zeroed); media j is visible when text_time == j+1
    (``only_attend_immediate_media``) or text_time >= j+1."""

    def __init__(self, *, dim: int, dim_visual: int, dim_head: int = 64, heads: int = 8,
                 only_attend_immediate_media: bool = True):
        super().__init__()
        self.scale = dim_head ** -0.5
        self.heads = heads
        inner = dim_head * heads
        self.norm = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_kv = nn.Linear(dim_visual, inner * 2, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)
        self.only_attend_immediate_media = only_attend_immediate_media

    def media_kv(self, media: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values of the visual latents (b, T_img, n, D) → two (b, h, T_img*n, d): what a decoder
        may compute once per query and reuse at every step (``kv=`` of :meth:`forward`)."""
        b, T_img, n, _ = media.shape
        k, v = self.to_kv(media.reshape(b, T_img * n, -1)).chunk(2, dim=-1)
        return _split_heads(k, self.heads), _split_heads(v, self.heads)

    def forward(self, x: torch.Tensor, media: torch.Tensor, text_time: torch.Tensor,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        T_img, n = media.shape[1:3]
        k, v = kv if kv is not None else self.media_kv(media)
        q = _split_heads(self.to_q(self.norm(x)), self.heads)
        sim = (q * self.scale) @ k.transpose(-1, -2)  # (b, h, n_txt, T_img*n)
        media_time = torch.arange(1, T_img + 1, device=x.device).repeat_interleave(n)
        tt = text_time[:, None, :, None]
        visible = tt == media_time if self.only_attend_immediate_media else tt >= media_time
        sim = sim.masked_fill(~visible, -torch.finfo(sim.dtype).max)
        sim = sim - sim.amax(dim=-1, keepdim=True).detach()
        attn = sim.softmax(dim=-1)
        if self.only_attend_immediate_media:
            attn = attn.masked_fill(tt == 0, 0.0)
        return self.to_out(_merge_heads(attn @ v))


class GatedCrossAttentionBlock(nn.Module):
    """x + tanh(attn_gate)·xattn(x) then x + tanh(ff_gate)·ff(x); gates start at 0."""

    def __init__(self, *, dim: int, dim_visual: int, dim_head: int = 64, heads: int = 8, ff_mult: float = 4,
                 only_attend_immediate_media: bool = True):
        super().__init__()
        self.attn = MaskedCrossAttention(dim=dim, dim_visual=dim_visual, dim_head=dim_head, heads=heads,
                                         only_attend_immediate_media=only_attend_immediate_media)
        self.attn_gate = nn.Parameter(torch.tensor([0.0]))
        self.ff = FeedForward(dim, ff_mult)
        self.ff_gate = nn.Parameter(torch.tensor([0.0]))

    def forward(self, x: torch.Tensor, media: torch.Tensor, text_time: torch.Tensor,
                kv: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        x = self.attn(x, media, text_time, kv) * self.attn_gate.tanh() + x
        return self.ff(x) * self.ff_gate.tanh() + x
