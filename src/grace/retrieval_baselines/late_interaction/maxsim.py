"""MaxSim (ColBERT late interaction): score(q, d) = Σ_i max_j ⟨q_i, d_j⟩ over valid query/doc tokens."""

from __future__ import annotations

import torch


def maxsim(q: torch.Tensor, d: torch.Tensor, d_mask: torch.Tensor, q_mask: torch.Tensor | None = None,
           *, doc_chunk: int = 1024) -> torch.Tensor:
    """All-pairs MaxSim: ``q`` (Nq, Lq, D), ``d`` (Nd, Ld, D), boolean masks → scores (Nq, Nd).

    Padded doc tokens never win a max; padded query tokens add nothing. Docs are processed in chunks of
    ``doc_chunk`` so the (Nq, chunk, Lq, Ld) similarity tensor stays small.
    """
    if q.dim() != 3 or d.dim() != 3 or q.shape[-1] != d.shape[-1]:
        raise ValueError(f"maxsim needs (Nq, Lq, D) and (Nd, Ld, D) tensors, got {tuple(q.shape)}, {tuple(d.shape)}")
    d = d.to(q.dtype)
    outs = []
    for start in range(0, d.shape[0], doc_chunk):
        dc, mc = d[start:start + doc_chunk], d_mask[start:start + doc_chunk].bool()
        sim = torch.einsum("qid,njd->qnij", q, dc)
        sim = sim.masked_fill(~mc[None, :, None, :], float("-inf")).amax(dim=-1)  # (Nq, n, Lq)
        sim = sim.masked_fill(torch.isinf(sim), 0.0)  # docs with no valid token score 0
        if q_mask is not None:
            sim = sim * q_mask[:, None, :].to(sim.dtype)
        outs.append(sim.sum(dim=-1))
    return torch.cat(outs, dim=1) if outs else q.new_zeros(q.shape[0], 0)


def pad_packed(packed: torch.Tensor, lengths: torch.Tensor | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(ΣL, D) packed token embeddings + per-doc lengths → padded (N, Lmax, D) and a boolean mask."""
    lengths = torch.as_tensor(lengths, dtype=torch.long)
    n, lmax = len(lengths), int(lengths.max()) if len(lengths) else 0
    mask = torch.arange(lmax)[None, :] < lengths[:, None]
    out = packed.new_zeros(n, lmax, packed.shape[-1])
    out[mask] = packed
    return out, mask


def pack_padded(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """Inverse of :func:`pad_packed`: keep the valid tokens, return (ΣL, D) and the lengths."""
    mask = mask.bool()
    return x[mask], mask.sum(dim=1).tolist()
