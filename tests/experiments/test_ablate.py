"""Ablation / demo orchestration: stages chain, artefacts are reused, one table comes out."""

from __future__ import annotations

import json
from functools import partial

import pytest
from pipeline_fakes import CALLS, fake_stages

from grace.errors import GraceError
from grace.experiments.ablate import run_ablation
from grace.experiments.configs import AblateConfig, DemoConfig
from grace.experiments.demo import demo_ablate_config


def test_ablation_smoke_with_stand_in_stages(tiny_with_val, tmp_path, capsys):
    ablate = partial(run_ablation, stages=fake_stages())
    dataset_json = tiny_with_val.root.parent / "dataset.json"
    config = AblateConfig(run=tmp_path / "run", dataset=dataset_json, schemes=["numeric", "structured"], steps=1,
                          num_beams=4, baselines=["none"])
    results = ablate(config)
    assert set(results) == {"numeric", "structured", "bm25", "sibling", "random"}  # the controls are in every table
    saved = json.loads((tmp_path / "run" / "results" / "ablation.json").read_text())
    val = tiny_with_val.split("val")
    assert saved["query_sets"]["val"]["structured"]["num_queries"] == len(val) == 4
    assert saved["query_sets"]["val"]["structured"]["corpus_size"] == 4  # the val images are the val corpus
    assert (tmp_path / "run" / "trie" / "structured-val" / "corpus.json").is_file()
    assert (tmp_path / "run" / "results" / "val" / "bm25.json").is_file()
    selection = saved["selection"]
    assert selection["split"] == "val" and selection["generative"] in ("numeric", "structured")
    assert selection["non_generative"] in ("bm25", "sibling")  # the controls are the only non-generative rows
    assert saved["comparisons"]["reference"] == selection["non_generative"]
    assert set(saved["verdict"]["against"]) == {"bm25", "sibling"}
    for scheme in ("numeric", "structured"):
        assert results[scheme]["num_queries"] == len(tiny_with_val.split("test"))
        ranks = results[scheme]["gold_ranks"]  # the recalls are the ones the per-query ranks give
        for k in (1, 5, 10):
            assert results[scheme][f"recall@{k}"] == pytest.approx(sum(0 < r <= k for r in ranks) / len(ranks))
        assert (tmp_path / "run" / "results" / f"{scheme}.json").is_file()
    out = tmp_path / "run" / "results"
    table = (out / "ablation.md").read_text()
    assert "| numeric |" in table and "| random |" in table and "| bm25 |" in table and "train_s" in table
    assert "| sibling |" in table and "one training seed: an anecdote" in table
    assert "Protocol `image-only`, pseudo-queries from `knn-captions`" in table
    assert "(selected)" in table and "Verdict on test" in table and "Query set `val`" in table
    provenance = json.loads((out / "ablation.json").read_text())["provenance"]
    assert provenance["query_sets"]["val"]["ids"] == [f"{r.image_id}#0" for r in val]
    test = tiny_with_val.split("test")
    assert provenance["protocol"] == "image-only" and provenance["pseudo_queries"]["generator"] == "knn-captions"
    assert provenance["queries"]["ids"] == [f"{r.image_id}#0" for r in test]
    assert provenance["queries"]["gold"] == [r.image_id for r in test]
    assert len(provenance["git"]["commit"]) == 40 and provenance["seeds"]["training"] == [0]
    assert (out / "ablation.png").stat().st_size > 0
    assert json.loads((tmp_path / "run" / "ckpt" / "numeric" / "train_request.json").read_text())["steps"] == 1
    first = dict(CALLS)
    assert first["train"] == 2 and first["trie"] == 2 * 2 and first["shards"] == 2  # a test and a val trie each
    # second run: every stage reused, nothing rebuilt or retrained
    ablate(config)
    again = dict(CALLS)
    # tiny reads 4 visual tokens: the first run caches tokens and pooled features; the second reads the cache
    assert first["features"] == 2 and again.pop("features") == first.pop("features") + 1
    assert again == first
    assert "reused" in capsys.readouterr().out
    # changing the training config retrains (only) that stage
    ablate(AblateConfig(**{**config.__dict__, "steps": 2, "schemes": ["numeric"]}))
    assert CALLS["train"] == 3 and CALLS["trie"] == 4
    # changing an identifier setting rebuilds that scheme's ids and everything built on them
    settings = {**config.__dict__, "steps": 2, "schemes": ["structured"], "scheme_overrides": ["k=5"]}
    ablate(AblateConfig(**settings))
    assert CALLS["ids:structured"] == 2 and CALLS["shards"] == 3 and CALLS["trie"] == 6 and CALLS["train"] == 4
    ablate(AblateConfig(**settings))  # the same settings again: reused
    assert CALLS["ids:structured"] == 2 and CALLS["train"] == 4


