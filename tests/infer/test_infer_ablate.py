"""Ablation / demo orchestration: stages chain, artefacts are reused, one table comes out."""

from __future__ import annotations

import json

import pytest
from infer_fakes import CALLS, install

from grace.errors import GraceError
from grace.infer.ablate import run_ablation
from grace.infer.configs import AblateConfig, DemoConfig
from grace.infer.demo import demo_ablate_config


def test_ablation_smoke_with_stand_in_stages(shared_tiny_dataset, tmp_path, monkeypatch, capsys):
    install(monkeypatch)
    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    config = AblateConfig(run=tmp_path / "run", dataset=dataset_json, schemes=["numeric", "structured"], steps=1,
                          num_beams=4, baselines=["none"])
    results = run_ablation(config)
    assert set(results) == {"numeric", "structured", "random"}
    for scheme in ("numeric", "structured"):
        assert results[scheme]["num_queries"] == len(shared_tiny_dataset.split("test"))
        assert 0.0 <= results[scheme]["recall@1"] <= results[scheme]["recall@10"] <= 1.0
        assert (tmp_path / "run" / "results" / f"{scheme}.json").is_file()
    out = tmp_path / "run" / "results"
    table = (out / "ablation.md").read_text()
    assert "| numeric |" in table and "| random |" in table and "train_s" in table
    assert (out / "ablation.png").stat().st_size > 0
    assert json.loads((tmp_path / "run" / "ckpt" / "numeric" / "train_request.json").read_text())["steps"] == 1
    first = dict(CALLS)
    assert first["train"] == 2 and first["trie"] == 2 and first["shards"] == 2
    # second run: every stage reused, nothing rebuilt or retrained
    run_ablation(config)
    again = dict(CALLS)
    # tiny reads 4 visual tokens: the first run caches tokens and pooled features; the second reads the cache
    assert first["features"] == 2 and again.pop("features") == first.pop("features") + 1
    assert again == first
    assert "reused" in capsys.readouterr().out
    # changing the training config retrains (only) that stage
    run_ablation(AblateConfig(**{**config.__dict__, "steps": 2, "schemes": ["numeric"]}))
    assert CALLS["train"] == 3 and CALLS["trie"] == 2
    # changing an identifier setting rebuilds that scheme's ids and everything built on them
    settings = {**config.__dict__, "steps": 2, "schemes": ["structured"], "scheme_overrides": '{"k": 5}'}
    run_ablation(AblateConfig(**settings))
    assert CALLS["ids:structured"] == 2 and CALLS["shards"] == 3 and CALLS["trie"] == 3 and CALLS["train"] == 4
    run_ablation(AblateConfig(**settings))  # the same settings again: reused
    assert CALLS["ids:structured"] == 2 and CALLS["train"] == 4


def test_ablation_rejects_unknown_scheme_and_baseline(tmp_path):
    with pytest.raises(GraceError, match="unknown identifier schemes"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["nope"]))
    with pytest.raises(GraceError, match="unknown baselines"):
        run_ablation(AblateConfig(run=tmp_path, schemes=["numeric"], baselines=["bm25"]))


def test_clip_faiss_baseline_is_scored_on_the_test_corpus(shared_tiny_dataset, tmp_path):
    """The dense baseline stage: LiT heads on train pairs, index over the test images, same queries."""
    from grace.infer.baseline_stages import stage_baseline
    from grace.infer.pipeline import StageTimer

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    result = stage_baseline(tmp_path, "clip_faiss", dataset_json, shared_tiny_dataset, StageTimer(),
                            encoder="efficientnet-lite0")
    assert result["num_queries"] == sum(len(r.texts) for r in shared_tiny_dataset.split("test"))
    assert result["recall@10"] == 1.0  # 4 test images: every ranking of 10 holds the gold image
    index_config = json.loads((tmp_path / "baselines" / "clip_faiss" / "index" / "index_config.json").read_text())
    assert index_config["ntotal"] == len(shared_tiny_dataset.split("test"))
    assert (tmp_path / "results" / "clip_faiss.json").is_file()


def test_demo_presets_and_overrides(tmp_path):
    quick = demo_ablate_config(DemoConfig(out=tmp_path, quick=True))
    assert "structured" in quick.schemes and quick.limit > 0 and quick.run == tmp_path
    assert quick.tokenizer == "smollm2" and "clip_faiss" in quick.baselines and json.loads(quick.train_overrides)["max_length"] >= 64
    from grace.model.config import resolve_config

    model = resolve_config(quick.model)  # a packaged config: `grace ablate --model tiny-effnet` runs the same model
    assert model.vis_dim == 1280 and model.n_visual_tokens == 1 and model.lm == "random"
    full = demo_ablate_config(DemoConfig(out=tmp_path, steps=7, schemes=["atomic"], limit=0))
    assert full.steps == 7 and full.schemes == ["atomic"] and full.limit == 0 and len(quick.schemes) < 5


def test_train_overrides_must_be_train_config_fields(tmp_path):
    from grace.infer.pipeline import train_config_values

    kw = dict(model="tiny", steps=3, lr=1e-3, batch_size_i2id=2, batch_size_t2id=2, encoder="efficientnet-lite0", seed=0)
    values = train_config_values(tmp_path, "numeric", overrides={"max_length": 80}, **kw)
    assert values["max_length"] == 80 and values["shards_dir"] == str(tmp_path / "shards" / "numeric")
    with pytest.raises(GraceError, match=r"\['max_len'\] are not TrainConfig fields"):
        train_config_values(tmp_path, "numeric", overrides={"max_len": 80}, **kw)


