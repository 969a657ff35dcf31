"""transformers renamed the KV cache argument and output field (``past_key_values`` → ``cache``, 5.24);
these helpers let the model and the decoders work with either spelling, and with LMs that lack newer
arguments such as ``logits_to_keep``."""

from __future__ import annotations

import functools
import inspect
from typing import Any


@functools.lru_cache(maxsize=None)
def _forward_params(cls: type) -> frozenset[str]:
    return frozenset(inspect.signature(cls.forward).parameters)


def takes_logits_to_keep(model: Any) -> bool:
    """Whether ``model.forward`` can compute logits for the last positions only (``logits_to_keep``)."""
    return "logits_to_keep" in _forward_params(type(model))


def cache_kwarg(model: Any) -> str:
    """Name of the KV-cache keyword of ``model.forward``: ``cache`` (new) or ``past_key_values``."""
    return "cache" if "cache" in _forward_params(type(model)) else "past_key_values"


def cache_from_kwargs(kwargs: dict) -> Any:
    """The KV cache passed to a forward call under either name (``None`` if absent)."""
    cache = kwargs.get("cache")
    return cache if cache is not None else kwargs.get("past_key_values")


def output_cache(output: Any) -> Any:
    """The KV cache of a model output under either field name (``None`` if absent)."""
    for name in ("cache", "past_key_values"):
        value = output.get(name) if isinstance(output, dict) else getattr(output, name, None)
        if value is not None:
            return value
    return None