def test_ablation_rejects_unknown_scheme_and_baseline(tmp_path):
    with pytest.raises(GraceError, match="unknown identifier schemes"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["nope"]))
    with pytest.raises(GraceError, match="unknown baselines"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], baselines=["dense"]))
    with pytest.raises(GraceError, match="unknown --protocol 'leaky'"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], protocol="leaky"))
    with pytest.raises(GraceError, match="does not allow the pseudo-query generator 'keywords'"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], pseudo_query_generator="keywords"))
    with pytest.raises(GraceError, match="--select-on 'test': choose val or none"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], select_on="test"))
    with pytest.raises(GraceError, match="--hybrid late_interaction: only clip_faiss, clip_faiss_expanded"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], hybrid=["late_interaction"]))
    with pytest.raises(GraceError, match="add it to --baselines"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], baselines=["none"], hybrid=["clip_faiss"]))
    with pytest.raises(GraceError, match="needs --select-on val"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], select_on="none", hybrid=["clip_faiss"]))
    with pytest.raises(GraceError, match="--hybrid-depth 5 is below"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], hybrid=["clip_faiss"], hybrid_depth=5))


def test_clip_faiss_baseline_is_scored_on_the_test_corpus(shared_tiny_dataset, tmp_path):
    """The dense baseline stage: LiT heads on train pairs, index over the test images, same queries."""
    from grace.experiments.baseline_stages import stage_baseline
    from grace.experiments.query_sets import split_queries
    from grace.experiments.stage import RunContext

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    result = stage_baseline(RunContext(tmp_path), "clip_faiss", dataset_json, shared_tiny_dataset,
                            encoder="efficientnet-lite0", sets=[split_queries(shared_tiny_dataset)])["test"]
    assert result["num_queries"] == sum(len(r.texts) for r in shared_tiny_dataset.split("test"))
    # ranked within the 4 test images: an index over the 24 images of every split would rank some gold lower
    assert all(1 <= rank <= 4 for rank in result["gold_ranks"]) and result["corpus_size"] == 4
    index_config = json.loads((tmp_path / "baselines" / "clip_faiss" / "index" / "index_config.json").read_text())
    assert index_config["ntotal"] == len(shared_tiny_dataset.split("test"))
    assert (tmp_path / "results" / "clip_faiss.json").is_file()


def test_demo_presets_and_overrides(tmp_path):
    quick = demo_ablate_config(DemoConfig(out=tmp_path, quick=True))
    assert "structured" in quick.schemes and quick.limit > 0 and quick.run == tmp_path
    assert quick.tokenizer == "smollm2" and "clip_faiss" in quick.baselines
    assert quick.train_overrides[0] == "max_length=96" and "output_head=ids" in quick.train_overrides
    from grace.model.config import resolve_config

    model = resolve_config(quick.model)  # a packaged config: `grace ablate --model tiny-effnet` runs the same model
    assert model.vis_dim == 1280 and model.n_visual_tokens == 1 and model.lm == "random"
    full = demo_ablate_config(DemoConfig(out=tmp_path, steps=7, schemes=["atomic"], limit=0))
    assert full.steps == 7 and full.schemes == ["atomic"] and full.limit == 0 and len(quick.schemes) < 5


def test_the_training_config_is_made_in_one_place_from_typed_overrides(tmp_path):
    from grace.experiments.ablate import train_config
    from grace.experiments.settings import ablation_settings
    from grace.experiments.stage import RunContext

    flags = AblateConfig(run=tmp_path, steps=3, train_overrides=["max_length=80"], i2id_views=2)
    settings = ablation_settings(flags)
    assert settings.training.overrides == {"max_length": 80}  # typed by the TrainConfig field
    values = train_config(RunContext(tmp_path), "numeric", settings.training, encoder="efficientnet-lite0", seed=4)
    assert values["max_length"] == 80 and values["shards_dir"] == str(tmp_path / "shards" / "numeric")
    assert values["steps"] == 3 and values["seed"] == 4 and values["i2id_views"] == 2
    with pytest.raises(GraceError, match="'max_len' is not a TrainConfig field"):
        ablation_settings(AblateConfig(run=tmp_path, train_overrides=["max_len=80"]))
    with pytest.raises(GraceError, match="max_length takes an integer"):
        ablation_settings(AblateConfig(run=tmp_path, train_overrides=["max_length=8.5"]))
    with pytest.raises(GraceError, match="'kk' is not a SchemeConfig field"):
        ablation_settings(AblateConfig(run=tmp_path, scheme_overrides=["kk=3"]))


