"""MaxSim against a brute-force loop, and the exact searcher's packed scoring against MaxSim."""

from __future__ import annotations

import torch

from grace.retrieval_baselines.late_interaction.index import ExactSearcher
from grace.retrieval_baselines.late_interaction.maxsim import maxsim, pack_padded, pad_packed


def _brute(q, q_mask, d, d_mask):
    out = torch.zeros(len(q), len(d))
    for a in range(len(q)):
        for b in range(len(d)):
            total = 0.0
            for i in range(q.shape[1]):
                if not q_mask[a, i]:
                    continue
                total += max(float(q[a, i] @ d[b, j]) for j in range(d.shape[1]) if d_mask[b, j])
            out[a, b] = total
    return out


def test_maxsim_matches_brute_force_with_masks():
    g = torch.Generator().manual_seed(0)
    q, d = torch.randn(3, 5, 8, generator=g), torch.randn(7, 6, 8, generator=g)
    q_mask = torch.rand(3, 5, generator=g) > 0.3
    d_mask = torch.rand(7, 6, generator=g) > 0.3
    q_mask[:, 0] = d_mask[:, 0] = True
    d[d_mask.logical_not()] = 100.0  # padded doc tokens must never win a max
    expected = _brute(q, q_mask, d, d_mask)
    assert torch.allclose(maxsim(q, d, d_mask, q_mask), expected, atol=1e-4)
    assert torch.allclose(maxsim(q, d, d_mask, q_mask, doc_chunk=2), expected, atol=1e-4)


def test_pack_pad_roundtrip_and_exact_searcher():
    g = torch.Generator().manual_seed(1)
    d = torch.randn(9, 6, 8, generator=g)
    d_mask = torch.rand(9, 6, generator=g) > 0.4
    d_mask[:, 0] = True
    packed, lengths = pack_padded(d, d_mask)
    padded, mask = pad_packed(packed, lengths)
    assert torch.equal(mask, torch.arange(6)[None] < mask.sum(1, keepdim=True))
    assert torch.allclose(padded[mask], packed)
    q = torch.randn(4, 8, generator=g)
    reference = maxsim(q[None], d, d_mask)[0]
    rows, scores = ExactSearcher(packed, lengths).search(q, 3)
    assert rows == reference.topk(3).indices.tolist()
    assert torch.allclose(torch.tensor(scores), reference.topk(3).values, atol=1e-4)
