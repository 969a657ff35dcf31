"""LiT heads train (loss falls), the trained retriever beats random, retrieve-pairs writes its files."""

from __future__ import annotations

import json
import tarfile

from grace.data_process.dataset import test_queries
from grace.retrieval_baselines.clip_faiss.configs import BuildIndexConfig, RetrievePairsConfig
from grace.retrieval_baselines.clip_faiss.index import build_index
from grace.retrieval_baselines.clip_faiss.pairs import retrieve_pairs
from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever
from grace.retrieval_baselines.random import RandomRetriever
from grace.retriever import Query


def _recall1(retriever, texts, gold):
    hits = retriever.search([Query(text=t) for t in texts], 1)
    return sum(h[0].image_id == g for h, g in zip(hits, gold)) / len(gold)


def test_heads_loss_falls(lit_heads):
    history = lit_heads[1]["loss_history"]
    assert history[-1] < 0.5 * history[0]
    assert (lit_heads[0] / "heads.safetensors").is_file() and (lit_heads[0] / "config.json").is_file()


def test_trained_retriever_beats_random(shared_tiny_dataset, lit_features, lit_encoder, tmp_path):
    for mode in ("image", "text"):
        build_index(BuildIndexConfig(features=lit_features[0], out=tmp_path / mode, feature_mode=mode, use_gpu=False))
    retriever = ClipFaissRetriever.load(tmp_path / "image", encoder=lit_encoder, use_gpu=False)
    assert json.loads((tmp_path / "image" / "index_config.json").read_text())["built_on"] == "cpu"
    texts, gold = test_queries(shared_tiny_dataset, "train")
    rand = RandomRetriever(shared_tiny_dataset.image_ids(), seed=0)
    assert _recall1(retriever, texts, gold) >= 0.5 > _recall1(rand, texts, gold)
    # caption keys: hits are distinct owner images
    text_ret = ClipFaissRetriever.load(tmp_path / "text", encoder=lit_encoder, use_gpu=False)
    hits = text_ret.search([Query(text=texts[0])], 5)[0]
    assert len({h.image_id for h in hits}) == 5
    assert _recall1(text_ret, texts, gold) >= 0.5
    # image → text: an image's own caption ranks high
    record = shared_tiny_dataset.split("train")[0]
    i2t = retriever.search_texts([record.path], 3)[0]
    assert record.image_id in [image_id for _, image_id, _ in i2t]


def test_retrieve_pairs_writes_class_folders_and_shards(lit_features, lit_encoder, tmp_path):
    build_index(BuildIndexConfig(features=lit_features[0], out=tmp_path / "index", use_gpu=False))
    retriever = ClipFaissRetriever.load(tmp_path / "index", encoder=lit_encoder, use_gpu=False)
    config = RetrievePairsConfig(index=tmp_path / "index", classes=["red circle", "blue square"],
                                 templates=["a {}", "a picture of a {}."], images_per_class=3,
                                 out=tmp_path / "pairs", shards=True, max_per_shard=4)
    meta = retrieve_pairs(config, retriever=retriever)
    for folder in ("red_circle", "blue_square"):
        names = sorted(p.name for p in (tmp_path / "pairs" / folder).iterdir())
        assert names == ["0000.png", "0000.txt", "0001.png", "0001.txt", "0002.png", "0002.txt"]
    on_disk = json.loads((tmp_path / "pairs" / "metadata.json").read_text())
    assert on_disk["classes"]["red circle"]["pairs"][0]["file"] == "red_circle/0000.png"
    assert meta["shards"] == ["shards/pairs-000000.tar", "shards/pairs-000001.tar"]
    with tarfile.open(tmp_path / "pairs" / "shards" / "pairs-000000.tar") as tar:
        assert len(tar.getnames()) == 4 * 3  # 4 samples × (png, txt, json)
    red = on_disk["classes"]["red circle"]["pairs"]
    assert sum("red" in p["image_id"] for p in red) >= 2


def test_interleave_prompt_hits_takes_each_prompts_rank_in_turn():
    from grace.retrieval_baselines.clip_faiss.pairs import interleave_prompt_hits

    images = ["a", "b", "c", "d", "e"]  # row -> image
    per_prompt = [[(0, 0.9), (1, 0.8), (2, 0.7)], [(1, 0.95), (3, 0.6)], [(0, 0.5), (4, 0.4)]]
    assert interleave_prompt_hits(per_prompt, images, 10) == [(0, 0.9, 0), (1, 0.95, 1), (3, 0.6, 1), (4, 0.4, 2),
                                                               (2, 0.7, 0)]
    assert [r for r, _, _ in interleave_prompt_hits(per_prompt, images, 2)] == [0, 1]


