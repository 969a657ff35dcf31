"""Fixtures of the late-interaction tests: one torch thread and random visual tokens."""

from __future__ import annotations

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models on a shared 2-core box: one thread here, and the count restored for later tests (a
    session-wide change halved the speed of the learning test that runs after these)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def visual_bank():
    """12 random 'images' as (T=9, D=64) token maps: a seeded generator, so tests are deterministic."""
    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 9, 64)).astype(np.float32)
