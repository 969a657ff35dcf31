"""The one retriever interface that the evaluation harness scores.

The generative retriever (``grace.infer``), CLIP+FAISS (``grace.retrieval_baselines.clip_faiss``), late
interaction (``grace.retrieval_baselines.late_interaction``), BM25, random and the hybrid all subclass
:class:`Retriever`; ``grace.experiments.retrievers.load_retriever`` loads any of them from ``KIND:PATH``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from grace.errors import InputError


@dataclass(frozen=True)
class Query:
    """A query: text, image, or both (multimodal queries for late interaction)."""

    text: str | None = None
    image: Path | None = None

    def __post_init__(self) -> None:
        if (self.text is None or not self.text.strip()) and self.image is None:
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

    def search_explained(self, queries: list[Query], k: int) -> list[list[Hit]]:
        """:meth:`search`, with whatever explains each hit (the generative retriever's hits carry the identifier
        generated and its trie path); by default the plain hits."""
        return self.search(queries, k)

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path, **kwargs) -> Retriever:
        """Load a retriever from the artefact folder its builder wrote."""


class Rescorer(Retriever):
    """A retriever that can also score given images for a query: the second stage of a hybrid
    (:class:`grace.fusion.HybridRetriever` re-scores another retriever's candidates with it)."""

    @abstractmethod
    def score(self, queries: list[Query], candidates: list[list[str]]) -> list[list[float]]:
        """The score (higher is better, on :meth:`search`'s scale) of each query's candidate images; an image
        outside this retriever's corpus is an :class:`~grace.errors.InputError`."""

    def one_batch(self) -> AbstractContextManager:
        """A block in which :meth:`search` and :meth:`score` are called on the same queries (a hybrid's union
        pool): a retriever may embed them once there. By default nothing is shared."""
        return nullcontext()
