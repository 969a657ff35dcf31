"""Document sources (text passages or images) and bulk encoding of collections and query sets.

A source encodes documents by row number with the model's current weights (gradients flow, so training
uses the same code). :class:`CachedTextDocs` keeps the frozen backbone's token states of every passage
so that several models (or many epochs) re-project them instead of re-running the backbone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from grace.errors import InputError
from grace.retrieval_baselines.late_interaction.maxsim import pad_packed

log = logging.getLogger(__name__)


class TextDocs:
    """Text passages encoded on the fly."""

    kind = "text"

    def __init__(self, texts: Sequence[str]):
        self.texts = list(texts)

    def __len__(self) -> int:
        return len(self.texts)

    def encode(self, model, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode_docs([self.texts[i] for i in rows])


class CachedTextDocs(TextDocs):
    """Text passages whose frozen backbone states are computed once (packed float16)."""

    def __init__(self, texts: Sequence[str], hidden: torch.Tensor, lengths: Sequence[int], keep: torch.Tensor):
        super().__init__(texts)
        self.hidden, self.keep = hidden, keep
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.lengths.cumsum(0)])

    @classmethod
    @torch.no_grad()
    def build(cls, model, texts: Sequence[str], *, batch_size: int = 128, progress: bool = False) -> CachedTextDocs:
        """Run the (frozen) backbone over every passage once, longest-first batches."""
        from tqdm import tqdm

        if model.config.train_backbone:
            raise InputError("cached passages need a frozen backbone (train_backbone=False)")
        order = sorted(range(len(texts)), key=lambda i: -len(texts[i]))
        states, keeps, lengths = [None] * len(texts), [None] * len(texts), [0] * len(texts)
        for start in tqdm(range(0, len(order), batch_size), desc="backbone states", disable=not progress):
            rows = order[start:start + batch_size]
            batch = model.tokenize_docs([texts[i] for i in rows])
            hidden = model.hidden(batch).half().cpu()
            for j, row in enumerate(rows):
                n = int(batch["attention_mask"][j].sum())
                states[row], keeps[row], lengths[row] = hidden[j, :n], batch["doc_mask"][j, :n], n
        return cls(texts, torch.cat(states), lengths, torch.cat(keeps))

    def encode(self, model, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.cat([torch.arange(self.offsets[r], self.offsets[r + 1]) for r in rows])
        hidden, mask = pad_packed(self.hidden[idx].to(model.device), self.lengths[list(rows)])
        keep, _ = pad_packed(self.keep[idx][:, None], self.lengths[list(rows)])
        return F.normalize(model.project(hidden), dim=-1), mask.to(model.device) & keep[..., 0].to(model.device)


class MultimodalDocs(TextDocs):
    """Passages that may carry an image, in the three forms of FLMR's ``index_custom_collection``: text
    only, text + a pre-extracted image feature, text + an image file. Needs a model whose ``encode_docs``
    takes images (an FLMR / PreFLMR checkpoint); each batch encodes each form apart, then pads."""

    def __init__(self, texts: Sequence[str], features: Sequence | None = None, images: Sequence | None = None):
        super().__init__(texts)
        self.features = list(features) if features is not None else [None] * len(self.texts)
        self.images = list(images) if images is not None else [None] * len(self.texts)
        if not len(self.features) == len(self.images) == len(self.texts):
            raise InputError(f"{len(self.texts)} passages but {len(self.features)} feature rows and "
                             f"{len(self.images)} image entries")
        both = [i for i, (f, m) in enumerate(zip(self.features, self.images)) if f is not None and m is not None]
        if both:
            raise InputError("a passage has both image_features and an image: give one", entry=both[0])

    def form(self, row: int) -> str:
        return "features" if self.features[row] is not None else "image" if self.images[row] is not None else "text"

    def encode(self, model, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        forms = [self.form(r) for r in rows]
        if set(forms) != {"text"} and not hasattr(model, "prepare_images"):
            raise InputError("passages with images need an FLMR / PreFLMR checkpoint (index --checkpoint)")
        parts, order = [], []
        for form in ("text", "features", "image"):
            group = [r for r, f in zip(rows, forms) if f == form]
            if not group:
                continue
            texts = [self.texts[r] for r in group]
            if form == "text":
                parts.append(model.encode_docs(texts))
            elif form == "features":
                feats = torch.as_tensor(np.asarray([self.features[r] for r in group], dtype=np.float32))
                parts.append(model.encode_docs(texts, feats))
            else:
                parts.append(model.encode_docs(texts, model.prepare_images([self.images[r] for r in group])))
            order += group
        width = max(d.shape[1] for d, _ in parts)
        d = torch.cat([F.pad(d, (0, 0, 0, width - d.shape[1])) for d, _ in parts])
        mask = torch.cat([F.pad(m, (0, width - m.shape[1])) for _, m in parts])
        position = {r: i for i, r in enumerate(order)}
        back = [position[r] for r in rows]
        return d[back], mask[back]


class ImageDocs:
    """Images as documents, from cached visual tokens (N, T, Dv)."""

    kind = "image"

    def __init__(self, visual: np.ndarray | torch.Tensor):
        self.visual = visual

    def __len__(self) -> int:
        return len(self.visual)

    def encode(self, model, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        return model.encode_image_docs(torch.as_tensor(np.asarray(self.visual[list(rows)], dtype=np.float32)))


class ExpandedImageDocs(ImageDocs):
    """Images as documents expanded with text (document expansion: an image's tags, or the pseudo-queries a
    generative retriever memorises for it): the image's tokens followed by the text's document tokens, so
    MaxSim matches query tokens against both. An image without text keeps only its own tokens."""

    kind = "image+text"

    def __init__(self, visual: np.ndarray | torch.Tensor, texts: Sequence[str]):
        super().__init__(visual)
        if len(texts) != len(visual):
            raise InputError(f"{len(visual)} images but {len(texts)} expansion texts")
        self.texts = [t or "" for t in texts]

    def encode(self, model, rows: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        d_image, m_image = super().encode(model, rows)
        d_text, m_text = model.encode_docs([self.texts[r] for r in rows])
        empty = torch.tensor([not self.texts[r].strip() for r in rows], device=m_text.device)
        m_text = m_text.bool() & ~empty[:, None]
        return (torch.cat([d_image, d_text.to(d_image.dtype)], 1),
                torch.cat([m_image.bool(), m_text.to(m_image.device)], 1))


@torch.no_grad()
def encode_collection(model, source, *, batch_size: int = 64, progress: bool = False
                      ) -> tuple[torch.Tensor, list[int]]:
    """Every document of ``source`` → packed float16 (ΣL, dim) valid tokens + per-document lengths."""
    from tqdm import tqdm

    if len(source) == 0:
        raise InputError("the collection is empty: nothing to index")
    packed, lengths = [], []
    for start in tqdm(range(0, len(source), batch_size), desc="encode docs", disable=not progress):
        d, mask = source.encode(model, list(range(start, min(start + batch_size, len(source)))))
        packed.append(d[mask].half().cpu())
        lengths += mask.sum(1).tolist()
    return torch.cat(packed), lengths


@torch.no_grad()
def encode_query_set(model, texts: Sequence[str | None], visual: np.ndarray | torch.Tensor | None = None, *,
                     batch_size: int = 64) -> list[torch.Tensor]:
    """Queries → one (Lq, dim) float32 tensor of valid tokens each (``visual`` rows align with ``texts``)."""
    out = []
    for start in range(0, len(texts), batch_size):
        vis = None
        if visual is not None:
            vis = torch.as_tensor(np.asarray(visual[start:start + batch_size], dtype=np.float32))
        q, mask = model.encode_queries(texts[start:start + batch_size], vis)
        out += [qi[mi].float().cpu() for qi, mi in zip(q, mask)]
    return out


def visual_tokens(dataset, encoder: str = "efficientnet-lite0", cache_dir: Path | None = None, *,
                  image_ids: Sequence[str] | None = None, progress: bool = False) -> np.ndarray:
    """(N, T, Dv) float16 visual tokens of ``image_ids`` (default: every image, in dataset order).

    The cache always covers the whole dataset, so train/index runs over different splits share it.
    """
    from grace.data_process.features import image_features

    features = image_features(dataset, encoder=encoder, cache_dir=cache_dir, tokens=True, progress=progress)
    return features.rows(list(image_ids)) if image_ids is not None else features.array


def encode_image_files(paths: Sequence[str | Path], encoder) -> np.ndarray:
    """(N, T, Dv) visual tokens of image files (query images); a missing file is a one-line InputError."""
    from grace.data_process.features import open_image

    if not paths:
        return np.zeros((0, 1, encoder.dim), np.float32)
    return encoder.encode_tokens([open_image(p) for p in paths]).numpy()