def test_an_export_without_its_trie_is_an_error(tmp_path):
    from grace.errors import InputError
    from grace.infer.retriever import GenerativeRetriever

    (tmp_path / "export" / "ids").mkdir(parents=True)
    with pytest.raises(InputError, match="no trie/ folder"):
        GenerativeRetriever.load(tmp_path / "export")


def test_pseudo_query_options_are_saved_beside_and_a_change_is_an_error(shared_tiny_dataset, tmp_path, monkeypatch):
    install(monkeypatch)
    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    config = AblateConfig(run=tmp_path / "run", dataset=dataset_json, schemes=["numeric"], steps=1, num_beams=4,
                          baselines=["none"], pseudo_queries='{"pairs": true, "max_queries": 20}')
    run_ablation(config)
    data = tmp_path / "run" / "data"
    assert json.loads((data / "pseudo_queries.config.json").read_text()) == \
        {"generator": "keywords", "options": {"pairs": True, "max_queries": 20}}
    with_pairs = json.loads((data / "pseudo_queries.json").read_text())
    record = shared_tiny_dataset.split("test")[0]
    words = " ".join(record.meta["keywords"]).split()
    assert f"{words[1]} {words[0]}" in with_pairs[record.image_id]  # a reversed pair: only pairs=True makes it
    run_ablation(config)  # the same options: reused
    with pytest.raises(GraceError, match="built with pseudo-query settings"):
        run_ablation(AblateConfig(**{**config.__dict__, "pseudo_queries": ""}))
    given = tmp_path / "given" / "data"  # pseudo-queries from `grace data pseudo-queries` (e.g. a captioner)
    given.mkdir(parents=True)
    (given / "pseudo_queries.json").write_text(json.dumps({k: ["a caption"] for k in with_pairs}))
    (given / "pseudo_queries.config.json").write_text(json.dumps({"generator": "captioner:blip", "split": "test"}))
    given_config = AblateConfig(**{**config.__dict__, "run": given.parent, "pseudo_queries": ""})
    run_ablation(given_config)  # used as it is
    assert json.loads((given / "pseudo_queries.json").read_text())[record.image_id] == ["a caption"]
    with pytest.raises(GraceError, match="captioner:blip"):
        run_ablation(AblateConfig(**{**given_config.__dict__, "pseudo_queries": '{"pairs": true}'}))
    with pytest.raises(GraceError, match="known: .*'pairs'"):
        run_ablation(AblateConfig(**{**config.__dict__, "run": tmp_path / "other", "pseudo_queries": '{"pair": 1}'}))
    with pytest.raises(GraceError, match="--pseudo-queries is not valid JSON"):
        run_ablation(AblateConfig(**{**config.__dict__, "pseudo_queries": "{pairs: true}"}))
    with pytest.raises(GraceError, match="--train-overrides must be a JSON object"):
        run_ablation(AblateConfig(**{**config.__dict__, "train_overrides": "[1]"}))


def test_i2id_views_build_view_caches_and_reach_training(shared_tiny_dataset, tmp_path, monkeypatch):
    install(monkeypatch)
    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    config = AblateConfig(run=tmp_path / "run", dataset=dataset_json, schemes=["numeric"], steps=1, num_beams=4,
                          baselines=["none"], i2id_views=3)
    run_ablation(config)
    assert CALLS["features:view1"] == 1 and CALLS["features:view2"] == 1 and "features:view3" not in CALLS
    request = json.loads((tmp_path / "run" / "ckpt" / "numeric" / "train_request.json").read_text())
    assert request["i2id_views"] == 3
    run_ablation(config)  # reused: no view is encoded again
    assert CALLS["features:view1"] == 1


def test_ids_reading_texts_are_rebuilt_when_the_pseudo_queries_change(shared_tiny_dataset, tmp_path):
    from grace.infer.pipeline import StageTimer, stage_ids

    test_ids = [r.image_id for r in shared_tiny_dataset.split("test")]
    first = {i: [f"first text {n}"] for n, i in enumerate(test_ids)}
    built = stage_ids(tmp_path, "semantic", shared_tiny_dataset, None, StageTimer(), pseudo_queries=first,
                      tokenizer="byte")
    assert built.to_id(test_ids[0]) == "first text 0"
    timer = StageTimer()
    stage_ids(tmp_path, "semantic", shared_tiny_dataset, None, timer, pseudo_queries=first, tokenizer="byte")
    assert "ids/semantic" in timer.skipped  # the same texts: reused
    timer = StageTimer()
    other = stage_ids(tmp_path, "semantic", shared_tiny_dataset, None, timer,
                      pseudo_queries={i: [f"other text {n}"] for n, i in enumerate(test_ids)}, tokenizer="byte")
    assert "ids/semantic" not in timer.skipped and other.to_id(test_ids[0]) == "other text 0"
    timer = StageTimer()  # numeric ids read no text: the pseudo-queries do not matter
    stage_ids(tmp_path, "numeric", shared_tiny_dataset, None, timer, pseudo_queries=first, tokenizer="byte")
    stage_ids(tmp_path, "numeric", shared_tiny_dataset, None, timer, pseudo_queries={}, tokenizer="byte")
    assert "ids/numeric" in timer.skipped
