"""ViD2R construction: LLaVA-Instruct dialogues and a jsonl knowledge base in their released layouts, the
neural filter (drop turns the question answers alone), response-to-passage positives, hard negatives, and the
offline instance (synthetic shapes + a tiny WordNet)."""

from __future__ import annotations

import json

import pytest
from test_li_kbvqa import SYNSETS, write_wordnet

from grace.errors import InputError
from grace.retrieval_baselines.late_interaction.vid2r import Turn, build_vid2r, read_dialogues, read_passages


def test_dialogues_and_knowledge_base_in_their_released_layouts(tmp_path):
    llava = [{"id": "000000033471", "image": "000000033471.jpg", "conversations": [
                 {"from": "human", "value": "<image>\nWhat are the colors of the bus in the image?"},
                 {"from": "gpt", "value": "The bus in the image is white and red."},
                 {"from": "human", "value": "What feature can be seen on the back of the bus?"},
                 {"from": "gpt", "value": "The back of the bus features an advertisement."}]},
             {"id": "text-only", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}]
    (tmp_path / "llava.json").write_text(json.dumps(llava))
    turns = read_dialogues(tmp_path / "llava.json")
    assert [t.question for t in turns] == ["What are the colors of the bus in the image?",
                                           "What feature can be seen on the back of the bus?"]
    assert {t.image for t in turns} == {"000000033471.jpg"} and turns[1].response.endswith("advertisement.")
    llava[0]["conversations"][1]["from"] = "human"
    (tmp_path / "bad.json").write_text(json.dumps(llava))
    with pytest.raises(InputError, match="alternate human / gpt"):
        read_dialogues(tmp_path / "bad.json")

    wiki = [{"wikipedia_id": "12", "wikipedia_title": "Bus", "text": "A bus is a road vehicle."},
            {"id": "p2", "text": "An advertisement is a notice."}]
    (tmp_path / "kb.jsonl").write_text("\n".join(json.dumps(r) for r in wiki) + "\n\n")
    assert read_passages(tmp_path / "kb.jsonl") == (["12", "p2"], ["Bus: A bus is a road vehicle.",
                                                                   "An advertisement is a notice."])
    (tmp_path / "bad.jsonl").write_text(json.dumps({"id": "x", "title": "no text"}) + "\n")
    with pytest.raises(InputError, match="needs one of"):
        read_passages(tmp_path / "bad.jsonl")


def test_filter_drops_what_the_question_answers_alone():
    ids = [o for o, _, _ in SYNSETS]
    passages = [f"{', '.join(w)}: {g}" for _, w, g in SYNSETS]
    hammer = "A hammer is a hand tool with a heavy rigid head and a handle."
    turns = [Turn("a", "a.png", "What is this, and what is it for?", hammer),
             Turn("b", "b.png", "What does the word 'hammer' mean?", hammer),
             Turn("c", "c.png", "What is this?", "This is the front of the human head, a face.")]
    entries, report = build_vid2r(turns, ids, passages, filter_k=1, positives=2, negatives=2)
    assert report["turns"] == 3 and report["dropped_by_filter"] == 1
    kept = {e["source_id"]: e for e in entries}
    assert kept.keys() == {"a", "c"}  # b: the word alone retrieves the hammer gloss, the image adds nothing
    for source, gold in (("a", "00000005"), ("c", "00000007")):
        assert kept[source]["positives"][0] == gold and len(kept[source]["positives"]) == 2
        assert len(kept[source]["negatives"]) == 2
        assert not set(kept[source]["negatives"]) & set(kept[source]["positives"])
    assert build_vid2r(turns, ids, passages, filter_k=0)[1]["kept"] == 3  # filtering off


