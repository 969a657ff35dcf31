"""``grace ablate --vision-space clip_faiss`` with the real stages: the generator trains on CLIP-FAISS's LiT space
and every loader (eval, search, hybrid) embeds the queries with the text tower its export carries."""

from __future__ import annotations

import dataclasses
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
                          training_seeds=[0, 1], publish=tmp_path / "published")
    results = run_ablation(config)
    assert {"structured", "clip_faiss", "structured+clip_faiss", "bm25", "random"} <= set(results)
    run = tmp_path / "run"
    request = json.loads((run / "ckpt" / "structured" / "train_request.json").read_text())
    assert request["features_cache"] == str(run / "features" / "joint_clip_faiss")
    assert request["t2id_media"] == str(run / "features" / "joint_clip_faiss_texts")
    assert request["t2id_media_mix"] == 0.3
    model = json.loads((run / "ckpt" / "structured.model_config.json").read_text())
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

    hybrid = json.loads((run / "results" / "structured+clip_faiss.json").read_text())
    assert hybrid["pool"] in ("first", "union") and hybrid["weight_chosen_on"] == "val"
    assert "candidates: the beam's" in table
    # the hybrid is also scored over the second seed's checkpoint, its pool and weight chosen on that seed's val
    assert results["structured+clip_faiss"]["training_seeds"]["seeds"] == [0, 1]
    seed_hybrid = json.loads((run / "results" / "structured@seed1+clip_faiss.json").read_text())
    assert seed_hybrid["weight_chosen_on"] == "val" and "Training seeds of `structured+clip_faiss`" in table
    saved_seed = json.loads((run / "hybrid" / "structured@seed1+clip_faiss" / "hybrid.json").read_text())
    assert saved_seed["first"].endswith("ckpt/structured@seed1/export")

    trained = (export / "model.safetensors").stat().st_mtime_ns
    run_ablation(dataclasses.replace(config, publish_name="best"))  # everything reused, the joint-space inputs too
    assert (export / "model.safetensors").stat().st_mtime_ns == trained
    assert "| structured |" in (tmp_path / "published" / "data-best.md").read_text()


def test_vision_space_bad_input_is_a_one_line_error(tmp_path):
    with pytest.raises(GraceError, match="--vision-space 'lit'"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], vision_space="lit"))
    with pytest.raises(GraceError, match="--query-mix .* needs --vision-space clip_faiss"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], query_mix=0.5))
    with pytest.raises(GraceError, match=r"\[0, 1\]"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], vision_space="clip_faiss", query_mix=2.0))
    with pytest.raises(GraceError, match="--publish-name '../best' must be a plain file name"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], publish_name="../best"))
    with pytest.raises(GraceError, match="--hybrid-pools all: choose among first, union"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], baselines=["clip_faiss"], hybrid=["clip_faiss"],
                                  select_on="val", hybrid_pools=["all"]))
