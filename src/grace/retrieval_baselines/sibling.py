"""The sibling control: retrieval with no training, from a training image that matches the query's words.

For a text query it takes the *training* image whose captions best match the query (BM25 over each training
image's texts, one document per image), then returns the corpus images nearest to that image by image features
(cosine of pooled features). A variant family split across train and test ("man pilot" in train, "woman pilot"
in test) is found this way without any model: a generative row that does not beat this row has shown no more
than that lookup. On a group-aware split it measures how far a training neighbour alone carries a query.

Index folder: ``train_bm25/`` (the BM25 index over the training images' texts), ``train_features.npy`` and
``corpus_features.npy`` (unit rows, float32), ``corpus.json`` (the corpus image ids), and ``config.json``
(written last: the encoder, the sizes and the source).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from grace.errors import InputError
from grace.io_utils import atomic_path, read_json, write_json
from grace.retrieval_baselines.lexical.bm25 import BM25Retriever
from grace.retriever import Hit, Query, Retriever


def _unit(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 3:  # visual tokens: their mean is the pooled vector
        x = x.mean(axis=1)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class SiblingRetriever(Retriever):
    """The training image best matching the query by BM25 → the corpus images nearest to it by features."""

    name = "sibling"

    def __init__(self, train_bm25: BM25Retriever, train_features, corpus_ids: Sequence[str], corpus_features, *,
                 config: dict | None = None):
        self.train_bm25 = train_bm25
        self.train_features = _unit(train_features)
        self.corpus_ids = list(corpus_ids)
        self.corpus_features = _unit(corpus_features)
        if len(self.train_features) != len(train_bm25.image_ids):
            raise InputError(f"{len(self.train_features)} training feature rows for "
                             f"{len(train_bm25.image_ids)} training documents")
        if len(self.corpus_features) != len(self.corpus_ids) or not self.corpus_ids:
            raise InputError(f"{len(self.corpus_features)} corpus feature rows for {len(self.corpus_ids)} images")
        self.config = {"kind": "sibling", "train_images": len(self.train_features),
                       "corpus_size": len(self.corpus_ids), **(config or {})}

    @classmethod
    def from_dataset(cls, dataset, features, *, corpus_split: str = "test", seed: int = 0,
                     source: dict | None = None) -> SiblingRetriever:
        """Over ``dataset``: the training images' texts (joined, one document each) and the ``corpus_split``
        images, both with their rows of ``features`` (a FeatureSet of pooled or token features)."""
        train = dataset.split("train")
        corpus = dataset.split(corpus_split)
        if not train:
            raise InputError(f"the sibling control needs training images (splits: {dataset.split_counts()})")
        if not corpus:
            raise InputError(f"the dataset has no {corpus_split} images to retrieve (splits: {dataset.split_counts()})")
        bm25 = BM25Retriever([r.image_id for r in train], [" ; ".join(r.texts) for r in train], seed=seed,
                             source={"texts": "the training images' own texts"})
        return cls(bm25, features.rows([r.image_id for r in train]), [r.image_id for r in corpus],
                   features.rows([r.image_id for r in corpus]),
                   config={"encoder": getattr(features, "encoder", ""), "split": corpus_split, "seed": seed,
                           "source": source or {}})

    def siblings(self, texts: Sequence[str]) -> list[str]:
        """The training image each query text matches best (BM25; ties by the index's seeded order)."""
        return [hits[0].image_id for hits in self.train_bm25.search([Query(text=t) for t in texts], 1)]

    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        if any(q.text is None or not q.text.strip() for q in queries):
            raise InputError("the sibling control takes text queries only")
        if not queries:
            return []
        where = {image_id: i for i, image_id in enumerate(self.train_bm25.image_ids)}
        rows = [where[s] for s in self.siblings([q.text for q in queries])]
        scores = self.train_features[rows] @ self.corpus_features.T
        k = min(k, len(self.corpus_ids))
        out = []
        for row in scores:
            order = np.argsort(-row, kind="stable")[:k]
            out.append([Hit(self.corpus_ids[i], float(row[i])) for i in order])
        return out

    def save(self, out: str | Path) -> Path:
        out = Path(out)
        self.train_bm25.save(out / "train_bm25")
        for name, array in (("train_features", self.train_features), ("corpus_features", self.corpus_features)):
            with atomic_path(out / f"{name}.npy", suffix=".npy") as tmp, open(tmp, "wb") as handle:
                np.save(handle, array)
        write_json(out / "corpus.json", {"image_ids": self.corpus_ids})
        write_json(out / "config.json", self.config)  # last: its presence marks a complete index
        return out

    @classmethod
    def load(cls, path: str | Path, **_) -> SiblingRetriever:
        path = Path(path)
        config = read_json(path / "config.json")
        return cls(BM25Retriever.load(path / "train_bm25"), np.load(path / "train_features.npy"),
                   read_json(path / "corpus.json")["image_ids"], np.load(path / "corpus_features.npy"),
                   config={k: v for k, v in config.items() if k not in ("kind", "train_images", "corpus_size")})
