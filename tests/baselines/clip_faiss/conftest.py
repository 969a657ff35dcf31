"""Fixtures of the CLIP+FAISS baseline tests: LiT heads trained once per session on the tiny dataset."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def lit_heads(shared_tiny_dataset, tmp_path_factory):
    """(heads folder, train stats) of LiT heads trained on the tiny dataset's train split."""
    import torch

    from grace.retrieval_baselines.clip_faiss.configs import TrainHeadsConfig
    from grace.retrieval_baselines.clip_faiss.heads import train_heads

    out = tmp_path_factory.mktemp("lit") / "heads"
    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    config = TrainHeadsConfig(dataset=dataset_json, out=out, epochs=40, batch_size=64, lr=3e-3, hidden=128,
                              dim=64, progress=False)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: avoid thread spin on a shared 2-core box (restored for later tests)
    try:
        return out, train_heads(config)
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="session")
def lit_encoder(lit_heads):
    from grace.retrieval_baselines.clip_faiss.dual_encoder import LitDualEncoder

    return LitDualEncoder(lit_heads[0], device="cpu")


@pytest.fixture(scope="session")
def lit_features(shared_tiny_dataset, lit_encoder, tmp_path_factory):
    """Merged features of every tiny-dataset image, extracted in one chunk."""
    from grace.retrieval_baselines.clip_faiss.configs import ExtractConfig
    from grace.retrieval_baselines.clip_faiss.extract import extract_chunk, merge_chunks

    out = tmp_path_factory.mktemp("feat1")
    config = ExtractConfig(source=shared_tiny_dataset.root.parent / "dataset.json", out=out,
                           model=lit_encoder.spec, chunks=1, chunk_idx=0, batch_size=16, progress=False)
    extract_chunk(config, encoder=lit_encoder)
    return out, merge_chunks(out)
