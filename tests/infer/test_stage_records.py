"""Reused run-folder stages are never stale: each stage's ``stage.json`` (settings + input digests) is checked;
a derived stage is rebuilt on a difference, stale data or a model trained on other inputs stops the run with a
one-line error naming the difference."""

from __future__ import annotations

import json

import pytest

from data_packages import EMOJI, needs
from grace.errors import GraceError
from grace.experiments.stage_record import differences, reusable, save_record, stage_record


def test_digest_differences_name_the_setting_or_input(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    want = stage_record({"limit": 5}, {"dataset": tmp_path / "a.txt"})
    assert differences(want, want) == []
    assert differences(None, want) == ["no stage record (built by an older grace)"]
    (tmp_path / "a.txt").write_text("two")
    now = stage_record({"limit": 6}, {"dataset": tmp_path / "a.txt"})
    assert differences(want, now) == ["limit=5, now 6", "input dataset changed"]
    folder = tmp_path / "stage"
    folder.mkdir()
    save_record(folder, want)
    assert reusable(folder, True, want, stage="s") and not reusable(folder, False, want, stage="s")
    with pytest.raises(GraceError, match=r"stage \(s\) was built from something else: limit=5, now 6"):
        reusable(folder, True, now, stage="s", on_change="error")
    assert not reusable(folder, True, now, stage="s") and not folder.exists()  # rebuild: the stale folder goes


def test_stale_trie_and_shards_are_rebuilt_when_the_ids_change(shared_tiny_dataset, tmp_path):
    from grace.data_process.dataset import save_karpathy
    from grace.experiments.pipeline import StageTimer, stage_ids, stage_shards, stage_trie
    from grace.identifiers.tokenization import IdentifierTokenizer
    from grace.run_layout import RunLayout

    save_karpathy(shared_tiny_dataset, tmp_path / "data" / "dataset.json")
    first = stage_ids(tmp_path, "numeric", shared_tiny_dataset, None, StageTimer(), tokenizer="byte", seed=0)

    def derived(idmap, timer):
        tok = IdentifierTokenizer.load(RunLayout(tmp_path).ids("numeric") / "tokenizer")
        trie = stage_trie(tmp_path, "numeric", shared_tiny_dataset, idmap, tok, timer)
        stage_shards(tmp_path, "numeric", shared_tiny_dataset, idmap, {}, timer)
        return trie

    derived(first, StageTimer())
    timer = StageTimer()
    derived(first, timer)
    assert {"trie/numeric", "shards/numeric"} <= timer.skipped  # same ids: reused
    timer = StageTimer()
    other = stage_ids(tmp_path, "numeric", shared_tiny_dataset, None, timer, tokenizer="byte", seed=1)
    trie = derived(other, timer)
    assert not {"ids/numeric", "trie/numeric", "shards/numeric"} & timer.skipped  # the stale ones: rebuilt
    image = shared_tiny_dataset.split("test")[0].image_id
    assert other.to_id(image) != first.to_id(image)
    tok = IdentifierTokenizer.load(RunLayout(tmp_path).ids("numeric") / "tokenizer")
    assert trie.map_sequence(tok.encode_identifier(other.to_id(image)) + [tok.eoc_token_id]) == image


def test_stale_training_inputs_are_an_error(shared_tiny_dataset, tmp_path):
    """A model trained on other shards is never reused as if it were trained on these (nor resumed from)."""
    from grace.experiments.pipeline import StageTimer, stage_train, train_config_values

    values = train_config_values(tmp_path, "numeric", model="tiny", steps=2, lr=1e-3, batch_size_i2id=2,
                                 batch_size_t2id=2, encoder="random", seed=0)
    shards = tmp_path / "shards" / "numeric"
    shards.mkdir(parents=True)
    (shards / "shards.json").write_text(json.dumps({"shards": 1}))
    out = tmp_path / "ckpt" / "numeric"
    (out / "export").mkdir(parents=True)  # as a finished training leaves it
    (out / "train_request.json").write_text(json.dumps(values))
    save_record(out, stage_record({}, {"shards": shards / "shards.json", "ids": tmp_path / "ids" / "numeric" / "ids.json",
                                       "features": tmp_path / "features" / "random" / "meta.json"}))
    timer = StageTimer()
    assert stage_train(tmp_path, "numeric", values, timer) == out / "export" and "train/numeric" in timer.skipped
    (shards / "shards.json").write_text(json.dumps({"shards": 2}))
    with pytest.raises(GraceError, match="train/numeric.*input shards changed"):
        stage_train(tmp_path, "numeric", values, StageTimer())


@needs(EMOJI)
def test_stale_data_built_with_other_settings_is_an_error(tmp_path):
    from grace.experiments.pipeline import StageTimer, stage_dataset

    built = stage_dataset(tmp_path, StageTimer(), benchmark="emoji", limit=12)
    timer = StageTimer()
    assert len(stage_dataset(tmp_path, timer, benchmark="emoji", limit=12)) == len(built) and "data" in timer.skipped
    with pytest.raises(GraceError, match="limit=12, now 20"):
        stage_dataset(tmp_path, StageTimer(), benchmark="emoji", limit=20)
    with pytest.raises(GraceError, match="benchmark='emoji', now 'openclipart'"):
        stage_dataset(tmp_path, StageTimer(), benchmark="openclipart", limit=12)
    assert len(stage_dataset(tmp_path, StageTimer(), benchmark="emoji", limit=20, force=True)) > len(built)
