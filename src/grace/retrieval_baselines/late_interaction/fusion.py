"""Vision → query tokens, three styles (``ModelConfig.fusion``), and images as multi-vector documents.

Every fusion module maps (text query tokens ``t`` (B, L, dim), their mask, visual tokens ``v`` (B, T, Dv))
to (query tokens, mask); the caller L2-normalises.

- ``flmr`` (FLMR / PreFLMR): a mapping network turns the image's global feature into
  ``mapping_tokens`` token embeddings; PreFLMR additionally projects every patch token. Both are
  concatenated to the text query tokens.
- ``retxknow`` (Ret-XKnow): vision-conditioned compression. Each visual token is weighted by its
  relevance to the text tokens (max cosine), and the weighted tokens are compressed into
  ``compressed_tokens`` tokens that are merged (concatenated) into the query.
- ``mire`` (MIRe): fusion-free. Text tokens cross-attend to the visual embeddings (residual update);
  the visual embeddings never receive text signals, and the query keeps its text-token count.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def pool_grid(v: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, T, D) square token map → (B, grid², D) by adaptive average pooling (no-op when sizes match)."""
    side = round(v.shape[1] ** 0.5)
    if grid <= 0 or side * side != v.shape[1] or grid >= side:
        return v
    x = v.transpose(1, 2).reshape(v.shape[0], v.shape[2], side, side)
    return F.adaptive_avg_pool2d(x, grid).flatten(2).transpose(1, 2)


def _proj(in_dim: int, out_dim: int) -> nn.Module:
    return nn.Sequential(nn.LayerNorm(in_dim), nn.Linear(in_dim, out_dim))


class NoFusion(nn.Module):
    """Text-only ColBERT: the image (if any) is ignored."""

    def forward(self, t, t_mask, v=None):
        return t, t_mask


class FLMRFusion(nn.Module):
    """Mapping network (global feature → N tokens) + optional PreFLMR projected patch tokens."""

    def __init__(self, *, visual_dim: int, dim: int, mapping_tokens: int = 8, patch_tokens: bool = True):
        super().__init__()
        self.mapping_tokens, self.dim = mapping_tokens, dim
        hidden = dim * mapping_tokens // 2
        self.mapping = nn.Sequential(nn.LayerNorm(visual_dim), nn.Linear(visual_dim, hidden), nn.GELU(),
                                     nn.Linear(hidden, dim * mapping_tokens))
        self.patches = _proj(visual_dim, dim) if patch_tokens else None

    def forward(self, t, t_mask, v):
        mapped = self.mapping(v.mean(dim=1)).view(v.shape[0], self.mapping_tokens, self.dim)
        parts = [t, mapped] + ([self.patches(v)] if self.patches is not None else [])
        q = torch.cat(parts, dim=1)
        extra = q.shape[1] - t.shape[1]
        return q, torch.cat([t_mask, t_mask.new_ones(t_mask.shape[0], extra)], dim=1)


class RetXKnowFusion(nn.Module):
    """Visual tokens weighted by text relevance, compressed into K tokens merged into the query."""

    def __init__(self, *, visual_dim: int, dim: int, compressed_tokens: int = 8):
        super().__init__()
        self.proj = _proj(visual_dim, dim)
        self.slots = nn.Parameter(torch.randn(compressed_tokens, dim))  # compression queries
        self.out = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.log_tau = nn.Parameter(torch.tensor(-1.0))  # relevance temperature ≈ 0.37

    def relevance(self, t: torch.Tensor, t_mask: torch.Tensor, vp: torch.Tensor) -> torch.Tensor:
        """(B, T) relevance of every visual token: its best cosine with a valid text token."""
        sim = torch.einsum("bld,btd->blt", F.normalize(t, dim=-1), F.normalize(vp, dim=-1))
        sim = sim.masked_fill(~t_mask.bool()[:, :, None], -1.0)
        return sim.amax(dim=1)

    def forward(self, t, t_mask, v):
        vp = self.proj(v)
        rel = self.relevance(t, t_mask, vp)
        log_w = F.log_softmax(rel / self.log_tau.exp(), dim=-1)  # (B, T)
        logits = torch.einsum("kd,btd->bkt", self.slots, vp) * vp.shape[-1] ** -0.5
        assign = torch.softmax(logits + log_w[:, None, :], dim=-1)  # (B, K, T): relevant tokens dominate
        compressed = assign @ vp
        compressed = compressed + self.out(compressed)
        q = torch.cat([t, compressed], dim=1)
        return q, torch.cat([t_mask, t_mask.new_ones(t_mask.shape[0], compressed.shape[1])], dim=1)


class MIReFusion(nn.Module):
    """Text tokens cross-attend to (text-agnostic) visual embeddings; residual update, same token count."""

    def __init__(self, *, visual_dim: int, dim: int, heads: int = 4):
        super().__init__()
        self.proj = _proj(visual_dim, dim)
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out = nn.Linear(dim, dim)

    def forward(self, t, t_mask, v):
        vp = self.proj(v)  # visual embeddings: computed from the image alone
        fused, _ = self.attn(self.norm(t), vp, vp, need_weights=False)
        return t + self.out(fused), t_mask


def create_fusion(config) -> nn.Module:
    """The fusion module named by ``config.fusion`` (a :class:`ModelConfig`)."""
    if config.fusion == "none":
        return NoFusion()
    if config.fusion == "flmr":
        return FLMRFusion(visual_dim=config.visual_dim, dim=config.dim, mapping_tokens=config.mapping_tokens,
                          patch_tokens=config.patch_tokens)
    if config.fusion == "retxknow":
        return RetXKnowFusion(visual_dim=config.visual_dim, dim=config.dim,
                              compressed_tokens=config.compressed_tokens)
    if config.fusion == "mire":
        return MIReFusion(visual_dim=config.visual_dim, dim=config.dim, heads=config.heads)
    from grace.errors import GraceError

    raise GraceError(f"unknown fusion {config.fusion!r}; use none, flmr, retxknow or mire")


class ImageDocEncoder(nn.Module):
    """An image as a multi-vector document: projected visual tokens plus one global token."""

    def __init__(self, *, visual_dim: int, dim: int):
        super().__init__()
        self.tokens = _proj(visual_dim, dim)
        self.global_token = _proj(visual_dim, dim)

    def forward(self, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        d = torch.cat([self.global_token(v.mean(dim=1))[:, None], self.tokens(v)], dim=1)
        return F.normalize(d, dim=-1), torch.ones(d.shape[:2], dtype=torch.bool, device=d.device)