def test_an_export_without_its_trie_is_an_error(tmp_path):
    from grace.errors import InputError
    from grace.infer.retriever import GenerativeRetriever

    (tmp_path / "export" / "ids").mkdir(parents=True)
    with pytest.raises(InputError, match="no trie/ folder"):
        GenerativeRetriever.load(tmp_path / "export")


def test_pseudo_query_settings_are_recorded_and_a_change_rebuilds_what_was_made_from_them(tiny_with_val, tmp_path,
                                                                                         capsys):
    ablate = partial(run_ablation, stages=fake_stages())
    dataset_json = tiny_with_val.root.parent / "dataset.json"
    config = AblateConfig(run=tmp_path / "run", dataset=dataset_json, schemes=["numeric"], steps=1, num_beams=4,
                          baselines=["none"], protocol="tagged", pseudo_queries=["pairs=true", "max_queries=20"])
    ablate(config)
    folder = tmp_path / "run" / "pseudo_queries"
    saved = json.loads((folder / "pseudo_queries.config.json").read_text())
    assert {k: saved[k] for k in ("protocol", "generator", "options")} == \
        {"protocol": "tagged", "generator": "keywords", "options": {"pairs": True, "max_queries": 20}}
    assert saved["leak_filter"]["checked"] > 0 and saved["splits"] == ["test", "val"]
    record = json.loads((folder / "stage.json").read_text())
    assert record["settings"] == {"generator": "keywords", "options": {"max_queries": 20, "pairs": True},
                                  "protocol": "tagged"}
    with_pairs = json.loads((folder / "pseudo_queries.json").read_text())
    test_record = tiny_with_val.split("test")[0]
    words = " ".join(test_record.meta["keywords"]).split()
    assert f"{words[1]} {words[0]}" in with_pairs[test_record.image_id]  # a reversed pair: only pairs=True makes it
    ablate(config)  # the same settings: reused
    assert CALLS["shards"] == 1 and CALLS["train"] == 1
    capsys.readouterr()
    ablate(AblateConfig(**{**config.__dict__, "pseudo_queries": []}))  # other options: rebuilt, and what read them
    out = capsys.readouterr().out
    assert "[pseudo-queries] stale (options={'max_queries': 20, 'pairs': True}, now {}): rebuilding" in out
    assert CALLS["shards"] == 2 and CALLS["train"] == 2 and CALLS["ids:numeric"] == 1  # numeric ids read no text
    assert f"{words[1]} {words[0]}" not in json.loads((folder / "pseudo_queries.json").read_text())[test_record.image_id]
    with pytest.raises(GraceError, match="bad pseudo-query options .* knn-captions"):
        ablate(AblateConfig(**{**config.__dict__, "run": tmp_path / "knn", "protocol": "image-only"}))
    with pytest.raises(GraceError, match="--pseudo-queries takes KEY=VALUE"):
        ablate(AblateConfig(**{**config.__dict__, "pseudo_queries": ["pairs"]}))
    with pytest.raises(GraceError, match="--train-overrides: max_length takes an integer"):
        ablate(AblateConfig(**{**config.__dict__, "train_overrides": ["max_length=9.5"]}))


def test_i2id_views_build_view_caches_and_reach_training(tiny_with_val, tmp_path):
    ablate = partial(run_ablation, stages=fake_stages())
    dataset_json = tiny_with_val.root.parent / "dataset.json"
    config = AblateConfig(run=tmp_path / "run", dataset=dataset_json, schemes=["numeric"], steps=1, num_beams=4,
                          baselines=["none"], i2id_views=3)
    ablate(config)
    assert CALLS["features:view1"] == 1 and CALLS["features:view2"] == 1 and "features:view3" not in CALLS
    request = json.loads((tmp_path / "run" / "ckpt" / "numeric" / "train_request.json").read_text())
    assert request["i2id_views"] == 3
    ablate(config)  # reused: no view is encoded again
    assert CALLS["features:view1"] == 1