def test_retrieve_pairs_separate_prompts(lit_features, lit_encoder, tmp_path):
    build_index(BuildIndexConfig(features=lit_features[0], out=tmp_path / "index", use_gpu=False))
    retriever = ClipFaissRetriever.load(tmp_path / "index", encoder=lit_encoder, use_gpu=False)
    templates = ["a {}", "a picture of a {}.", "{} on white"]
    config = RetrievePairsConfig(index=tmp_path / "index", classes=["red circle", "blue square"], templates=templates,
                                 images_per_class=4, out=tmp_path / "pairs", prompt_mode="separate", folders=False)
    meta = retrieve_pairs(config, retriever=retriever)
    assert meta["prompt_mode"] == "separate"
    for cls, entry in meta["classes"].items():
        pairs = entry["pairs"]
        assert len(pairs) == 4 and len({p["image_id"] for p in pairs}) == 4
        assert {p["prompt"] for p in pairs} <= {t.format(cls) for t in templates}
        # the first pair is the best hit of the first prompt, searched alone
        first = retriever.search([Query(text=templates[0].format(cls))], 1)[0][0]
        assert pairs[0]["image_id"] == first.image_id and pairs[0]["prompt"] == templates[0].format(cls)
    averaged = retrieve_pairs(RetrievePairsConfig(index=tmp_path / "index", classes=["red circle"], templates=templates,
                                                  images_per_class=4, out=tmp_path / "avg", folders=False),
                              retriever=retriever)
    assert averaged["classes"]["red circle"]["pairs"][0]["prompt"] is None


def test_imagenet_class_set_ships_names_and_templates(lit_features, lit_encoder, tmp_path):
    import pytest

    from grace.errors import InputError
    from grace.retrieval_baselines.clip_faiss.pairs import load_class_set, resolve_classes

    imagenet = load_class_set("imagenet-1k")
    assert len(imagenet["classes"]) == 1000 and imagenet["classes"][:2] == ["tench", "goldfish"]
    assert len(imagenet["templates"]) == 80 and all("{}" in t for t in imagenet["templates"])
    _, folders, templates = resolve_classes(RetrievePairsConfig(dataset="imagenet-1k"))
    assert folders[0] == "0000_tench" and len(set(folders)) == 1000 and templates == imagenet["templates"]
    with pytest.raises(InputError, match="not both"):
        resolve_classes(RetrievePairsConfig(dataset="imagenet-1k", classes=["cat"]))
    with pytest.raises(InputError, match="unknown class set"):
        resolve_classes(RetrievePairsConfig(dataset="imagenet-22k"))
    build_index(BuildIndexConfig(features=lit_features[0], out=tmp_path / "index", use_gpu=False))
    retriever = ClipFaissRetriever.load(tmp_path / "index", encoder=lit_encoder, use_gpu=False)
    meta = retrieve_pairs(RetrievePairsConfig(index=tmp_path / "index", dataset="imagenet-1k", templates=["a {}."],
                                              images_per_class=1, out=tmp_path / "pairs", folders=False),
                          retriever=retriever)
    assert len(meta["classes"]) == 1000 and meta["classes"]["0000_tench"]["class"] == "tench"
    assert meta["classes"]["0657_missile"]["class"] == meta["classes"]["0744_missile"]["class"] == "missile"
    assert meta["dataset"] == "imagenet-1k" and meta["templates"] == ["a {}."]


def test_score_gives_search_scores_for_any_candidate(shared_tiny_dataset, lit_features, lit_encoder, tmp_path):
    """The hybrid's re-ranker: the score of a given image is the one search ranks it by (image keys and caption
    keys), and an image outside the index is a one-line error (IVF-PQ: test_cf_index.py)."""
    import pytest

    from grace.errors import InputError

    texts, _ = test_queries(shared_tiny_dataset, "train")
    queries = [Query(text=t) for t in texts[:4]]
    for mode, index in (("image", "Flat"), ("text", "Flat")):
        out = tmp_path / f"{mode}-{index}"
        build_index(BuildIndexConfig(features=lit_features[0], out=out, feature_mode=mode, index=index,
                                     use_gpu=False))
        retriever = ClipFaissRetriever.load(out, encoder=lit_encoder, use_gpu=False)
        hits = retriever.search(queries, 6)
        reversed_candidates = [[h.image_id for h in row][::-1] for row in hits]
        scores = retriever.score(queries, reversed_candidates)
        for row, scored in zip(hits, scores):
            assert scored[::-1] == [pytest.approx(h.score, abs=1e-4) for h in row], (mode, index)
        with pytest.raises(InputError, match="not in this index's corpus"):
            retriever.score(queries[:1], [["no-such-image"]])
    # a hybrid's union pool searches and re-scores one batch: its texts go through the text tower once
    encoded = []
    real_encode = lit_encoder.encode_texts
    lit_encoder.encode_texts = lambda texts, *a, **kw: encoded.append(list(texts)) or real_encode(texts, *a, **kw)
    try:
        fresh = ClipFaissRetriever.load(tmp_path / "image-Flat", encoder=lit_encoder, use_gpu=False)
        with fresh.one_batch():
            hits = fresh.search(queries, 3)
            fresh.score(queries, [[h.image_id for h in row] for row in hits])
            assert encoded == [texts[:4]]
            fresh.score(queries[:2], [[h.image_id for h in row] for row in hits[:2]])  # another batch: encoded
            assert encoded == [texts[:4], texts[:2]]
        fresh.score(queries, [[h.image_id for h in row] for row in hits])  # outside the block nothing is kept
        assert encoded == [texts[:4], texts[:2], texts[:4]]
    finally:
        lit_encoder.encode_texts = real_encode