def test_offline_instance_end_to_end(shared_tiny_dataset, tmp_path):
    from grace.cli import main

    wordnet = write_wordnet(tmp_path / "wn")
    out = tmp_path / "vid2r"
    assert main(["baselines", "late-interaction", "vid2r", "--offline", "--emoji-dir",
                 str(shared_tiny_dataset.root.parent), "--wordnet-dir", str(wordnet), "--filter-k", "1",
                 "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    entries = json.loads((out / "vid2r.json").read_text())
    dialogues = json.loads((out / "dialogues.json").read_text())
    train = {r.image_id for r in shared_tiny_dataset.split("train")}
    assert report["turns"] == 2 * len(dialogues) == 2 * len(train)  # every shape has a noun ...
    assert {d["id"] for d in dialogues} == train  # ... and no test image is seen in pre-training
    assert all(e["question"].startswith("What is this") for e in entries)  # the word questions all dropped
    assert report["kept"] == len(entries) > 0
    gold = {d["id"]: d["conversations"][1]["value"] for d in dialogues}
    for entry in entries:  # the response's best passage is its shape's gloss
        shape = next(w for _, ws, _ in SYNSETS for w in ws if f"A {w} is" in gold[entry["source_id"]])
        assert entry["positives"][0] == next(o for o, ws, _ in SYNSETS if shape in ws)
        assert entry["image"].endswith(".png")


def test_train_on_vid2r_triples_through_the_cli(shared_tiny_dataset, tmp_path, capsys):
    """ViD2R → `train --direction vid2r` (in-batch + the triples' hard negatives) learns, and its model
    continues (`--init-from`) in a second run; bad passage ids are a clear error."""
    from grace.cli import main

    wordnet = write_wordnet(tmp_path / "wn")
    out = tmp_path / "vid2r"
    assert main(["baselines", "late-interaction", "vid2r", "--offline", "--emoji-dir",
                 str(shared_tiny_dataset.root.parent), "--wordnet-dir", str(wordnet), "--filter-k", "0",
                 "--positives", "1", "--negatives", "2", "--out", str(out)]) == 0
    common = ["baselines", "late-interaction", "train", "--direction", "vid2r", "--vid2r", str(out / "vid2r.json"),
              "--fusion", "flmr", "--batch-size", "8", "--hard-negatives", "1", "--lr", "3e-3"]
    assert main(common + ["--steps", "60", "--out", str(tmp_path / "pre")]) == 0
    stats = json.loads((tmp_path / "pre" / "config.json").read_text())["train_stats"]
    assert stats["direction"] == "vid2r" and stats["num_pairs"] == stats["num_entries"] > 0
    assert stats["loss_last"] < 0.7 * stats["loss_first"], stats  # it learns
    assert main(common + ["--steps", "5", "--init-from", str(tmp_path / "pre"), "--out", str(tmp_path / "ft")]) == 0
    again = json.loads((tmp_path / "ft" / "config.json").read_text())["train_stats"]
    assert again["init_from"] == str(tmp_path / "pre") and again["loss_first"] < stats["loss_first"]
    entries = json.loads((out / "vid2r.json").read_text())
    entries[0]["positives"] = ["no-such-passage"]
    (out / "bad.json").write_text(json.dumps(entries))
    capsys.readouterr()
    assert main(common[:6] + [str(out / "bad.json"), "--kb", str(out / "kb.jsonl"), "--out", str(tmp_path / "x")]) != 0
    assert "not in the knowledge base" in capsys.readouterr().err


def test_real_kb_layouts_wiki6m_gzipped_and_m2kr_passages(tmp_path, caplog):
    """The knowledge bases as published: Wiki6M_ver_1_0.jsonl(.gz) (wikidata_id, wikipedia_title,
    wikipedia_content, with wikipedia_summary when the content is empty) and M2KR's passages (passage_id,
    passage_content); the reader says which fields it read."""
    import gzip
    import shutil
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    gz = tmp_path / "Wiki6M_ver_1_0.jsonl.gz"
    with open(fixtures / "wiki6m_sample.jsonl", "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    with caplog.at_level("INFO", logger="grace.retrieval_baselines.late_interaction.vid2r"):
        ids, texts = read_passages(gz)
    assert ids == ["Q146", "Q144", "Q7366"]
    assert texts[0].startswith("Cat: A small domesticated carnivorous") and texts[2] == \
        "Song: A musical composition meant to be sung."  # empty content: the summary
    assert "2 passages with ids from 'wikidata_id', texts from 'wikipedia_content'" in caplog.text
    assert "texts from 'wikipedia_summary'" in caplog.text
    assert read_passages(fixtures / "wiki6m_sample.jsonl") == (ids, texts)
    ids, texts = read_passages(fixtures / "m2kr_passages_sample.jsonl")
    assert ids == ["WikiWeb_Cat_0", "WikiWeb_Dog_1"] and texts[1] == "Dog. A domesticated descendant of the wolf."
    (tmp_path / "broken.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(InputError, match="cannot read the knowledge base"):
        read_passages(tmp_path / "broken.jsonl.gz")
