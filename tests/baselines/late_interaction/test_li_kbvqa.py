"""KB-VQA on a tiny WordNet written by the test and the synthetic shapes (names → head nouns)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from grace.errors import InputError
from grace.retrieval_baselines.late_interaction.kbvqa import WordNet, build_kbvqa, kbvqa_metrics

SYNSETS = [  # offset, words, gloss
    ("00000001", ["circle", "round"], "ellipse in which the two axes are of equal length"),
    ("00000002", ["square"], "a plane rectangle with four equal sides and four right angles"),
    ("00000003", ["triangle", "trigon"], "a three-sided polygon"),
    ("00000004", ["cross"], "a marking that consists of lines that cross each other"),
    ("00000005", ["hammer"], "a hand tool with a heavy rigid head and a handle"),
    ("00000006", ["water_polo"], "a game played in a swimming pool by two teams"),
    ("00000007", ["face"], "the front of the human head"),
]


def write_wordnet(folder):
    folder.mkdir(parents=True, exist_ok=True)
    data = ["  1 license header line"]
    index = ["  1 license header line"]
    for offset, words, gloss in SYNSETS:
        lemmas = " ".join(f"{w} 0" for w in words)
        data.append(f"{offset} 06 n {len(words):02x} {lemmas} 000 | {gloss}  ")
    for word in sorted({w for _, ws, _ in SYNSETS for w in ws}):
        offsets = [o for o, ws, _ in SYNSETS if word in ws]
        index.append(f"{word} n {len(offsets)} 0 {len(offsets)} 0 {' '.join(offsets)}  ")
    (folder / "data.noun").write_text("\n".join(data) + "\n", encoding="latin-1")
    (folder / "index.noun").write_text("\n".join(index) + "\n", encoding="latin-1")
    return folder


def test_wordnet_head_nouns(tmp_path):
    wn = WordNet.read(write_wordnet(tmp_path / "wn"))
    assert wn.passages["00000001"].startswith("circle, round: ellipse")
    assert wn.head_noun("a small red circle") == ("circle", "00000001")
    assert wn.head_noun("hammers and wrench") == ("hammer", "00000005")
    assert wn.head_noun("woman playing water polo") == ("water polo", "00000006")
    assert wn.head_noun("grinning face with big eyes") == ("face", "00000007")
    assert wn.head_noun("keycap: 1") is None


def test_kbvqa_metrics():
    passages = ["circle: round", "square: four sides", "triangle: three sides"]
    results = [[(1, 3.0), (0, 2.0)], [(2, 1.0), (1, 0.5)]]
    m = kbvqa_metrics(results, gold=[0, 0], words=["circle", "four"], passages=passages, ks=(1, 2))
    assert m == {"R@1": 0.0, "PR@1": 0.0, "R@2": 50.0, "PR@2": 100.0}


def test_run_kbvqa_end_to_end(shared_tiny_dataset, tmp_path):
    from grace.retrieval_baselines.late_interaction.configs import KBVQAConfig
    from grace.retrieval_baselines.late_interaction.kbvqa import run_kbvqa

    wn_dir = write_wordnet(tmp_path / "wn")
    task = build_kbvqa(shared_tiny_dataset, WordNet.read(wn_dir), kb_size=0)
    assert len(task.passages) == len(SYNSETS) and set(task.queries) == {"train", "test"}
    assert {w for *_, w in task.queries["train"]} <= {"circle", "square", "triangle", "cross"}
    config = KBVQAConfig(out=tmp_path / "out", dataset=shared_tiny_dataset.root.parent / "dataset.json",
                         wordnet_dir=wn_dir, kb_size=0, fusions=["none", "flmr"], text_encoder="random:32", dim=32,
                         visual_grid=3, steps=5, batch_size=8, plaid_nbits=[], dedupe_answers=False)
    summary = run_kbvqa(config, progress=False)
    on_disk = json.loads((tmp_path / "out" / "results.json").read_text())
    assert on_disk["models"].keys() == {"none", "flmr"} and on_disk["task"]["test_queries"] == 4
    for metrics in summary["models"].values():
        assert 0.0 <= metrics["R@5"] <= metrics["R@10"] <= 100.0 and metrics["PR@10"] >= metrics["R@10"]
    assert (tmp_path / "out" / "flmr" / "index" / "config.json").is_file()
    assert (tmp_path / "out" / "config.json").is_file()
    for metrics in on_disk["models"].values():  # per-query ranks back every recall and its interval
        for name, key in (("R", "gold_ranks"), ("PR", "pseudo_ranks")):
            ranks = metrics[key]
            assert len(ranks) == 4 and metrics[f"{name}@5"] == 100.0 * sum(0 < r <= 5 for r in ranks) / 4
            low, high = metrics[f"{name}@5_ci"]
            assert low <= metrics[f"{name}@5"] <= high
    # a second run compared with the first, paired on the same queries
    again = run_kbvqa(dataclasses.replace(config, out=tmp_path / "again", fusions=["flmr"],
                                          compare_with=tmp_path / "out" / "results.json"), progress=False)
    comp = again["compared_with"]["by_fusion"]["flmr"]
    assert comp["R@5"]["num_queries"] == 4 and comp["R@5"]["diff"] == pytest.approx(
        (again["models"]["flmr"]["R@5"] - summary["models"]["flmr"]["R@5"]) / 100)
    report = (tmp_path / "again" / "results.md").read_text()
    assert "Paired vs" in report and "| flmr |" in report
    bad = json.loads((tmp_path / "out" / "results.json").read_text())
    bad["task"]["passages"] += 1
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match="another task"):
        run_kbvqa(dataclasses.replace(config, out=tmp_path / "x", fusions=["none"], compare_with=tmp_path / "bad.json"),
                  progress=False)
