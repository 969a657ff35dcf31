"""Hybrid retrieval: a first retriever's top-``depth`` candidates re-scored by a second one and fused.

As GENIUS-R and WIDE do for generative retrieval: the generative beam proposes candidates (every one a real
image), a dense or late-interaction retriever scores exactly those, and the two scores are fused with a weight
chosen on val (``grace.experiments.hybrid.choose_weight``). ``weight`` 0 is the first retriever alone, 1 the second one's order of the
first one's candidates. With ``pool="union"`` the candidates are the first retriever's top ``depth`` and the
second's top ``depth`` together (as hybrid lexical + dense retrieval fuses two ranked lists): the second
retriever's recall is kept, and a candidate the first did not return gets no first-retriever score (the
floor: 0 after min-max, no reciprocal rank). Saved as a folder holding ``hybrid.json`` (the two retriever
specs and the settings), so ``grace eval / search / serve --retriever hybrid:DIR`` load it like any retriever.
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
#: where a hybrid's candidates come from: the first retriever's top ``depth``, or both retrievers' tops
POOLS = ("first", "union")
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
    pool: str = "first"
    #: how the weight was chosen (e.g. ``{"split": "val", "recall@1": {...per weight}}``)
    chosen: dict = field(default_factory=dict)

    def check(self) -> HybridConfig:
        if self.fusion not in FUSIONS:
            raise GraceError(f"unknown fusion {self.fusion!r}; known: {', '.join(FUSIONS)}")
        if self.pool not in POOLS:
            raise GraceError(f"unknown candidate pool {self.pool!r}; known: {', '.join(POOLS)}")
        if not 0.0 <= self.weight <= 1.0:
            raise GraceError(f"hybrid weight {self.weight} is outside [0, 1]")
        if self.depth < 1:
            raise GraceError(f"hybrid depth {self.depth} must be at least 1")
        return self


@dataclass
class Candidates:
    """Per query: the candidates (the first retriever's, best first, then any only the second returned) and
    both retrievers' scores of each; ``first`` is None for a candidate the first retriever did not return."""

    image_ids: list[list[str]]
    first: list[list[float | None]]
    second: list[list[float]]

    def of_first(self) -> Candidates:
        """Only the first retriever's candidates (the ``first`` pool of a ``union`` one)."""
        keep = [[i for i, score in enumerate(row) if score is not None] for row in self.first]
        return Candidates([[ids[i] for i in k] for ids, k in zip(self.image_ids, keep)],
                          [[row[i] for i in k] for row, k in zip(self.first, keep)],
                          [[row[i] for i in k] for row, k in zip(self.second, keep)])


def pool_candidates(queries: list[Query], first_hits: list[list[Hit]], second: Rescorer, *, pool: str = "first",
                    depth: int | None = None) -> Candidates:
    """The candidates of ``pool``: the first retriever's hits, and for ``union`` also ``second``'s top ``depth``
    (default: as many as the first returned at most), every one scored by ``second``."""
    ids = [[h.image_id for h in row] for row in first_hits]
    first = [[h.score for h in row] for row in first_hits]
    if pool not in POOLS:
        raise GraceError(f"unknown candidate pool {pool!r}; known: {', '.join(POOLS)}")
    with second.one_batch():  # the union's search and the re-scoring read the same query vectors
        if pool == "union":
            depth = depth or max((len(row) for row in ids), default=0)
            for row_ids, row_scores, hits in zip(ids, first, second.search(queries, depth) if depth else []):
                seen = set(row_ids)
                for hit in hits:
                    if hit.image_id not in seen:
                        seen.add(hit.image_id)
                        row_ids.append(hit.image_id)
                        row_scores.append(None)
        return Candidates(ids, first, second.score(queries, ids))


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


def _with_floor(scores: Sequence[float | None], normalise: Callable[[list[float]], list[float]]) -> list[float]:
    """``normalise`` over the present scores; a missing one (None) gets 0, the floor of both fusions."""
    present = iter(normalise([s for s in scores if s is not None]))
    return [0.0 if s is None else next(present) for s in scores]


def _reciprocal_ranks(scores: list[float]) -> list[float]:
    return [1.0 / (RRF_K + r) for r in _ranks(scores)]


def fuse(candidates: Candidates, weight: float, fusion: str = "interpolate") -> list[list[Hit]]:
    """Each query's candidates ordered by ``(1 - weight) * first + weight * second``: min-max normalised scores
    (``interpolate``) or reciprocal ranks (``rrf``); a candidate without a first score gets that side's floor,
    0. Ties keep the candidates' order (the first retriever's first)."""
    normalise = minmax if fusion == "interpolate" else _reciprocal_ranks
    out = []
    for ids, first, second in zip(candidates.image_ids, candidates.first, candidates.second):
        a, b = _with_floor(first, normalise), normalise(list(second))
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

    def candidates(self, queries: list[Query], pool: str | None = None) -> Candidates:
        """Every query's candidates of ``pool`` (default: the config's): the first retriever's top ``depth``
        (and for ``union`` the second's top ``depth``), with both retrievers' scores."""
        queries = [q if isinstance(q, Query) else Query(text=q) for q in queries]
        return pool_candidates(queries, self.first.search(queries, self.config.depth), self.second,
                               pool=pool or self.config.pool, depth=self.config.depth)

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
