"""The honest protocol's data side: the leak filter (word bags, the emoji leaks it was built for), the
image-only knn-captions generator, protocol choices and their one-line errors, and pseudo-query files
that carry their provenance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from data_packages import CLDR, needs
from grace.data_process.dataset import Dataset, ImageRecord
from grace.data_process.emoji import CLDR_DIR
from grace.data_process.features import FeatureSet
from grace.data_process.leak_filter import LeakFilter, variant_bag, word_bag
from grace.data_process.protocol import get_protocol
from grace.data_process.pseudo_queries import (
    KeywordPseudoQueries,
    KnnCaptionPseudoQueries,
    PseudoQuerySet,
    build_pseudo_queries,
    load_pseudo_queries,
    save_pseudo_queries,
)
from grace.errors import GraceError, InputError

#: (held-out CLDR name, keyword pseudo-query that leaked it) — found on the full emoji benchmark
EMOJI_LEAKS = [("man kneeling", "kneeling man"), ("roasted sweet potato", "potato roasted sweet"),
               ("weary cat", "cat face oh surprised weary")]


def test_the_emoji_leaks_are_dropped():
    guard = LeakFilter({query: f"img{n}" for n, (query, _) in enumerate(EMOJI_LEAKS)})
    for n, (query, leaked) in enumerate(EMOJI_LEAKS):
        assert not guard.keep(leaked, f"img{n}"), (query, leaked)
        assert not guard.keep(leaked.upper() + "!", "other")  # case and punctuation do not hide it
    assert not guard.keep("Kneeling, man!")  # stems: kneel
    # qualifier variants: another gender or person word, or none, names the same family
    for variant in ("men kneeling", "kneeling", "woman kneeling: medium skin tone"):
        assert not guard.keep(variant, "other"), variant
    assert guard.counts.dropped_equal == 2 + 2 + 1 and guard.counts.dropped_contains == 2
    assert guard.counts.dropped_variant == 3 and guard.counts.dropped_own_image == 3
    for clean in ("sweet potato", "cat face", "a tired man", "man", "kneeling cat"):
        assert guard.keep(clean), clean
    assert variant_bag("family: man, woman, boy") == variant_bag("Family") == word_bag("family")
    assert variant_bag("mermaid") == variant_bag("merman") and not variant_bag("older person")
    assert word_bag("The Cats, running!") == word_bag("cat run")  # stop words dropped, stemmed


@needs(CLDR)
def test_no_keyword_pseudo_query_leaks_a_held_out_emoji_name():
    """On every CLDR emoji, split as the benchmark does: the issue's leaks are generated and then dropped,
    and no kept pseudo-query holds all the words of any held-out name (checked by brute force)."""
    from grace.data_process.emoji import assign_splits, read_cldr_annotations, split_texts

    entries = [e for e in read_cldr_annotations() if not e.has_skin_tone]
    entries = list({e.image_id: e for e in entries}.values())
    splits = assign_splits([e.image_id for e in entries], test_fraction=0.12, seed=0)
    records = []
    for e in entries:
        texts, keywords = split_texts([e.name], list(e.keywords), splits[e.image_id])
        records.append(ImageRecord(e.image_id, CLDR_DIR / "none.png", splits[e.image_id], texts, {"keywords": keywords}))
    dataset = Dataset(records)
    made = build_pseudo_queries(dataset, KeywordPseudoQueries(pairs=True, max_queries=24))
    assert made.leak.dropped > 100 and made.splits == ["test", "val"]
    held_out = [word_bag(t) for r in dataset.images if r.split != "train" for t in r.texts]
    for image_id, texts in made.queries.items():
        for text in texts:
            bag = word_bag(text)
            assert not any(query <= bag for query in held_out if query), (image_id, text)


def _captioned(tmp_path, n_train=6):
    train = [ImageRecord(f"t{i}", tmp_path / f"t{i}.png", "train", [f"caption {i} a", f"caption {i} b"])
             for i in range(n_train)]
    held = [ImageRecord("h", tmp_path / "h.png", "test", ["secret query words"], {"keywords": ["secret keyword"]}),
            ImageRecord("v", tmp_path / "v.png", "val", ["another secret"], {"keywords": ["hidden tag"]})]
    dataset = Dataset(train + held)
    rows = np.eye(len(dataset), 8, dtype=np.float32)
    rows[-2] = rows[2] + 0.5 * rows[4]  # "h" looks like t2, then t4
    rows[-1] = rows[5] + 0.1 * rows[0]  # "v" looks like t5, then t0
    return dataset, FeatureSet(ids=dataset.image_ids(), array=rows, encoder="test")


def test_knn_captions_read_the_nearest_training_captions_never_the_images_own(tmp_path):
    dataset, features = _captioned(tmp_path)
    made = build_pseudo_queries(dataset, KnnCaptionPseudoQueries(dataset, features, k=2, max_queries=3))
    assert made.queries["h"] == ["caption 2 a", "caption 4 a", "caption 2 b"]  # nearest first, round robin
    assert made.queries["v"][:2] == ["caption 5 a", "caption 0 a"]
    assert made.generator == "knn-captions" and made.splits == ["test", "val"]
    texts = " ".join(t for ts in made.queries.values() for t in ts)
    assert "secret" not in texts and "hidden" not in texts and "keyword" not in texts
    with pytest.raises(GraceError, match="k >= 1"):
        KnnCaptionPseudoQueries(dataset, features, k=0)


def test_protocols_choose_and_refuse_generators(tmp_path, monkeypatch):
    image_only, tagged = get_protocol("image-only"), get_protocol("tagged")
    assert image_only.default_generator == "knn-captions" and tagged.default_generator == "keywords"
    with pytest.raises(GraceError, match="unknown --protocol 'leaky'; known: image-only, tagged"):
        get_protocol("leaky")
    with pytest.raises(GraceError, match="reads the image's own annotations: use --protocol tagged"):
        image_only.check_generator("keywords")
    with pytest.raises(GraceError, match="does not allow"):
        tagged.check_generator("knn-captions")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(GraceError, match="needs the model hub, but the hub is offline"):
        image_only.check_generator("captioner:Salesforce/blip-image-captioning-base")
    assert image_only.check_generator(f"captioner:{tmp_path}") == f"captioner:{tmp_path}"  # a saved folder
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "0")
    assert image_only.check_generator("captioner:org/model") == "captioner:org/model"  # online: allowed


def test_pseudo_query_files_carry_provenance_and_refuse_another_dataset(tmp_path):
    dataset, features = _captioned(tmp_path)
    made = build_pseudo_queries(dataset, KnnCaptionPseudoQueries(dataset, features))
    path = tmp_path / "pq.json"
    saved = save_pseudo_queries(path, made, dataset, protocol="image-only", options={"k": 5})
    queries, provenance = load_pseudo_queries(path, dataset)
    assert queries == made.queries and provenance == saved and provenance["leak_filter"]["checked"] > 0
    assert {k: provenance[k] for k in ("protocol", "generator", "options")} == \
        {"protocol": "image-only", "generator": "knn-captions", "options": {"k": 5}}
    other = dataset.subset(dataset.image_ids()[1:])  # one training image fewer: another dataset
    with pytest.raises(InputError, match=r"pq\.json.*made for another dataset"):
        load_pseudo_queries(path, other)
    path.write_text(json.dumps({**made.queries, "h": ["edited"]}))
    with pytest.raises(InputError, match="changed since"):
        load_pseudo_queries(path, dataset)
    (tmp_path / "pq.config.json").unlink()
    with pytest.raises(InputError, match="no provenance file"):
        load_pseudo_queries(path, dataset)
    assert PseudoQuerySet({"h": []}, "x", ["test"]).summary().endswith("1 images without any")


LEAK_COUNT_SCRIPT = """
import json
from grace.data_process.leak_filter import LeakFilter
held_out = {"man kneeling": "a", "kneeling": "b", "woman kneeling": "c", "sweet potato": "d", "potato": "e",
            "red apple": "f", "apple": "g", "man pilot": "h", "pilot": "i", "cat face": "j", "weary cat": "k",
            "man cook": "l"}
