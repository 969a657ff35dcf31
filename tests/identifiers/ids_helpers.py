"""Helpers for the identifier tests: random features aligned with a dataset."""

from __future__ import annotations

import numpy as np


def random_features(n: int, dim: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
