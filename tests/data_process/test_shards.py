"""i2id / t2id shards: read-back, the no-leak guarantee, atomic writes and resume; pseudo-queries."""

from __future__ import annotations

import json

import pytest

from grace.data_process.dataset import load_karpathy, test_queries
from grace.data_process.pseudo_queries import (
    KeywordPseudoQueries,
    build_pseudo_queries,
    leak_filter,
    normalise,
)
from grace.data_process.shards import read_shards, write_shards
from grace.errors import InputError


class DigitIds:
    """Image i → "i" in digits (the only interface write_shards needs is ``to_id``)."""

    def __init__(self, dataset):
        self.table = {r.image_id: " ".join(str(i)) for i, r in enumerate(dataset.images)}

    def to_id(self, image_id):
        return self.table[image_id]


def _leaky_dataset(dataset):
    """Make one test image's keyword equal to another test image's held-out query."""
    tests = dataset.split("test")
    tests[0].meta["keywords"] = list(tests[0].meta["keywords"]) + [tests[1].texts[0].upper() + "  "]
    return dataset


def test_pseudo_queries_never_return_a_held_out_query(tiny_dataset):
    dataset = _leaky_dataset(tiny_dataset)
    queries = build_pseudo_queries(dataset, KeywordPseudoQueries()).queries
    held_out = {normalise(t) for t in test_queries(dataset)[0]}
    assert set(queries) == {r.image_id for r in dataset.split("test")}
    assert all(queries.values())
    assert not {normalise(q) for qs in queries.values() for q in qs} & held_out


