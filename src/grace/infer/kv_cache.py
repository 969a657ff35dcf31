"""KV-cache handling for the beam loop: expand a prompt's cache to its beams and re-order beams, on a
transformers ``DynamicCache`` (grows by concatenation each step, re-ordering copies every position), a
legacy tuple cache, or a preallocated ``StaticCache`` (:class:`StaticBeamCache`).

The static layout exploits two facts of beam search: the beams of one query share its prompt, so the
prompt's keys/values never move when beams are re-ordered (only the generated positions do), and every
step writes one position in place, so nothing is concatenated and every tensor keeps its shape and
address (what ``torch.compile`` / CUDA graphs need).
"""

from __future__ import annotations

from typing import Any

import torch

from grace.model.flamingo import MEDIA_COUNT_ATTR

#: per-row tensors a model keeps on its cache object (FlamingoModel: media seen so far per row); they
#: follow the cache rows through beam expansion and re-ordering.
CACHE_ROW_ATTRS = (MEDIA_COUNT_ATTR,)


def _index_row_attrs(source: Any, target: Any, fn) -> None:
    for name in CACHE_ROW_ATTRS:
        value = getattr(source, name, None)
        if torch.is_tensor(value):
            setattr(target, name, fn(value))


def repeat_cache(past: Any, repeats: int) -> Any:
    """Each row's cache repeated ``repeats`` times, contiguously (query rows → beam rows)."""
    if hasattr(past, "batch_repeat_interleave"):
        past.batch_repeat_interleave(repeats)
        _index_row_attrs(past, past, lambda t: t.repeat_interleave(repeats, 0))
        return past
    return tuple(tuple(t.repeat_interleave(repeats, 0) for t in layer) for layer in past)


def reorder_cache(past: Any, beam_idx: torch.Tensor) -> Any:
    """Cache rows re-indexed by flat beam indices (every position copied)."""
    if hasattr(past, "reorder_cache"):
        past.reorder_cache(beam_idx)
        _index_row_attrs(past, past, lambda t: t.index_select(0, beam_idx.to(t.device)))
        return past
    return tuple(tuple(t.index_select(0, beam_idx) for t in layer) for layer in past)


def static_cache_supported(lm: Any, past: Any) -> bool:
    """Whether a prompt's cache can move into a transformers ``StaticCache`` for ``lm``: a ``DynamicCache``
    of full-attention layers (no sliding windows, no recurrent state) and an LM config to size it."""
    try:
        from transformers.cache_utils import DynamicCache, DynamicLayer, StaticCache  # noqa: F401
    except ImportError:  # pragma: no cover - transformers < 4.56
        return False
    if not isinstance(past, DynamicCache) or getattr(lm, "config", None) is None:
        return False
    return all(type(layer) is DynamicLayer for layer in past.layers)


class StaticBeamCache:
    """A preallocated (rows, heads, prompt + steps, dim) cache for ``rows = queries × beams``.

    Built from the prompt's ``DynamicCache`` (one row per query), expanded once to the beams. A step writes
    its one position in place (transformers' ``StaticCache.update``); :meth:`reorder` moves the generated
    positions only. The attention mask is preallocated to the full length and opened one column per step.
    """

    def __init__(self, lm: Any, prompt_cache: Any, prompt_mask: torch.Tensor, num_beams: int, max_new_tokens: int):
        from transformers.cache_utils import StaticCache

        self.prompt_len = prompt_mask.shape[1]
        self.length = self.prompt_len  # positions filled so far (host-side: no sync to read it)
        max_len = self.prompt_len + max_new_tokens
        self.cache = StaticCache(config=lm.config, max_cache_len=max_len)
        for index, layer in enumerate(prompt_cache.layers):
            self.cache.update(layer.keys.repeat_interleave(num_beams, 0),
                              layer.values.repeat_interleave(num_beams, 0), index)
        _index_row_attrs(prompt_cache, self.cache, lambda t: t.repeat_interleave(num_beams, 0))
        rows = prompt_mask.shape[0] * num_beams
        self.mask = prompt_mask.new_zeros((rows, max_len))
        self.mask[:, :self.prompt_len] = prompt_mask.repeat_interleave(num_beams, 0)

    def open_next(self) -> torch.Tensor:
        """Open the mask column of the position the next step writes; return the full-length mask."""
        if self.length >= self.mask.shape[1]:
            raise RuntimeError(f"static cache full: {self.length} positions (prompt {self.prompt_len})")
        self.mask[:, self.length] = 1
        self.length += 1
        return self.mask

    def reorder(self, beam_idx: torch.Tensor) -> None:
        """Re-index the generated positions' rows; the prompt's positions are equal across a query's beams."""
        start, stop = self.prompt_len, self.length
        if stop > start:
            for layer in self.cache.layers:
                layer.keys[:, :, start:stop] = layer.keys[beam_idx, :, start:stop]
                layer.values[:, :, start:stop] = layer.values[beam_idx, :, start:stop]
        _index_row_attrs(self.cache, self.cache, lambda t: t.index_select(0, beam_idx.to(t.device)))
