"""The one retriever interface that the evaluation harness scores.

The generative retriever (``grace.infer``), CLIP+FAISS (``grace.retrieval_baselines.clip_faiss``) and
late interaction (``grace.retrieval_baselines.late_interaction``) all subclass :class:`Retriever`, and
``grace eval --retriever KIND:PATH`` loads any of them through :func:`load_retriever`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Query:
    """A query: text, image, or both (multimodal queries for late interaction)."""

    text: str | None = None
    image: Path | None = None

    def __post_init__(self) -> None:
        if (self.text is None or not self.text.strip()) and self.image is None:
            from grace.errors import InputError

            raise InputError("empty query: give a non-empty text or an image")


@dataclass(frozen=True)
class Hit:
    """One retrieved item and its score (higher is better)."""

    image_id: str
    score: float


class Retriever(ABC):
    """Ranks corpus images for queries. Subclasses override :meth:`search` and :meth:`load`."""

    name: str = "retriever"
    #: what a query may hold ("text", "image"); the search server offers image queries to those with "image"
    modalities: tuple[str, ...] = ("text",)

    @abstractmethod
    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        """Top-``k`` distinct hits per query, best first."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, **kwargs) -> "Retriever":
        """Load a retriever from the artefact folder its builder wrote."""


class Rescorer(Retriever):
    """A retriever that can also score given images for a query: the second stage of a hybrid
    (:class:`grace.fusion.HybridRetriever` re-scores another retriever's candidates with it)."""

    @abstractmethod
    def score(self, queries: list[Query], candidates: list[list[str]]) -> list[list[float]]:
        """The score (higher is better, on :meth:`search`'s scale) of each query's candidate images; an image
        outside this retriever's corpus is an :class:`~grace.errors.InputError`."""


#: kind → "module:Class"; each class implements :meth:`Retriever.load`.
RETRIEVERS: dict[str, str] = {
    "generative": "grace.infer.retriever:GenerativeRetriever",
    "clip_faiss": "grace.retrieval_baselines.clip_faiss.retriever:ClipFaissRetriever",
    "late_interaction": "grace.retrieval_baselines.late_interaction.retriever:LateInteractionRetriever",
    "bm25": "grace.retrieval_baselines.lexical.bm25:BM25Retriever",
    "random": "grace.retriever:RandomRetriever",
    "hybrid": "grace.fusion:HybridRetriever",
}


def load_retriever(spec: str, **kwargs) -> Retriever:
    """Load ``KIND:PATH`` (e.g. ``generative:runs/emoji/ckpt/structured/export``)."""
    from grace.errors import GraceError

    kind, _, path = spec.partition(":")
    if kind not in RETRIEVERS:
        raise GraceError(f"unknown retriever kind {kind!r} in {spec!r}; known: {sorted(RETRIEVERS)}")
    module_name, _, class_name = RETRIEVERS[kind].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls.load(path, **kwargs)


class RandomRetriever(Retriever):
    """Uniformly random ranking of a dataset's images: the chance baseline of every results table."""

    name = "random"

    def __init__(self, image_ids: list[str], seed: int = 0):
        import numpy as np

        self.image_ids = list(image_ids)
        self._rng = np.random.default_rng(seed)

    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        k = min(k, len(self.image_ids))
        out = []
        for _ in queries:
            picks = self._rng.choice(len(self.image_ids), size=k, replace=False)
            out.append([Hit(self.image_ids[i], float(k - r)) for r, i in enumerate(picks)])
        return out

    @classmethod
    def load(cls, path: str | Path, split: str = "test", seed: int = 0, **_) -> "RandomRetriever":
        """``path`` is a dataset.json; the corpus is the images of ``split``."""
        from grace.data_process.dataset import load_karpathy

        dataset = load_karpathy(path, check_files=False)
        return cls([r.image_id for r in dataset.split(split)], seed=seed)