def test_shards_read_back_and_no_test_query_leaks(tiny_dataset, tmp_path):
    dataset = _leaky_dataset(tiny_dataset)
    queries = build_pseudo_queries(dataset, KeywordPseudoQueries()).queries
    summary = write_shards(dataset, DigitIds(dataset), tmp_path / "shards", pseudo_queries=queries, max_per_shard=7,
                           progress=False)
    i2id = list(read_shards(tmp_path / "shards", "i2id"))
    t2id = list(read_shards(tmp_path / "shards", "t2id"))
    assert len(i2id) == len(dataset) == summary["tasks"]["i2id"]["samples"]
    assert len(summary["tasks"]["i2id"]["shards"]) == -(-len(dataset) // 7)
    ids = DigitIds(dataset)
    for sample in i2id:
        meta = sample["json"]
        assert meta["task"] == "i2id" and meta["text"] == ""
        assert meta["identifier"] == ids.to_id(meta["image_id"])
        assert sample["png"].size == (32, 32)  # decoded image (PIL)
    train_texts = sum(len(r.texts) for r in dataset.split("train"))
    assert len(t2id) == train_texts + sum(map(len, queries.values()))
    held_out = {normalise(t) for t in test_queries(dataset)[0]}
    assert not {normalise(s["json"]["text"]) for s in t2id if s["json"]["split"] == "test"} & held_out
    pairs = {(normalise(s["json"]["text"]), s["json"]["image_id"]) for s in t2id}
    assert not pairs & {(normalise(t), g) for t, g in zip(*test_queries(dataset))}


def test_write_shards_refuses_a_leaking_pseudo_query(tiny_dataset, tmp_path):
    test_image = tiny_dataset.split("test")[0]
    with pytest.raises(InputError, match="leak"):
        write_shards(tiny_dataset, DigitIds(tiny_dataset), tmp_path / "s",
                     pseudo_queries={test_image.image_id: [test_image.texts[0]]}, progress=False)


def test_killed_run_leaves_no_shard_and_resume_completes(tiny_dataset, tmp_path, monkeypatch):
    import grace.data_process.shards as shards

    out = tmp_path / "shards"
    real = shards._image_member
    calls = {"n": 0}

    def dies_after_ten(path, image_id):
        calls["n"] += 1
        if calls["n"] > 10:
            raise KeyboardInterrupt
        return real(path, image_id)

    monkeypatch.setattr(shards, "_image_member", dies_after_ten)
    with pytest.raises(KeyboardInterrupt):
        write_shards(tiny_dataset, DigitIds(tiny_dataset), out, pseudo_queries={}, max_per_shard=4, progress=False)
    done = sorted(p.name for p in out.glob("*.tar"))
    assert done == ["i2id-000000.tar", "i2id-000001.tar"]  # 10 samples: two full shards, no partial third
    assert not (out / "shards.json").exists()
    monkeypatch.setattr(shards, "_image_member", real)
    before = (out / "i2id-000000.tar").stat().st_mtime_ns
    write_shards(tiny_dataset, DigitIds(tiny_dataset), out, pseudo_queries={}, max_per_shard=4, progress=False)
    assert (out / "i2id-000000.tar").stat().st_mtime_ns == before  # finished shard kept, not rewritten
    assert len(list(read_shards(out, "i2id"))) == len(tiny_dataset)
    assert (out / "shards.json").is_file() and not list(out.glob(".tmp-*"))


def test_missing_and_corrupt_images_name_the_file(tiny_dataset, tmp_path):
    record = tiny_dataset.images[3]
    record.path.write_bytes(b"not a png at all")
    with pytest.raises(InputError, match=record.path.name):
        write_shards(tiny_dataset, DigitIds(tiny_dataset), tmp_path / "a", pseudo_queries={}, progress=False)
    record.path.unlink()
    with pytest.raises(InputError, match="not found"):
        write_shards(tiny_dataset, DigitIds(tiny_dataset), tmp_path / "b", pseudo_queries={}, progress=False)


def test_karpathy_loader_bad_inputs(tmp_path, tiny_dataset):
    bad = tmp_path / "bad.json"
    bad.write_text('{"images": [')
    with pytest.raises(InputError, match="malformed JSON"):
        load_karpathy(bad)
    bad.write_text('{"images": [{"filename": "a.png", "sentences": [{"raw": " "}]}]}')
    with pytest.raises(InputError, match="empty caption"):
        load_karpathy(bad, check_files=False)
    bad.write_text('{"images": [{"filename": "a.png", "sentences": [{"raw": "x"}]},'
                   ' {"filename": "a.jpg", "sentences": [{"raw": "y"}]}]}')
    with pytest.raises(InputError, match="duplicate image id"):
        load_karpathy(bad, check_files=False)
    bad.write_text('{"images": [{"filename": "missing.png", "sentences": [{"raw": "x"}]}]}')
    with pytest.raises(InputError, match="missing.png"):
        load_karpathy(bad, tmp_path)


def test_keyword_generator_joins_keywords_first_and_caps(tiny_dataset):
    from grace.data_process.dataset import ImageRecord

    record = ImageRecord("x", tiny_dataset.images[0].path, "test", ["a query"], {"keywords": ["red", "round", "big", "big red"]})
    assert KeywordPseudoQueries().generate(record) == ["red round big", "red", "round", "big", "big red"]
    assert KeywordPseudoQueries(joined=False, max_queries=2, templates=("a {}",)).generate(record) == ["a red", "a round"]
    with pytest.raises(Exception, match="at least 1"):
        KeywordPseudoQueries(max_queries=0)


def test_keyword_generator_pairs_and_templates(tiny_dataset):
    from grace.data_process.dataset import ImageRecord

    record = ImageRecord("x", tiny_dataset.images[0].path, "test", ["a query"], {"keywords": ["face", "wink"]})
    assert KeywordPseudoQueries(pairs=True).generate(record) == ["face wink", "face", "wink", "wink face"]
    assert KeywordPseudoQueries(pairs=True, joined=False, templates=("{}", "{} icon"), max_queries=5).generate(record) \
        == ["face", "face icon", "wink", "wink icon", "face wink"]
    with pytest.raises(Exception, match=r"exactly one '\{\}'"):
        KeywordPseudoQueries(templates=("no slot",))


def test_pairs_never_return_a_held_out_query(tiny_dataset):
    """A word pair, or the joined keywords, can spell another image's held-out query ("round red" here) in any
    order; it is removed like any leak."""
    from grace.data_process.dataset import Dataset, ImageRecord

    path = tiny_dataset.images[0].path
    dataset = Dataset([ImageRecord("a", path, "test", ["round red"], {"keywords": ["dot"]}),
                       ImageRecord("b", path, "test", ["crimson ball"], {"keywords": ["red", "round"]})])
    queries = build_pseudo_queries(dataset, KeywordPseudoQueries(pairs=True)).queries
    assert queries["b"] == ["red", "round"]  # "red round" / "round red": the words of a held-out query
    assert build_pseudo_queries(dataset, KeywordPseudoQueries(pairs=True, joined=False)).queries["b"] \
        == ["red", "round"]


def test_cli_keyword_options_and_config_beside(tiny_dataset, tmp_path):
    from grace.cli import main
    from grace.data_process.dataset import save_karpathy

    dataset_json = tmp_path / "dataset.json"
    save_karpathy(tiny_dataset, dataset_json)
    out = tmp_path / "pq" / "queries.json"
    assert main(["data", "pseudo-queries", "--dataset", str(dataset_json), "--protocol", "tagged", "--pairs",
                 "--max-queries", "30", "--templates", "{}", "a {}", "--out", str(out)]) == 0
    written = json.loads(out.read_text())
    record = tiny_dataset.split("test")[0]
    generated = KeywordPseudoQueries(pairs=True, max_queries=30, templates=("{}", "a {}")).generate(record)
    expected = [t for t in generated if leak_filter(tiny_dataset).leaked_query(t) is None]
    assert written[record.image_id] == expected and "a " + expected[0] in expected
    assert len(expected) < len(generated)  # "red square small" holds every word of "a small red square"
    config = json.loads((tmp_path / "pq" / "queries.config.json").read_text())
    assert config["options"] == {"pairs": True, "templates": ["{}", "a {}"], "max_queries": 30}
    assert config["protocol"] == "tagged" and config["generator"] == "keywords" and config["dataset_digest"]
    assert main(["data", "pseudo-queries", "--dataset", str(dataset_json), "--generator", "keywords",
                 "--out", str(out)]) == 2  # image-only (the default) refuses the image's own keywords