def test_ids_reading_texts_are_rebuilt_when_the_pseudo_queries_change(shared_tiny_dataset, tmp_path):
    from grace.data_process.dataset import save_karpathy
    from grace.experiments.pipeline import stage_ids
    from grace.experiments.stage import RunContext

    save_karpathy(shared_tiny_dataset, tmp_path / "data" / "dataset.json")
    test_ids = [r.image_id for r in shared_tiny_dataset.split("test")]
    first = {i: [f"first text {n}"] for n, i in enumerate(test_ids)}
    built = stage_ids(RunContext(tmp_path), "semantic", shared_tiny_dataset, None, pseudo_queries=first,
                      tokenizer="byte")
    assert built.to_id(test_ids[0]) == "first text 0"
    ctx = RunContext(tmp_path)
    stage_ids(ctx, "semantic", shared_tiny_dataset, None, pseudo_queries=first, tokenizer="byte")
    assert "ids/semantic" in ctx.timer.skipped  # the same texts: reused
    ctx = RunContext(tmp_path)
    other = stage_ids(ctx, "semantic", shared_tiny_dataset, None,
                      pseudo_queries={i: [f"other text {n}"] for n, i in enumerate(test_ids)}, tokenizer="byte")
    assert "ids/semantic" not in ctx.timer.skipped and other.to_id(test_ids[0]) == "other text 0"
    ctx = RunContext(tmp_path)  # numeric ids read no text: the pseudo-queries do not matter
    stage_ids(ctx, "numeric", shared_tiny_dataset, None, pseudo_queries=first, tokenizer="byte")
    stage_ids(ctx, "numeric", shared_tiny_dataset, None, pseudo_queries={}, tokenizer="byte")
    assert "ids/numeric" in ctx.timer.skipped


def test_tagged_protocol_adds_the_expanded_baselines():
    from grace.data_process.protocol import get_protocol
    from grace.experiments.settings import baselines_to_score

    asked = ["clip_faiss", "late_interaction"]
    assert baselines_to_score(asked, get_protocol("image-only")) == asked
    assert baselines_to_score(asked, get_protocol("tagged")) == [*asked, "clip_faiss_expanded",
                                                                  "late_interaction_expanded"]
    assert baselines_to_score(["none"], get_protocol("tagged")) == []
    with pytest.raises(GraceError, match="unknown baselines"):
        baselines_to_score(["dense"], get_protocol("tagged"))


def test_expanded_clip_faiss_indexes_the_run_pseudo_queries(shared_tiny_dataset, tmp_path):
    """Same information: the image keys carry the run's pseudo-queries; new pseudo-queries rebuild the index."""
    from grace.data_process.pseudo_queries import (
        KeywordPseudoQueries,
        build_pseudo_queries,
        save_pseudo_queries,
    )
    from grace.experiments.baseline_stages import stage_baseline
    from grace.experiments.query_sets import split_queries
    from grace.experiments.stage import RunContext, Stage

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    sets = [split_queries(shared_tiny_dataset)]

    def score(max_queries):
        made = build_pseudo_queries(shared_tiny_dataset, KeywordPseudoQueries(max_queries=max_queries))
        ctx = RunContext(tmp_path)
        saved = ctx.stage(Stage("pseudo-queries", tmp_path / "pseudo_queries", lambda folder: save_pseudo_queries(
            folder / "pseudo_queries.json", made, shared_tiny_dataset, protocol="tagged"), lambda folder: None,
            settings={"max_queries": max_queries}))  # the run's pseudo-queries stage, as stage_pseudo_queries leaves it
        result = stage_baseline(ctx, "clip_faiss_expanded", dataset_json, shared_tiny_dataset,
                                encoder="efficientnet-lite0", sets=sets)["test"]
        index_config = json.loads((tmp_path / "baselines" / "clip_faiss_expanded" / "index" /
                                   "index_config.json").read_text())
        return result, index_config, saved, made.queries

    result, index_config, saved, queries = score(2)
    assert "+expansion" in result["retriever"] and result["num_queries"] == len(sets[0].texts)
    assert index_config["expansion"]["source"]["digest"] == saved["digest"]
    test_ids = [r.image_id for r in shared_tiny_dataset.split("test")]
    assert index_config["expansion"]["images"] == sum(bool(queries.get(i)) for i in test_ids) > 0
    _, again, saved_again, _ = score(1)
    assert saved_again["digest"] != saved["digest"] and again["expansion"]["source"]["digest"] == saved_again["digest"]


