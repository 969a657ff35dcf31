"""The chance baseline of every results table: a uniformly random ranking of a split's images."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from grace.data_process.dataset import load_karpathy
from grace.retriever import Hit, Query, Retriever


class RandomRetriever(Retriever):
    """Uniformly random ranking of a dataset's images: the chance baseline of every results table."""

    name = "random"

    def __init__(self, image_ids: list[str], seed: int = 0):
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
    def load(cls, path: str | Path, split: str = "test", seed: int = 0, **_) -> RandomRetriever:
        """``path`` is a dataset.json; the corpus is the images of ``split``."""
        dataset = load_karpathy(path, check_files=False)
        return cls([r.image_id for r in dataset.split(split)], seed=seed)
