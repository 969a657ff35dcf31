"""The text → image baseline as the harness builds it: train on train captions, index the test images."""

from __future__ import annotations

import json


def test_build_text_to_image_indexes_the_test_split_and_is_reused(shared_tiny_dataset, tmp_path, monkeypatch):
    from grace.experiments.retrievers import load_retriever
    from grace.retrieval_baselines.late_interaction import retriever as R
    from grace.retriever import Query

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    built = R.build_text_to_image(dataset_json, tmp_path / "li", steps=3, cache_dir=tmp_path / "cache",
                                  progress=False)
    test_ids = {r.image_id for r in shared_tiny_dataset.split("test")}
    hits = built.search([Query(text="a small red circle")], k=10)[0]
    assert {h.image_id for h in hits} == test_ids  # the corpus is exactly the test images
    stats = json.loads((tmp_path / "li" / "model" / "config.json").read_text())["train_stats"]
    assert stats["num_images"] == len(shared_tiny_dataset.split("train"))
    monkeypatch.setattr(R, "index_images", lambda *a, **k: (_ for _ in ()).throw(AssertionError("re-indexed")))
    again = R.build_text_to_image(dataset_json, tmp_path / "li", steps=3, cache_dir=tmp_path / "cache")
    assert [h.image_id for h in again.search([Query(text="a small red circle")], k=4)[0]] == \
        [h.image_id for h in hits][:4]
    loaded = load_retriever(f"late_interaction:{tmp_path / 'li' / 'index'}")
    assert loaded.search([Query(text="blue")], k=2)[0][0].image_id in test_ids
