"""``grace ablate --vision-space clip_faiss`` with the real stages: the generator trains on CLIP-FAISS's LiT space
and every loader (eval, search, hybrid) embeds the queries with the text tower its export carries."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grace.errors import GraceError
from grace.experiments.ablate import run_ablation
from grace.experiments.configs import AblateConfig


def test_ablation_in_the_clip_faiss_joint_space(tmp_path):
    from grace.data_process.features import FeatureSet
    from grace.data_process.synthetic import build_synthetic
    from grace.experiments.retrievers import load_retriever, query_encoder
    from grace.retriever import Query

    build_synthetic(tmp_path / "data", n_images=30, test_every=3, val_every=5)
    config = AblateConfig(run=tmp_path / "run", dataset=tmp_path / "data" / "dataset.json", schemes=["structured"],
                          steps=3, num_beams=4, baselines=["clip_faiss"], model="tiny-effnet", tokenizer="byte",
                          vision_space="clip_faiss", query_mix=0.3, hybrid=["clip_faiss"], hybrid_depth=10,
                          publish=tmp_path / "published")
    results = run_ablation(config)
    assert {"structured", "clip_faiss", "structured+clip_faiss", "bm25", "random"} <= set(results)
    run = tmp_path / "run"
    request = json.loads((run / "ckpt" / "structured" / "train_request.json").read_text())
    assert request["features_cache"] == str(run / "features" / "joint_clip_faiss")
    assert request["t2id_media"] == str(run / "features" / "joint_clip_faiss_texts")
    assert request["t2id_media_mix"] == 0.3
    model = json.loads((run / "ckpt" / "structured" / "model_config.json").read_text())
    images = FeatureSet.load(run / "features" / "joint_clip_faiss")
    assert model["vis_dim"] == images.array.shape[1] != 1280 and model["n_visual_tokens"] == 1
    np.testing.assert_allclose(np.linalg.norm(images.array, axis=1), 1.0, atol=1e-5)  # LiT's unit image side
    texts = FeatureSet.load(run / "features" / "joint_clip_faiss_texts")
    assert texts.encoder == f"lit:{run / 'baselines' / 'clip_faiss' / 'heads'}" and len(texts) > len(images) / 2

    export = run / "ckpt" / "structured" / "export"
    encode = query_encoder(export)  # the export's own copy of LiT's text tower: CLIP-FAISS's query side
    dense = load_retriever(f"clip_faiss:{run / 'baselines' / 'clip_faiss' / 'index'}")
    np.testing.assert_allclose(encode(["a red heart"]), dense.encoder.encode_texts(["a red heart"]), atol=1e-5)
    generative = load_retriever(f"generative:{export}", num_beams=4)
    hits = generative.search([Query(text="a red heart")], k=3)[0]
    assert len(hits) == 3
    table = (run / "results" / "ablation.md").read_text()
    assert "| structured |" in table
    published = (tmp_path / "published" / "data-tiny-effnet-image-only-clip_faiss-space.md").read_text()
    assert "the generator in the clip_faiss joint space" in published and "| structured |" in published
    saved = json.loads((tmp_path / "published" / "data-tiny-effnet-image-only-clip_faiss-space.json").read_text())
    assert saved["provenance"]["config"]["vision_space"] == "clip_faiss"

    trained = (export / "model.safetensors").stat().st_mtime_ns
    run_ablation(config)  # everything reused, the joint-space inputs included
    assert (export / "model.safetensors").stat().st_mtime_ns == trained


def test_vision_space_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(GraceError, match="--vision-space 'lit'"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], vision_space="lit"))
    with pytest.raises(GraceError, match="--query-mix .* needs --vision-space clip_faiss"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], query_mix=0.5))
    with pytest.raises(GraceError, match=r"\[0, 1\]"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], vision_space="clip_faiss", query_mix=2.0))
