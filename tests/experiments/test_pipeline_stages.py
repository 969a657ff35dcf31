"""The pipeline's stages go through Stage: each ``stage.json`` (settings + the records of its inputs) is checked,
a difference rebuilds the stage and what was built from it, and an interrupted training resumes."""

from __future__ import annotations

import dataclasses
import json
import types
from pathlib import Path

import pytest

from data_packages import EMOJI, needs
from grace.experiments.configs import AblateConfig
from grace.experiments.stage import RunContext, Stage, differences


def test_differences_name_the_setting_or_the_input(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    stage = Stage("s", tmp_path / "s", lambda f: None, lambda f: None, settings={"limit": 5, "ks": (1, 5)},
                  inputs={"dataset": tmp_path / "a.txt"})
    want = stage.wanted()
    assert want["settings"] == {"limit": 5, "ks": [1, 5]}  # compared as JSON: a tuple reads back as a list
    assert differences(want, want) == []
    assert differences(None, want) == ["no stage record (built by an older grace)"]
    (tmp_path / "a.txt").write_text("two")
    now = Stage("s", tmp_path / "s", lambda f: None, lambda f: None, settings={"limit": 6, "ks": (1, 5)},
                inputs={"dataset": tmp_path / "a.txt"}).wanted()
    assert differences(want, now) == ["limit=5, now 6", "input dataset changed"]


def test_stale_trie_and_shards_are_rebuilt_when_the_ids_change(shared_tiny_dataset, tmp_path):
    from grace.data_process.dataset import save_karpathy
    from grace.data_process.pseudo_queries import (
        KeywordPseudoQueries,
        build_pseudo_queries,
        save_pseudo_queries,
    )
    from grace.experiments.pipeline import stage_ids, stage_shards, stage_trie
    from grace.identifiers.tokenization import IdentifierTokenizer
    from grace.run_layout import RunLayout

    save_karpathy(shared_tiny_dataset, tmp_path / "data" / "dataset.json")
    save_pseudo_queries(RunLayout(tmp_path).pseudo_queries, build_pseudo_queries(
        shared_tiny_dataset, KeywordPseudoQueries()), shared_tiny_dataset, protocol="tagged")
    (RunLayout(tmp_path).pseudo_queries.parent / "stage.json").write_text("{}")  # as the pseudo-query stage leaves it
    first = stage_ids(RunContext(tmp_path), "numeric", shared_tiny_dataset, None, tokenizer="byte", seed=0)

    def derived(idmap, ctx):
        tok = IdentifierTokenizer.load(RunLayout(tmp_path).ids("numeric") / "tokenizer")
        trie = stage_trie(ctx, "numeric", shared_tiny_dataset, idmap, tok)
        stage_shards(ctx, "numeric", shared_tiny_dataset, idmap, {})
        return trie

    derived(first, RunContext(tmp_path))
    ctx = RunContext(tmp_path)
    derived(first, ctx)
    assert {"trie/numeric", "shards/numeric"} <= ctx.timer.skipped  # same ids: reused
    ctx = RunContext(tmp_path)
    other = stage_ids(ctx, "numeric", shared_tiny_dataset, None, tokenizer="byte", seed=1)
    trie = derived(other, ctx)
    assert ctx.timer.built == ["ids/numeric", "trie/numeric", "shards/numeric"]  # the stale ones: rebuilt
    image = shared_tiny_dataset.split("test")[0].image_id
    assert other.to_id(image) != first.to_id(image)
    tok = IdentifierTokenizer.load(RunLayout(tmp_path).ids("numeric") / "tokenizer")
    assert trie.map_sequence(tok.encode_identifier(other.to_id(image)) + [tok.eoc_token_id]) == image


def test_a_training_killed_mid_way_resumes_in_its_folder_and_new_inputs_retrain_it(tmp_path):
    """An interrupted training keeps its checkpoints (its stage is resumable) and no record, so the next run
    resumes it; a model trained on other shards is never reused."""
    from grace.experiments.ablate import train_config
    from grace.experiments.pipeline import REAL_STAGES, stage_train
    from grace.experiments.settings import ablation_settings

    seen = []

    def train(config):
        out = Path(config.output_dir)
        seen.append(sorted(p.name for p in out.iterdir()))
        (out / "checkpoint-1").mkdir(exist_ok=True)
        if len(seen) == 1:
            raise KeyboardInterrupt
        (out / "export").mkdir()
        return types.SimpleNamespace(export_dir=out / "export")

    stages = dataclasses.replace(REAL_STAGES, train=train)
    training = ablation_settings(AblateConfig(run=tmp_path, model="tiny", steps=2, batch_size_i2id=2,
                                              batch_size_t2id=2)).training
    values = train_config(RunContext(tmp_path), "numeric", training, encoder="random", seed=0)
    for folder in ("shards/numeric", "ids/numeric", "features/random"):
        (tmp_path / folder).mkdir(parents=True)
        (tmp_path / folder / "stage.json").write_text(json.dumps({"built": folder}))
    with pytest.raises(KeyboardInterrupt):
        stage_train(RunContext(tmp_path), "numeric", values, stages=stages)
    out = tmp_path / "ckpt" / "numeric"
    assert not (out / "stage.json").exists() and (out / "checkpoint-1").is_dir()
    assert stage_train(RunContext(tmp_path), "numeric", values, stages=stages) == out / "export"
    assert seen[1] == ["checkpoint-1", "stage.building.json", "train_request.json"]  # resumed, not emptied
    ctx = RunContext(tmp_path)
    stage_train(ctx, "numeric", values, stages=stages)
    assert "train/numeric" in ctx.timer.skipped and len(seen) == 2
    (tmp_path / "shards" / "numeric" / "stage.json").write_text(json.dumps({"built": "other shards"}))
    stage_train(RunContext(tmp_path), "numeric", values, stages=stages)
    assert len(seen) == 3 and seen[2] == ["stage.building.json", "train_request.json"]  # from scratch
    assert json.loads((out / "stage.json").read_text())["settings"] == json.loads((out / "train_request.json").read_text())


@needs(EMOJI)
def test_data_built_with_other_settings_is_rebuilt_and_forcing_it_rebuilds_it(tmp_path, capsys):
    from grace.experiments.pipeline import stage_dataset

    built = stage_dataset(RunContext(tmp_path), benchmark="emoji", limit=12)
    ctx = RunContext(tmp_path)
    assert len(stage_dataset(ctx, benchmark="emoji", limit=12)) == len(built) and "data" in ctx.timer.skipped
    capsys.readouterr()
    assert len(stage_dataset(RunContext(tmp_path), benchmark="emoji", limit=20)) > len(built)
    assert "[data] stale (limit=12, now 20): rebuilding" in capsys.readouterr().out
    ctx = RunContext(tmp_path, force=("data",))
    stage_dataset(ctx, benchmark="emoji", limit=20)
    assert ctx.timer.built == ["data"]
