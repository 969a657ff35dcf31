"""A small trained run (generative structured ids + CLIP-FAISS) shared by the search and server tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    """(RUN folder, dataset.json): 48 synthetic images (16 test = the corpus, 6 val), structured ids, the packaged
    ``tiny-effnet`` trained a few steps, the LiT CLIP-FAISS baseline and their hybrid, built by the real ablation
    stages."""
    from grace.data_process.synthetic import build_synthetic
    from grace.experiments.ablate import run_ablation
    from grace.experiments.configs import AblateConfig

    root = tmp_path_factory.mktemp("small_run")
    build_synthetic(root / "data", n_images=48, test_every=3, val_every=5)
    dataset_json = root / "data" / "dataset.json"
    run_ablation(AblateConfig(run=root / "run", dataset=dataset_json, schemes=["structured"], steps=6, num_beams=5,
                              baselines=["clip_faiss"], model="tiny-effnet", tokenizer="byte", hybrid=["clip_faiss"],
                              hybrid_depth=10))
    return root / "run", dataset_json
