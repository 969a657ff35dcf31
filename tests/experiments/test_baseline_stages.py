"""The baselines go through Stage: a changed seed rebuilds the LiT heads, the features they embedded and the
index over them (none of them is reused because its files exist), and an unchanged run reuses all three."""

from __future__ import annotations

import json

from grace.experiments.baseline_stages import stage_baseline
from grace.experiments.pipeline import features_dir
from grace.experiments.query_sets import split_queries
from grace.experiments.stage import RunContext, Stage

DENSE = ["build/clip_faiss/heads", "build/clip_faiss/features", "build/clip_faiss/index"]


def test_a_changed_seed_rebuilds_heads_features_and_index(shared_tiny_dataset, tmp_path):
    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    sets = [split_queries(shared_tiny_dataset)]

    def run(seed, force=()):
        ctx = RunContext(tmp_path, seed=seed, force=force)
        timer = ctx.timer
        result = stage_baseline(ctx, "clip_faiss", dataset_json, shared_tiny_dataset, encoder="efficientnet-lite0",
                                sets=sets)["test"]
        timer.built = [name for name in timer.built if name.startswith("build/")]  # not the evaluations
        return timer, result

    timer, first = run(0)
    assert timer.built == DENSE and "build/clip_faiss" not in timer.skipped
    heads = json.loads((tmp_path / "baselines" / "clip_faiss" / "heads" / "stage.json").read_text())
    assert heads["settings"] == {"encoder": "efficientnet-lite0", "seed": 0}
    timer, again = run(0)
    assert timer.built == [] and set(DENSE) | {"build/clip_faiss"} <= timer.skipped
    assert again["gold_ranks"] == first["gold_ranks"]
    timer, _ = run(1)
    assert timer.built == DENSE  # the heads' seed changed: what they embedded and indexed is rebuilt too
    assert json.loads((tmp_path / "baselines" / "clip_faiss" / "heads" / "stage.json").read_text())["settings"]["seed"] == 1
    timer, _ = run(1, force=("build/clip_faiss/index",))
    assert timer.built == ["build/clip_faiss/index"]


def test_the_sibling_control_is_a_registered_baseline_reused_until_the_features_change(shared_tiny_dataset,
                                                                                       tmp_path):
    import numpy as np

    from grace.data_process.features import FeatureSet

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    ids = [r.image_id for r in shared_tiny_dataset.images]
    rng = np.random.default_rng(0)
    features = FeatureSet(ids, rng.standard_normal((len(ids), 8)).astype(np.float32), "random")
    sets = [split_queries(shared_tiny_dataset)]

    def run(features, version=0):
        ctx = RunContext(tmp_path)
        ctx.stage(Stage("features", features_dir(tmp_path, "random"), features.save, FeatureSet.load,
                        settings={"version": version}))  # the run's features stage, as stage_features leaves it
        stage_baseline(ctx, "sibling", dataset_json, shared_tiny_dataset, encoder="random", sets=sets,
                       features=features)
        return [name for name in ctx.timer.built if name.startswith("build/")]

    assert run(features) == ["build/sibling/index"]
    assert run(features) == []  # reused: loaded, not rebuilt
    other = FeatureSet(ids, rng.standard_normal((len(ids), 8)).astype(np.float32), "random")
    assert run(other, version=1) == ["build/sibling/index"]  # the features stage was rebuilt
