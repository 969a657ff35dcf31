"""Fixtures of the late-interaction tests: one torch thread and random visual tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    torch.set_num_threads(1)  # tiny models on a shared 2-core box


@pytest.fixture
def visual_bank():
    """12 random 'images' as (T=9, D=64) token maps: a seeded generator, so tests are deterministic."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 9, 64)).astype(np.float32)
