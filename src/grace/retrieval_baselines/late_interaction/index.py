"""ColBERT-style ``Indexer`` / ``Searcher`` facades over a late-interaction model.

An index folder holds ``config.json`` (backend, nbits, model folder, document kind, timings),
``collection.json`` (document ids and, for passages, texts), ``embeddings.pt`` (packed float16 token
embeddings + lengths: the exact reference and the fallback) and, for the ``plaid`` backend, ``plaid/``
(a colbert-ai PLAID index, see :mod:`.plaid`). When PLAID cannot run, the searcher says why (logged)
and uses exact MaxSim.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from grace.errors import InputError
from grace.io_utils import atomic_path, folder_bytes, read_json, write_json

log = logging.getLogger(__name__)


class ExactSearcher:
    """Brute-force MaxSim over every document (the reference PLAID is measured against).

    Scores packed tokens in one matmul, then takes each document's max per query token with
    ``torch.segment_reduce`` (no padding).
    """

    def __init__(self, packed: torch.Tensor, lengths: Sequence[int]):
        self.packed = packed.float()
        self.lengths = torch.as_tensor(lengths, dtype=torch.long)

    @property
    def num_docs(self) -> int:
        return len(self.lengths)

    def scores(self, q: torch.Tensor) -> torch.Tensor:
        """(num_docs,) MaxSim scores of one query (Lq, dim)."""
        sims = self.packed @ q.float().T  # (ΣL, Lq)
        return torch.segment_reduce(sims, "max", lengths=self.lengths, axis=0).sum(dim=1)

    def search(self, q: torch.Tensor, k: int) -> tuple[list[int], list[float]]:
        top = self.scores(q).topk(min(k, self.num_docs))
        return top.indices.tolist(), top.values.tolist()


class Indexer:
    """Encodes a collection with ``model`` and writes an index folder (``config.json`` beside it)."""

    def __init__(self, *, model, model_dir: str | Path | None = None, backend: str = "plaid", nbits: int = 2,
                 kmeans_niters: int = 4, seed: int = 0, batch_size: int = 64):
        self.model, self.model_dir = model, model_dir
        self.backend, self.nbits, self.kmeans_niters, self.seed = backend, nbits, kmeans_niters, seed
        self.batch_size = batch_size

    def index_custom_collection(self, out: str | Path, source, doc_ids: Sequence[str], *,
                                packed: tuple[torch.Tensor, list[int]] | None = None, progress: bool = False,
                                extra: dict | None = None) -> Path:
        """Index ``source`` (a :mod:`.collection` document source) under ``out``; ``doc_ids`` name its rows.

        ``packed`` = already encoded (embeddings, lengths), e.g. shared between indexes of several nbits;
        ``extra`` = more to record in the index's config.json (e.g. where an expansion's texts came from).
        """
        from grace.retrieval_baselines.late_interaction.collection import encode_collection

        if len(doc_ids) != len(source):
            raise InputError(f"{len(doc_ids)} document ids for {len(source)} documents")
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        emb, lengths = packed or encode_collection(self.model, source, batch_size=self.batch_size, progress=progress)
        encode_s = time.perf_counter() - start
        with atomic_path(out / "embeddings.pt", suffix=".pt") as tmp:
            torch.save({"embeddings": emb.half(), "lengths": torch.as_tensor(lengths)}, tmp)
        collection = {"ids": list(doc_ids), "kind": source.kind}
        if source.kind == "text":
            collection["texts"] = list(source.texts)
        write_json(out / "collection.json", collection)
        config = {"backend": self.backend, "nbits": self.nbits, "kmeans_niters": self.kmeans_niters,
                  "model": str(Path(self.model_dir).resolve()) if self.model_dir else None, "kind": source.kind,
                  "num_docs": len(doc_ids), "num_embeddings": len(emb), "dim": int(emb.shape[1]),
                  "encode_s": encode_s, "model_kind": type(self.model).__name__, **(extra or {})}
        if self.backend == "plaid":
            from grace.retrieval_baselines.late_interaction.plaid import build_plaid

            start = time.perf_counter()
            meta = build_plaid(out / "plaid", emb, lengths, nbits=self.nbits, kmeans_niters=self.kmeans_niters,
                               seed=self.seed)
            config.update(plaid_build_s=time.perf_counter() - start, num_partitions=meta["num_partitions"],
                          plaid_bytes=folder_bytes(out / "plaid"))
        config["exact_bytes"] = (out / "embeddings.pt").stat().st_size
        write_json(out / "config.json", config)
        log.info("indexed %d %s documents (%d tokens, %s) → %s", len(doc_ids), source.kind, len(emb), self.backend, out)
        return out


class Searcher:
    """Loads an index folder; ``search_custom_collection`` ranks documents for encoded queries."""

    def __init__(self, index_dir: str | Path, *, backend: str | None = None, **plaid_kw):
        index_dir = Path(index_dir)
        if not (index_dir / "config.json").is_file():
            raise InputError("not an index folder (config.json missing; run index first)", path=index_dir)
        self.index_dir = index_dir
        self.config = read_json(index_dir / "config.json")
        self.collection = read_json(index_dir / "collection.json")
        self.backend = backend or self.config["backend"]
        self.impl = None
        if self.backend == "plaid":
            from grace.fallbacks import record_fallback
            from grace.retrieval_baselines.late_interaction.plaid import (
                PlaidSearcher,
                plaid_available,
                unavailable_reason,
            )

            if not (index_dir / "plaid").is_dir():
                record_fallback("late-interaction search", "plaid", "exact", f"{index_dir} has no PLAID index")
            elif not plaid_available():
                record_fallback("late-interaction search", "plaid", "exact", f"PLAID unavailable ({unavailable_reason()})")
            else:
                self.impl = PlaidSearcher(index_dir / "plaid", **plaid_kw)
        if self.impl is None:
            self.backend = "exact"
            saved = torch.load(index_dir / "embeddings.pt", map_location="cpu", weights_only=True)
            self.impl = ExactSearcher(saved["embeddings"], saved["lengths"].tolist())

    @property
    def ids(self) -> list[str]:
        return self.collection["ids"]

    def search_custom_collection(self, queries: Sequence[torch.Tensor], k: int = 10
                                 ) -> list[list[tuple[int, float]]]:
        """Top-``k`` (document row, score) per query; each query is its (Lq, dim) valid token embeddings."""
        k = max(1, min(k, self.impl.num_docs))
        return [list(zip(*self.impl.search(q, k))) for q in queries]

    def timed_search(self, queries: Sequence[torch.Tensor], k: int = 10) -> tuple[list, float]:
        """(results, mean seconds per query) — single-query latency, queries searched one at a time."""
        start = time.perf_counter()
        results = self.search_custom_collection(queries, k)
        return results, (time.perf_counter() - start) / max(1, len(queries))


def load_index_model(index_dir: str | Path, model=None):
    """The model an index was built with (from its config), unless ``model`` is given."""
    if model is not None:
        return model
    from grace.retrieval_baselines.late_interaction.flmr_checkpoint import (
        FLMRCheckpointModel,
        is_flmr_checkpoint,
    )
    from grace.retrieval_baselines.late_interaction.modeling import LateInteractionModel

    config = read_json(Path(index_dir) / "config.json")
    if not config.get("model"):
        raise InputError("index config names no model folder; pass model=", path=index_dir)
    if is_flmr_checkpoint(config["model"]):
        return FLMRCheckpointModel.from_pretrained(config["model"])
    return LateInteractionModel.load(config["model"])


def topk_overlap(a: Sequence[Sequence[tuple[int, float]]], b: Sequence[Sequence[tuple[int, float]]]) -> float:
    """Mean |top(a) ∩ top(b)| / |top(b)| over queries (PLAID vs exact agreement)."""
    fractions = [len({r for r, _ in x} & {r for r, _ in y}) / max(1, len(y)) for x, y in zip(a, b)]
    return float(np.mean(fractions)) if fractions else 0.0
