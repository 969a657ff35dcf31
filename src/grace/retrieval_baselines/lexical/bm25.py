"""The lexical control: BM25 (``bm25s``) over each corpus image's texts, one document per image.

In ``grace ablate`` the documents are the held-out images' pseudo-queries — exactly the text the generative
model memorises — so a generative row that does not beat this row has shown no more than matching
memorised words. Queries and documents are tokenised alike (English stop words dropped, Snowball-stemmed
by PyStemmer). Documents with equal scores (e.g. every image sharing no word with the query) are ordered
by a seeded permutation of the corpus, not by file order.

Index folder: ``config.json`` (written last: k1, b, stemmer, seed, corpus size, the documents' digest and
source), ``documents.json`` (``{"image_ids": [...], "texts": [...]}``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grace.errors import InputError
from grace.io_utils import read_json, write_json
from grace.retriever import Hit, Query, Retriever

STEMMER_LANGUAGE = "english"


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    import bm25s
    import Stemmer

    return bm25s.tokenize(list(texts), stopwords="en", stemmer=Stemmer.Stemmer(STEMMER_LANGUAGE),
                          return_ids=False, show_progress=False)


def documents_digest(image_ids: Sequence[str], texts: Sequence[str]) -> str:
    return hashlib.sha1(json.dumps([list(image_ids), list(texts)], ensure_ascii=False).encode()).hexdigest()[:16]


class BM25Retriever(Retriever):
    """BM25 over one text document per image (``texts[i]`` describes ``image_ids[i]``)."""

    name = "bm25"

    def __init__(self, image_ids: Sequence[str], texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75,
                 seed: int = 0, source: dict | None = None):
        import bm25s

        if len(image_ids) != len(texts):
            raise InputError(f"{len(image_ids)} image ids for {len(texts)} documents")
        if not image_ids:
            raise InputError("BM25 needs at least one document")
        self.image_ids, self.texts = list(image_ids), list(texts)
        self.config = {"k1": k1, "b": b, "seed": seed, "stemmer": STEMMER_LANGUAGE, "stopwords": "en",
                       "documents": len(self.texts), "empty_documents": sum(not t.strip() for t in self.texts),
                       "digest": documents_digest(self.image_ids, self.texts), "source": source or {}}
        tokens = _tokenize(self.texts)
        self._bm25 = bm25s.BM25(k1=k1, b=b) if any(tokens) else None  # no word at all: every score is 0
        if self._bm25 is not None:
            self._bm25.index(tokens, show_progress=False)
        # ties broken by a seeded random order of the corpus (0 = first among equals)
        self._tie_order = np.random.default_rng(seed).permutation(len(self.image_ids))

    @classmethod
    def from_pseudo_queries(cls, pseudo_queries: dict[str, list[str]], image_ids: Sequence[str], **kwargs) -> "BM25Retriever":
        """One document per image of ``image_ids``: its pseudo-queries joined (empty when it has none)."""
        return cls(image_ids, [" ; ".join(pseudo_queries.get(i, [])) for i in image_ids], **kwargs)

    def scores(self, queries: Sequence[str]) -> np.ndarray:
        """(Q, N) BM25 scores of every document for every query text."""
        tokens = _tokenize(queries)
        rows = [np.asarray(self._bm25.get_scores(t), np.float64) if t and self._bm25 is not None
                else np.zeros(len(self.image_ids)) for t in tokens]
        return np.stack(rows) if rows else np.zeros((0, len(self.image_ids)))

    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        if any(q.text is None or not q.text.strip() for q in queries):
            raise InputError("the BM25 control takes text queries only")
        k = min(k, len(self.image_ids))
        out = []
        for row in self.scores([q.text for q in queries]):
            order = np.lexsort((self._tie_order, -row))[:k]
            out.append([Hit(self.image_ids[i], float(row[i])) for i in order])
        return out

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        write_json(out / "documents.json", {"image_ids": self.image_ids, "texts": self.texts})
        write_json(out / "config.json", self.config)  # last: its presence marks a complete index
        return out

    @classmethod
    def load(cls, path: str | Path, **_) -> "BM25Retriever":
        path = Path(path)
        config = read_json(path / "config.json")
        docs = read_json(path / "documents.json")
        retriever = cls(docs["image_ids"], docs["texts"], k1=config["k1"], b=config["b"], seed=config["seed"],
                        source=config.get("source"))
        if retriever.config["digest"] != config.get("digest"):
            raise InputError("documents.json changed since the index was built (digest mismatch)", path=path)
        return retriever
