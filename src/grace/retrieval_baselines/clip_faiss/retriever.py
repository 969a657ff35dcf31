"""``ClipFaissRetriever``: the dense baseline behind :class:`grace.retriever.Retriever`.

``load(INDEX_DIR)`` reads the index folder of ``build-index`` and the dual encoder named in its config.
Text queries search image keys (text → image) or caption keys (text → text → owner image); image
queries are embedded with the image tower. Hits are distinct images, best first.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from grace.data_process.features import unit_rows
from grace.errors import InputError
from grace.retriever import Hit, Query, Rescorer


class ClipFaissRetriever(Rescorer):
    """Dual encoder + FAISS index; a query with both text and image uses the sum of both embeddings."""

    name = "clip_faiss"
    modalities = ("text", "image")

    def __init__(self, index, encoder, *, oversample: int = 4):
        from grace.retrieval_baselines.clip_faiss.index import DenseIndex

        self.index: DenseIndex = index
        self.encoder = encoder
        self.oversample = oversample
        self.rows_of: dict[str, list[int]] = {}  # image id → its index rows (one, or one per caption key)
        for row, image_id in enumerate(index.row_images):
            self.rows_of.setdefault(image_id, []).append(row)
        if encoder.dim != index.dim:
            raise InputError(f"encoder {encoder.spec} gives {encoder.dim}-d vectors, the index holds {index.dim}-d")
        expanded = "+expansion" if index.config.get("expansion") else ""
        self.name = f"clip_faiss[{index.config.get('index', 'Flat')},{index.config.get('feature_mode', 'image')}{expanded}]"
        #: inside :meth:`one_batch`: the text-only batch embedded there, so it is encoded once
        self._batch_vectors: dict[tuple[str, ...], np.ndarray] | None = None

    def embed(self, queries: list[Query]) -> np.ndarray:
        """(Q, D) L2-normalised query vectors (read-only; inside :meth:`one_batch` a text batch is embedded once)."""
        from grace.retrieval_baselines.clip_faiss.dual_encoder import open_images

        memo, key = self._batch_vectors, None
        if memo is not None and all(q.image is None for q in queries):  # only text batches, only inside one_batch
            key = tuple(q.text for q in queries)
            if key in memo:
                return memo[key]
        out = np.zeros((len(queries), self.index.dim), np.float32)
        text_rows = [i for i, q in enumerate(queries) if q.text is not None and q.text.strip()]
        image_rows = [i for i, q in enumerate(queries) if q.image is not None]
        if text_rows:
            out[text_rows] += self.encoder.encode_texts([queries[i].text for i in text_rows])
        if image_rows:
            out[image_rows] += self.encoder.encode_images(open_images([queries[i].image for i in image_rows]))
        out = unit_rows(out)
        out.flags.writeable = False
        if key is not None:
            memo[key] = out
        return out

    @contextmanager
    def one_batch(self) -> Iterator[None]:
        """Within the block, a batch of text queries is embedded once (a hybrid's dense search and re-scoring)."""
        self._batch_vectors = {}
        try:
            yield
        finally:
            self._batch_vectors = None

    def search_rows(self, vectors: np.ndarray, k: int) -> list[list[tuple[int, float]]]:
        """Top-``k`` (row, score) per query vector, rows of distinct images."""
        n_rows = self.index.index.ntotal
        fetch = k if self.index.config.get("feature_mode") == "image" else k * self.oversample
        while True:
            scores, rows = self.index.search(vectors, min(fetch, n_rows))
            results = []
            for srow, rrow in zip(scores, rows):
                seen, picked = set(), []
                for score, row in zip(srow, rrow):
                    image_id = self.index.row_images[row] if row >= 0 else None
                    if image_id is None or image_id in seen:
                        continue
                    seen.add(image_id)
                    picked.append((int(row), float(score)))
                    if len(picked) == k:
                        break
                results.append(picked)
            short = any(len(p) < k for p in results)
            if not short or fetch >= n_rows:
                return results
            fetch *= 4

    def search(self, queries: list[Query], k: int) -> list[list[Hit]]:
        if not queries:
            return []
        queries = [q if isinstance(q, Query) else Query(text=q) for q in queries]
        rows = self.search_rows(self.embed(queries), k)
        return [[Hit(self.index.row_images[r], s) for r, s in picked] for picked in rows]

    def score(self, queries: list[Query], candidates: list[list[str]]) -> list[list[float]]:
        """Inner product of each query vector with each candidate image's keys (the best of an image's rows when
        its keys are captions): the scores :meth:`search` ranks by, for any image of the index."""
        if not queries:
            return []
        rows_of = self.rows_of
        vectors = self.embed([q if isinstance(q, Query) else Query(text=q) for q in queries])
        out = []
        for vector, images in zip(vectors, candidates):
            unknown = [i for i in images if i not in rows_of]
            if unknown:
                raise InputError(f"candidate image {unknown[0]!r} is not in this index's corpus "
                                 f"({len(rows_of)} images): was it built on another corpus?")
            rows = [row for image in images for row in rows_of[image]]
            scores = self.index.vectors(rows) @ vector
            at, best = 0, []
            for image in images:
                n = len(rows_of[image])
                best.append(float(scores[at:at + n].max()))
                at += n
            out.append(best)
        return out

    def search_texts(self, images: list[str | Path], k: int) -> list[list[tuple[str, str, float]]]:
        """Image → text: top-``k`` (caption, image id, score) per query image (caption keys give the
        matched caption; image keys give the first caption of the matched image)."""
        vectors = self.embed([Query(image=Path(p)) for p in images])
        scores, rows = self.index.search(vectors, k)
        out = []
        for srow, rrow in zip(scores, rows):
            hits = []
            for score, row in zip(srow, rrow):
                if row < 0:
                    continue
                image_id = self.index.row_images[row]
                text = self.index.keys["row_text"][row] or (self.index.keys["captions"].get(image_id) or [""])[0]
                hits.append((text, image_id, float(score)))
            out.append(hits)
        return out

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", use_gpu: bool = True, encoder=None, **_) -> ClipFaissRetriever:
        """``path`` = an index folder written by ``grace baselines clip-faiss build-index``."""
        from grace.retrieval_baselines.clip_faiss.dual_encoder import load_dual_encoder
        from grace.retrieval_baselines.clip_faiss.index import DenseIndex

        index = DenseIndex.load(path, use_gpu=use_gpu)
        return cls(index, encoder or load_dual_encoder(index.config["model"], device))
