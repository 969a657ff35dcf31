"""The offline benchmark builders: Noto emoji + CLDR, and openclipart SVGs."""

from __future__ import annotations

import json
import re

import pytest

from data_packages import EMOJI, OPENCLIPART, needs, require
from grace.data_process.dataset import load_karpathy
from grace.data_process.emoji import (
    CLDR_DIR,
    FONT_PATH,
    SKIN_TONES,
    assign_splits,
    build_emoji,
    emoji_entries,
    norm_key,
    split_texts,
)
from grace.data_process.openclipart import SVG_ROOT, build_openclipart
from grace.errors import GraceError

needs_emoji = needs(EMOJI)
needs_openclipart = needs(OPENCLIPART)
SAFE_ID = re.compile(r"^[A-Za-z0-9._-]+$")
HELD_OUT = ("test", "val")


@pytest.fixture(scope="module")
def emoji40(tmp_path_factory):
    out = tmp_path_factory.mktemp("emoji") / "emoji40"
    require(EMOJI)
    return out, build_emoji(out, limit=40, progress=False)


def _assert_held_out_semantics(dataset) -> None:
    for record in dataset.images:
        assert record.texts and all(t.strip() for t in record.texts)
        query_keys = {norm_key(t) for t in record.texts}
        keyword_keys = {norm_key(k) for k in record.meta["keywords"]}
        if record.split in HELD_OUT:
            assert not query_keys & keyword_keys, record.image_id
        else:
            assert keyword_keys <= query_keys  # train images use every text


def test_split_helpers():
    ids = [f"img{i}" for i in range(1000)]
    splits = assign_splits(ids, test_fraction=0.12, seed=3)
    assert splits == assign_splits(list(reversed(ids)), test_fraction=0.12, seed=3)
    assert sum(s == "test" for s in splits.values()) == 120
    assert sum(s == "val" for s in splits.values()) == 120  # val as large as test
    assert splits != assign_splits(ids, test_fraction=0.12, seed=4)
    assert set(assign_splits(["a", "b"], test_fraction=0.12, seed=0).values()) == {"train", "test"}
    texts, keywords = split_texts(["Grinning face"], ["face", "grinning  FACE", "grin", "face"], "test")
    assert texts == ["Grinning face"] and keywords == ["face", "grin"]
    texts, keywords = split_texts(["Grinning face"], ["face", "grin"], "train")
    assert texts == ["Grinning face", "face", "grin"] and keywords == ["face", "grin"]


@needs_emoji
def test_emoji_build_files_and_round_trip(emoji40):
    out, dataset = emoji40
    assert (out / "dataset.json").is_file() and len(dataset) >= 35
    ids = dataset.image_ids()
    assert len(set(ids)) == len(ids) and all(SAFE_ID.match(i) for i in ids)
    assert all(r.path.is_file() and r.path.parent == out / "images" for r in dataset.images)
    loaded = load_karpathy(out / "dataset.json")
    assert loaded.image_ids() == ids
    for a, b in zip(dataset.images, loaded.images):
        assert (a.split, a.texts, a.meta, a.path.resolve()) == (b.split, b.texts, b.meta, b.path.resolve())
    assert {"name", "keywords", "codepoints"} <= set(loaded.images[0].meta)
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["images"] == len(dataset) and "unrenderable" in summary["skipped"]


@needs_emoji
def test_emoji_texts_and_held_out_queries(emoji40):
    _, dataset = emoji40
    assert dataset.split("test")
    _assert_held_out_semantics(dataset)
    for record in dataset.images:
        assert record.texts[0] == record.meta["name"]
        if record.split in HELD_OUT:
            assert record.texts == [record.meta["name"]]


@needs_emoji
def test_emoji_png_is_not_blank(emoji40):
    from PIL import Image

    _, dataset = emoji40
    with Image.open(dataset.images[0].path) as image:
        assert image.size == (72, 72)
        rgb = image.convert("RGB")
        assert rgb.getbbox() is not None
        assert len(rgb.getcolors(maxcolors=72 * 72)) > 10  # a colour glyph, not a flat square
        assert rgb.getpixel((0, 0)) == (255, 255, 255)  # composited on white


@needs_emoji
def test_emoji_split_deterministic_and_reuses_pngs(emoji40, tmp_path):
    out, dataset = emoji40
    again = build_emoji(tmp_path / "again", limit=40, progress=False)
    assert [(r.image_id, r.split, r.texts) for r in again.images] == \
        [(r.image_id, r.split, r.texts) for r in dataset.images]
    other_seed = build_emoji(tmp_path / "again", limit=40, seed=1, progress=False)
    assert [r.split for r in other_seed.images] != [r.split for r in dataset.images]
    first = dataset.images[0].path
    mtime = first.stat().st_mtime_ns
    build_emoji(out, limit=40, progress=False)  # re-run: PNGs of the right size are kept
    assert first.stat().st_mtime_ns == mtime


