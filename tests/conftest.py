"""Shared fixtures: tiny datasets the tests build themselves."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _fresh_fallbacks():
    """Each test starts with no recorded fallbacks (they are per process and logged once)."""
    from grace.fallbacks import clear_fallbacks

    clear_fallbacks()
    yield


@pytest.fixture
def tiny_dataset(tmp_path):
    """24 coloured-shape images (20 train, 4 test) in the Karpathy form under ``tmp_path/data``."""
    from grace.data_process.synthetic import build_synthetic

    return build_synthetic(tmp_path / "data", n_images=24)


@pytest.fixture(scope="session")
def shared_tiny_dataset(tmp_path_factory):
    """Session-scoped version of ``tiny_dataset`` (do not modify it)."""
    from grace.data_process.synthetic import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp("shared") / "data", n_images=24)


@pytest.fixture(scope="session")
def tiny_with_val(tmp_path_factory):
    """24 synthetic images: 4 test, 4 val (choices are made on it), 16 train (do not modify it)."""
    from grace.data_process.synthetic import build_synthetic

    return build_synthetic(tmp_path_factory.mktemp("with_val") / "data", n_images=24, val_every=5)