guard = LeakFilter(held_out)
for text, image in [("kneeling man", "a"), ("kneeling man", "z"), ("potato sweet roasted", "e"),
                    ("apple red shiny", "g"), ("woman pilot", "z"), ("pilot man", "i"), ("cat face weary", "k"),
                    ("face of a cat", "z"), ("men kneeling", "c"), ("woman cook", "z")] * 3:
    guard.keep(text, image)
counts = guard.counts.as_dict()
print(json.dumps({k: v for k, v in counts.items()}, sort_keys=True))
"""


def test_leak_counts_are_the_same_under_any_hash_seed():
    """Texts that repeat several held-out queries at once: which one is counted (equal, superset, variant; the
    image's own) never depends on set iteration order."""
    import os
    import subprocess
    import sys

    outputs = []
    for hash_seed in ("1", "2", "3"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        outputs.append(subprocess.run([sys.executable, "-c", LEAK_COUNT_SCRIPT], env=env, check=True,
                                      capture_output=True, text=True).stdout)
    assert outputs[0] == outputs[1] == outputs[2]
    counts = json.loads(outputs[0])
    # per round: 4 equal bags, 5 supersets (the image's own query preferred), 1 variant only ("woman cook")
    assert (counts["dropped"], counts["dropped_equal"], counts["dropped_contains"], counts["dropped_variant"]) == \
        (30, 12, 15, 3)
    assert counts["dropped_own_image"] == 12