def test_training_seeds_retrain_only_the_row_selected_on_val(tiny_with_val, tmp_path, capsys):
    ablate = partial(run_ablation, stages=fake_stages())
    dataset_json = tiny_with_val.root.parent / "dataset.json"
    config = AblateConfig(run=tmp_path / "run", dataset=dataset_json, schemes=["numeric", "structured"], steps=1,
                          num_beams=4, baselines=["none"], training_seeds=[1, 0, 2])
    results = ablate(config)
    saved = json.loads((tmp_path / "run" / "results" / "ablation.json").read_text())
    chosen = saved["selection"]["generative"]
    other = ({"numeric", "structured"} - {chosen}).pop()
    assert CALLS["train"] == 2 + 2  # both schemes once, the chosen one under seeds 1 and 2 (0 is --seed's run)
    assert "reused" not in capsys.readouterr().out  # the seed runs use the ids built here: nothing reads as reused
    for seed in (1, 2):
        request = json.loads((tmp_path / "run" / "ckpt" / f"{chosen}@seed{seed}" / "train_request.json").read_text())
        assert request["seed"] == seed and request["ids_dir"].endswith(f"ids/{chosen}")  # the same ids
        assert (tmp_path / "run" / "results" / f"{chosen}@seed{seed}.json").is_file()
    assert not (tmp_path / "run" / "ckpt" / f"{other}@seed1").exists()
    spread = results[chosen]["training_seeds"]
    assert spread["seeds"] == [0, 1, 2] and "training_seeds" not in results[other]
    recall = spread["recall@1"]
    assert recall["values"][0] == results[chosen]["recall@1"]
    assert recall["min"] <= recall["mean"] <= recall["max"] and len(recall["values"]) == 3
    assert saved["provenance"]["seeds"]["training"] == [0, 1, 2]
    table = (tmp_path / "run" / "results" / "ablation.md").read_text()
    assert f"Training seeds of `{chosen}` (selected on val" in table and "per seed:" in table
    before = CALLS["train"]
    ablate(config)  # the seed runs are reused too
    assert CALLS["train"] == before


def test_rq_can_quantise_the_dense_retrievers_image_embedding(shared_tiny_dataset, tmp_path):
    """rq with embedding clip_faiss: every image's LiT image embedding (the space CLIP-FAISS searches), in dataset
    order, from LiT heads trained on the train pairs; other embeddings are a one-line error."""
    import numpy as np

    from grace.data_process.dataset import save_karpathy
    from grace.experiments.ablate import rq_embedding
    from grace.experiments.pipeline import stage_features
    from grace.experiments.settings import ablation_settings
    from grace.experiments.stage import RunContext
    from grace.identifiers import create_scheme

    run = tmp_path / "run"
    ctx = RunContext(run)
    save_karpathy(shared_tiny_dataset, run / "data" / "dataset.json")  # absolute paths to the shared images
    features = stage_features(ctx, shared_tiny_dataset, "efficientnet-lite0")
    encoder = "efficientnet-lite0"
    assert rq_embedding(ctx, shared_tiny_dataset, features, encoder, "features") == (features, run / "features" /
                                                                                    encoder)
    embedded, stage = rq_embedding(ctx, shared_tiny_dataset, features, encoder, "clip_faiss")
    assert stage == run / "baselines" / "clip_faiss" / "heads" and (stage / "stage.json").is_file()
    assert embedded.ids == shared_tiny_dataset.image_ids() and embedded.array.shape[0] == len(shared_tiny_dataset)
    assert np.allclose(np.linalg.norm(embedded.array, axis=1), 1.0, atol=1e-5)
    assert (run / "baselines" / "clip_faiss" / "heads" / "train_config.json").is_file()
    idmap = create_scheme("rq", levels=2, codebook=4, tokenizer="byte").build(shared_tiny_dataset, embedded)
    assert len(set(idmap.identifiers())) == len(shared_tiny_dataset)
    with pytest.raises(GraceError, match="use 'features' or 'clip_faiss'"):
        rq_embedding(ctx, shared_tiny_dataset, features, encoder, "openclip")
    with pytest.raises(GraceError, match="use 'features' or 'clip_faiss'"):  # checked before anything is built
        ablation_settings(AblateConfig(run=run, schemes=["rq"], scheme_overrides=["embedding=openclip"]))
