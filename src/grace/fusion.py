"""Hybrid retrieval: a first retriever's top-``depth`` candidates re-scored by a second one and fused.

As GENIUS-R and WIDE do for generative retrieval: the generative beam proposes candidates (every one a real
image), a dense or late-interaction retriever scores exactly those, and the two scores are fused with a weight
chosen on val (``grace.experiments.hybrid.choose_weight``). ``weight`` 0 is the first retriever alone, 1 the second one's order of the
first one's candidates. Saved as a folder holding ``hybrid.json`` (the two retriever specs and the settings),
so ``grace eval / search / serve --retriever hybrid:DIR`` load it like any retriever.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from grace.config import dataclass_from_dict
from grace.errors import GraceError, InputError
from grace.io_utils import read_json, write_json
from grace.retriever import Hit, Query, Rescorer, Retriever

FUSIONS = ("interpolate", "rrf")
#: reciprocal-rank fusion's constant (Cormack et al., 2009)
RRF_K = 60


@dataclass
class HybridConfig:
    """What ``hybrid.json`` holds: the two retrievers (``KIND:PATH``) and how their scores are fused."""

    first: str
    second: str
    depth: int = 20
    weight: float = 0.5
    fusion: str = "interpolate"
    #: how the weight was chosen (e.g. ``{"split": "val", "recall@1": {...per weight}}``)
    chosen: dict = field(default_factory=dict)

    def check(self) -> HybridConfig:
        if self.fusion not in FUSIONS:
            raise GraceError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSIONS)}")
        if not 0.0 <= self.weight <= 1.0:
            raise GraceError(f"hybrid weight {self.weight} is outside [0, 1]")
        if self.depth < 1:
            raise GraceError(f"hybrid depth {self.depth} must be at least 1")
        return self


@dataclass
class Candidates:
    """Per query: the first retriever's candidates (best first) and both retrievers' scores of each."""

    image_ids: list[list[str]]
    first: list[list[float]]
    second: list[list[float]]


def minmax(scores: Sequence[float]) -> list[float]:
    """Scores rescaled to [0, 1] within one query's candidates (all 1.0 when they are equal)."""
    low, high = min(scores, default=0.0), max(scores, default=0.0)
    return [1.0 if high == low else (s - low) / (high - low) for s in scores]


def _ranks(scores: Sequence[float]) -> list[int]:
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for rank, i in enumerate(order, start=1):
        ranks[i] = rank
    return ranks


def fuse(candidates: Candidates, weight: float, fusion: str = "interpolate") -> list[list[Hit]]:
    """Each query's candidates ordered by ``(1 - weight) * first + weight * second``: min-max normalised scores
    (``interpolate``) or reciprocal ranks (``rrf``). Ties keep the first retriever's order."""
    out = []
    for ids, first, second in zip(candidates.image_ids, candidates.first, candidates.second):
        if fusion == "interpolate":
            a, b = minmax(first), minmax(second)
        else:
            a = [1.0 / (RRF_K + r) for r in _ranks(first)]
            b = [1.0 / (RRF_K + r) for r in _ranks(second)]
        fused = [(1.0 - weight) * x + weight * y for x, y in zip(a, b)]
        order = sorted(range(len(ids)), key=lambda i: (-fused[i], i))
        out.append([Hit(ids[i], fused[i]) for i in order])
    return out


class HybridRetriever(Retriever):
    """``first``'s top-``depth`` candidates, re-scored by ``second`` (a :class:`Rescorer`) and fused."""

    name = "hybrid"

    def __init__(self, first: Retriever, second: Rescorer, config: HybridConfig):
        if not isinstance(second, Rescorer):
            raise GraceError(f"{config.second!r} cannot re-score candidates (a hybrid's second retriever must be "
                             "a dense or late-interaction retriever)")
        self.first, self.second, self.config = first, second, config.check()
        self.name = f"hybrid[{first.name}+{second.name}]"

    def candidates(self, queries: list[Query]) -> Candidates:
        """The first retriever's top-``depth`` hits of every query, with the second retriever's scores."""
        queries = [q if isinstance(q, Query) else Query(text=q) for q in queries]
        hits = self.first.search(queries, self.config.depth)
        ids = [[h.image_id for h in row] for row in hits]
        return Candidates(ids, [[h.score for h in row] for row in hits], self.second.score(queries, ids))

    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        if k > self.config.depth:
            raise GraceError(f"k={k} is more than the hybrid's depth {self.config.depth}: it ranks only the first "
                             f"retriever's top {self.config.depth} (raise --hybrid-depth)")
        if not queries:
            return []
        fused = fuse(self.candidates(queries), self.config.weight, self.config.fusion)
        return [row[:k] for row in fused]

    def save(self, out: str | Path) -> Path:
        """``out/hybrid.json``: the config that rebuilds this retriever."""
        return write_json(Path(out) / "hybrid.json", asdict(self.config))

    @classmethod
    def load(cls, path: str | Path, *, load_part: Callable[..., Retriever], **kwargs) -> HybridRetriever:
        """``path`` = a folder holding ``hybrid.json``; ``load_part(spec, **kw)`` opens its two ``KIND:PATH``
        retrievers (``grace.experiments.retrievers.load_retriever``); ``kwargs`` go to the first (generative)."""
        config_path = Path(path) / "hybrid.json"
        if not config_path.is_file():
            raise InputError("no hybrid.json: not a hybrid retriever folder", path=path)
        config = dataclass_from_dict(HybridConfig, read_json(config_path), source=str(config_path))
        return cls(load_part(config.first, **kwargs), load_part(config.second), config)