@needs_emoji
def test_emoji_test_fraction(tmp_path):
    dataset = build_emoji(tmp_path / "e", limit=200, test_fraction=0.2, image_size=16, progress=False)
    assert len(dataset.split("test")) == round(0.2 * len(dataset))
    assert len(dataset.split("train")) > 0.6 * len(dataset)  # 20% test, 12% val


@needs_emoji
def test_emoji_skin_tones(tmp_path):
    def tones(chars: str) -> bool:
        return any(ord(c) in SKIN_TONES for c in chars)

    kept, _ = emoji_entries(drop_skin_tones=True)
    every, _ = emoji_entries(drop_skin_tones=False)
    assert not any(tones(e.chars) for e in kept)
    assert sum(tones(e.chars) for e in every) > 500 and len(every) > len(kept)
    dataset = build_emoji(tmp_path / "tones", drop_skin_tones=False, limit=30, image_size=16, progress=False)
    assert any(tones(r.meta["emoji"]) for r in dataset.images)


def test_missing_packages_raise_grace_error(tmp_path):
    with pytest.raises(GraceError, match="apt-get install fonts-noto-color-emoji"):
        build_emoji(tmp_path / "e", font_path=tmp_path / "missing.ttf", progress=False)
    if FONT_PATH.is_file():
        with pytest.raises(GraceError, match="unicode-cldr-core"):
            build_emoji(tmp_path / "e", cldr_dir=tmp_path / "nocldr", progress=False)
    with pytest.raises(GraceError, match="apt-get install openclipart-svg"):
        build_openclipart(tmp_path / "o", svg_root=tmp_path / "missing", progress=False)
    assert not (tmp_path / "e" / "dataset.json").exists()


def _svg(title: str, tags: list[str], body: str, size: str = 'width="40" height="40"') -> str:
    items = "".join(f"<rdf:li>{t}</rdf:li>" for t in tags)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" {size}><metadata>'
            '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" '
            'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:cc="http://web.resource.org/cc/">'
            f"<cc:Work><dc:title>{title}</dc:title><dc:description>A {title.lower()} drawing.</dc:description>"
            f"<dc:subject><rdf:Bag>{items}</rdf:Bag></dc:subject>"
            "<dc:creator><cc:Agent><dc:title>Jane Doe</dc:title></cc:Agent></dc:creator>"
            f"</cc:Work></rdf:RDF></metadata>{body}</svg>")


def test_openclipart_fake_root(tmp_path):
    pytest.importorskip("cairosvg")
    root = tmp_path / "svg"
    (root / "animals").mkdir(parents=True)
    (root / "food").mkdir()
    (root / "animals" / "red_cat.svg").write_text(
        _svg("Red Cat", ["cat", "animal", "Jane Doe", "clip art"], '<circle cx="20" cy="20" r="15" fill="red"/>'))
    (root / "food" / "green_apple.svg").write_text(
        _svg("Green Apple", ["fruit", "apple"], '<rect x="5" y="5" width="30" height="30" fill="green"/>'))
    (root / "food" / "broken.svg").write_text(_svg("Broken", ["x"], "<rect")[:-20])  # truncated XML
    (root / "food" / "no_size.svg").write_text(  # valid XML that cairosvg refuses
        _svg("No Size", ["y"], '<rect width="5" height="5"/>', size='width="0" height="0"'))
    (root / "food" / "empty.svg").write_text(_svg("Empty", ["z"], ""))  # renders blank
    out = tmp_path / "out"
    dataset = build_openclipart(out, svg_root=root, image_size=32, progress=False)
    assert sorted(dataset.image_ids()) == ["clip-green_apple", "clip-red_cat"]
    summary = json.loads((out / "build_summary.json").read_text())
    assert summary["skipped"]["unreadable"] == 1
    assert summary["skipped"]["render_failed"] == 1 and summary["skipped"]["blank"] == 1
    cat = dataset["clip-red_cat"]
    assert cat.meta["name"] == "Red Cat" and "Jane Doe" not in cat.meta["keywords"]
    assert "clip art" not in cat.meta["keywords"] and "cat" in cat.meta["keywords"]
    _assert_held_out_semantics(dataset)
    assert len(dataset.split("test")) == 1
    loaded = load_karpathy(out / "dataset.json")
    assert loaded.image_ids() == dataset.image_ids()


@needs_openclipart
def test_openclipart_real_subset(tmp_path):
    pytest.importorskip("cairosvg")
    dataset = build_openclipart(tmp_path / "oc", limit=10, image_size=32, progress=False)
    assert 5 <= len(dataset) <= 10
    ids = dataset.image_ids()
    assert len(set(ids)) == len(ids) and all(SAFE_ID.match(i) for i in ids)
    assert all(r.path.is_file() for r in dataset.images)
    _assert_held_out_semantics(dataset)
    assert load_karpathy(tmp_path / "oc" / "dataset.json").image_ids() == ids
