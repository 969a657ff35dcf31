"""Group-aware splits: variant families never straddle train / val / test, on the built-in benchmarks and on a
user's own Karpathy JSON (``--group-by``); ``grace data check`` finds the families an ungrouped split breaks."""

from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from data_packages import CLDR, EMOJI, OPENCLIPART, needs
from grace.data_process.dataset import Dataset, ImageRecord, load_karpathy
from grace.data_process.emoji import (
    CLDR_DIR,
    assign_splits,
    emoji_group_keys,
    read_cldr_annotations,
    split_texts,
)
from grace.data_process.features import FeatureSet
from grace.data_process.groups import (
    assign_group_splits,
    connected_groups,
    group_by_rule,
    name_key,
    regroup,
    regroup_karpathy,
)
from grace.data_process.near_duplicates import image_pairs, near_duplicate_report, text_pairs
from grace.errors import GraceError, InputError


def test_connected_groups_join_images_through_shared_keys():
    groups = connected_groups({"a": ["k1"], "b": ["k1", "k2"], "c": ["k2"], "d": ["k3"], "e": []})
    assert groups["a"] == groups["b"] == groups["c"] == "k1"
    assert groups["d"] == "k3" and groups["e"] == "id:e"


def test_group_splits_keep_groups_whole_fill_the_quotas_and_are_deterministic():
    groups = {f"img{i}": f"g{i // 3}" for i in range(300)}  # 100 groups of 3
    splits = assign_group_splits(groups, test_fraction=0.12, seed=0)
    by_group = defaultdict(set)
    for image_id, split in splits.items():
        by_group[groups[image_id]].add(split)
    assert all(len(s) == 1 for s in by_group.values())
    counts = {s: sum(v == s for v in splits.values()) for s in ("train", "val", "test")}
    assert counts["test"] == 36 and counts["val"] == 36 and counts["train"] == 228
    assert assign_group_splits(groups, test_fraction=0.12, seed=0) == splits
    assert assign_group_splits(groups, test_fraction=0.12, seed=1) != splits
    # one image per group is the plain seeded split
    ids = [f"img{i}" for i in range(50)]
    assert assign_splits(ids, test_fraction=0.2, seed=3) == assign_group_splits({i: i for i in ids},
                                                                              test_fraction=0.2, seed=3)


def test_name_keys_join_gender_and_person_variants():
    assert name_key("man pilot") == name_key("woman pilot") == name_key("pilot")
    assert name_key("family: man, woman, boy") == name_key("family")
    assert name_key("man") == name_key("older person")
    assert name_key("kneeling cat") != name_key("kneeling")


def _cldr_dataset(split_of) -> Dataset:
    entries = list({e.image_id: e for e in read_cldr_annotations() if not e.has_skin_tone}.values())
    splits = split_of(entries)
    records = []
    for e in entries:
        texts, keywords = split_texts([e.name], list(e.keywords), splits[e.image_id])
        records.append(ImageRecord(e.image_id, CLDR_DIR / "none.png", splits[e.image_id], texts,
                                   {"name": e.name, "keywords": keywords}))
    return Dataset(records)


@needs(CLDR)
def test_every_cldr_family_stays_in_one_split_and_an_ungrouped_split_breaks_them():
    """On every CLDR emoji: the per-image split of before puts variant families on both sides (the check
    finds them); the grouped split leaves none."""
    entries = list({e.image_id: e for e in read_cldr_annotations() if not e.has_skin_tone}.values())
    by_name = {e.name: e.image_id for e in entries}
    keys = emoji_group_keys(entries)
    groups = connected_groups(keys)
    assert groups[by_name["man pilot"]] == groups[by_name["woman pilot"]] == groups[by_name["pilot"]]
    assert groups[by_name["polar bear"]] == groups[by_name["bear"]]  # a ZWJ sequence with its base
    assert groups[by_name["keycap: 1"]] == groups[by_name["keycap: 2"]]
    assert groups[by_name["flag: Germany"]] != groups[by_name["flag: France"]]
    assert groups[by_name["man pilot"]] != groups[by_name["man cook"]]  # a person base joins nothing

    ungrouped = _cldr_dataset(lambda es: assign_splits([e.image_id for e in es], test_fraction=0.12, seed=0))
    leaks = text_pairs(ungrouped)
    assert len({p["a"] for p in leaks if p["a_split"] == "test"}) >= 20
    assert near_duplicate_report(ungrouped)["cross_split_groups"] > 0
    grouped = _cldr_dataset(lambda es: assign_group_splits(connected_groups(emoji_group_keys(es)),
                                                           test_fraction=0.12, seed=0))
    assert text_pairs(grouped) == [] and near_duplicate_report(grouped)["cross_split_groups"] == 0


def test_image_pairs_find_look_alike_images_across_splits():
    records = [ImageRecord(f"i{n}", CLDR_DIR / "none.png", split, [f"thing {n}"])
               for n, split in enumerate(["train", "test", "val", "train"])]
    dataset = Dataset(records)
    vectors = np.array([[1, 0, 0], [0.99, 0.05, 0], [0, 1, 0], [0, 0.2, 1]], dtype=np.float32)
    pairs = image_pairs(dataset, FeatureSet([r.image_id for r in records], vectors, "fake"))
    assert [(p["a"], p["b"]) for p in pairs] == [("i1", "i0")]
    report = near_duplicate_report(dataset, FeatureSet([r.image_id for r in records], vectors, "fake"))
    assert report["cross_split_groups"] == 1 and report["table"][0]["kind"] == "image"


def _built_check(dataset_json):
    from grace.data_process.features import image_features

    dataset = load_karpathy(dataset_json)
    features = image_features(dataset, cache_dir=dataset_json.parent / "features" / "efficientnet-lite0",
                              progress=False)
    return near_duplicate_report(dataset, features)


@needs(EMOJI)
def test_built_emoji_subset_has_no_cross_split_group(tmp_path):
    from grace.data_process.emoji import build_emoji

    build_emoji(tmp_path / "e", limit=160, image_size=32, test_fraction=0.2, progress=False)
    summary = json.loads((tmp_path / "e" / "groups.json").read_text())
    assert summary["cross_split_groups"] == [] and summary["groups"] < summary["images"]
    assert "qualifiers" in summary["rule"]["rule"] and summary["rule"]["image_cosine"] == 0.95
    report = _built_check(tmp_path / "e" / "dataset.json")  # features reused from the build's cache
    assert report["cross_split_groups"] == 0, report["table"]
    assert all(r.meta["group"] for r in load_karpathy(tmp_path / "e" / "dataset.json").images)


@needs(OPENCLIPART)
def test_built_openclipart_subset_has_no_cross_split_group(tmp_path):
    from grace.data_process.openclipart import build_openclipart, series_stem

    assert series_stem("rocket_04") == series_stem("rocket 05") == series_stem("rocket-3b") == "rocket"
    build_openclipart(tmp_path / "o", limit=120, image_size=32, test_fraction=0.2, progress=False)
    assert _built_check(tmp_path / "o" / "dataset.json")["cross_split_groups"] == 0


def _karpathy(tmp_path, names: list[str]):
    from PIL import Image

    (tmp_path / "images").mkdir()
    for name in names:
        Image.new("RGB", (8, 8), (len(name) * 9 % 255, 0, 0)).save(tmp_path / "images" / name)
    images = [{"filename": n, "split": "train", "sentences": [{"raw": f"a picture of {n[:-4]}"}],
               "author": n.split("_")[0]} for n in names]
    path = tmp_path / "dataset_own.json"
    path.write_text(json.dumps({"dataset": "own", "images": images}))
    return path


def test_group_by_regex_or_field_keeps_series_together(tmp_path):
    names = [f"{stem}_{i:02d}.png" for stem in ("dog", "cat", "boat", "tree", "lamp", "rock", "cup", "fish")
             for i in range(4)]
    source = _karpathy(tmp_path, names)
    out = tmp_path / "out"
    dataset = regroup_karpathy(source, out, r"re:^(.+?)_\d+", test_fraction=0.25, seed=0)
    summary = json.loads((out / "groups.json").read_text())
    assert summary["groups"] == 8 and summary["rule"]["group_by"] == r"re:^(.+?)_\d+"
    assert summary["cross_split_groups"] == []
    by_stem = defaultdict(set)
    for record in load_karpathy(out / "dataset.json").images:
        by_stem[record.path.name.split("_")[0]].add(record.split)
    assert all(len(s) == 1 for s in by_stem.values()) and {r.split for r in dataset.images} >= {"train", "test"}
    by_field, _ = regroup(load_karpathy(source), "author", test_fraction=0.25)
    assert {r.meta["group"] for r in by_field.images} == {f"author:{n.split('_')[0]}" for n in names}
    with pytest.raises(InputError, match="no field 'album'"):
        regroup(load_karpathy(source), "album")
    with pytest.raises(GraceError, match="not a regular expression"):
        group_by_rule("re:([")
