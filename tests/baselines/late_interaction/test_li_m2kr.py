"""M2KR: the loader on a tiny task written in the benchmark's layout (parquet subsets), and `grace eval
--m2kr` (Recall@K to 500, pseudo-recall, intervals) over a zero-shot FLMR-checkpoint passage index."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flmr_fixture import write_flmr_checkpoint
from PIL import Image

from grace.data_process.m2kr import load_m2kr, pseudo_rank, query_text
from grace.errors import InputError

PASSAGES = {"p0": "paris is the capital of france", "p1": "a robin is a small red breasted bird",
            "p2": "volcanoes erupt molten lava", "p3": "the violin has four strings",
            "p4": "penguins live in antarctica", "p5": "tea grows on green hills"}
QUERIES = [("q0", "what is the capital of france", "0.png", ["p0"], ["Paris"]),
           ("q1", "which bird has a red breast", None, ["p1"], ["robin"]),
           ("q2", "how many strings does a violin have", "1.png", ["p3"], ["four"]),
           ("q3", "where do penguins live", None, ["p4", "p2"], ["antarctica", "south pole"]),
           ("q4", "what do cats eat", None, ["p9"], ["fish"])]  # its positive is not in the corpus
INSTRUCTION = "Using the provided image, obtain documents that address the subsequent question"


def write_m2kr(root, task="EVQA", split="test"):
    """``<task>_data/<split>-00000-of-00001.parquet`` + ``<task>_passages/<split>_passages-...parquet``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    (root / f"{task}_data").mkdir(parents=True)
    (root / f"{task}_passages").mkdir(parents=True)
    data = {"question_id": [q[0] for q in QUERIES], "question": [q[1] for q in QUERIES],
            "img_path": [q[2] for q in QUERIES], "pos_item_ids": [q[3] for q in QUERIES],
            "answers": [q[4] for q in QUERIES], "instruction": [INSTRUCTION] * len(QUERIES)}
    pq.write_table(pa.table(data), root / f"{task}_data" / f"{split}-00000-of-00001.parquet")
    pq.write_table(pa.table({"passage_id": list(PASSAGES), "passage_content": list(PASSAGES.values())}),
                   root / f"{task}_passages" / f"{split}_passages-00000-of-00001.parquet")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(root / "images" / f"{i}.png")
    return root


def test_m2kr_loader_and_metrics_helpers(tmp_path):
    root = write_m2kr(tmp_path / "m2kr")
    task = load_m2kr(root, "EVQA", "test", image_root=root / "images")
    assert [q.question_id for q in task.queries] == ["q0", "q1", "q2", "q3", "q4"]
    assert task.queries[0].image == root / "images" / "0.png" and task.queries[1].image is None
    assert task.queries[3].pos_item_ids == ["p4", "p2"] and task.passage_ids == list(PASSAGES)
    assert task.queries[0].text == f"{INSTRUCTION}: what is the capital of france"
    assert query_text("find it:", "q") == "find it: q" and query_text("", "q") == "q"
    assert pseudo_rank(["no", "Paris, France", "paris"], [" paris "]) == 2
    assert pseudo_rank(["none here"], ["x"]) == 0
    assert len(load_m2kr(root, "EVQA", "test", limit=2).queries) == 2
    with pytest.raises(InputError, match="M2KR layout"):
        load_m2kr(root, "OKVQA", "test")
    with pytest.raises(InputError, match="M2KR layout"):
        load_m2kr(root, "EVQA", "valid")


def test_eval_m2kr_recall_to_500_and_pseudo_recall(tmp_path, capsys):
    from grace.cli import main
    from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever
    from grace.retriever import Query

    root = write_m2kr(tmp_path / "m2kr")
    write_flmr_checkpoint(tmp_path / "preflmr", preflmr=True)
    assert main(["baselines", "late-interaction", "index", "--checkpoint", str(tmp_path / "preflmr"),
                 "--m2kr", str(root), "--m2kr-task", "EVQA", "--split", "test", "--out", str(tmp_path / "index"),
                 "--backend", "exact"]) == 0
    assert main(["eval", "--m2kr", str(root), "--m2kr-task", "EVQA", "--image-root", str(root / "images"),
                 "--retriever", f"late_interaction:{tmp_path / 'index'}", "--ks", "1", "2", "500",
                 "--pseudo-recall", "--out", str(tmp_path / "results"), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "PR@2" in printed
    res = json.loads((tmp_path / "results" / "results.json").read_text())["late_interaction"]
    assert res["num_queries"] == 5 and res["corpus_size"] == 6
    assert res["recall@500"] == pytest.approx(4 / 5)  # K beyond the corpus is clipped; q4's positive is never found
    # the same numbers from the retriever's own rankings (black image for image-less queries)
    retriever = LateInteractionRetriever.load(tmp_path / "index")
    blank = tmp_path / "results" / "blank_336.png"
    assert blank.is_file()
    queries = [Query(text=f"{INSTRUCTION}: {q[1]}", image=root / "images" / q[2] if q[2] else blank) for q in QUERIES]
    ranked = [[h.image_id for h in hits] for hits in retriever.search(queries, 6)]
    for k in (1, 2):
        want = np.mean([bool(set(r[:k]) & set(q[3])) for r, q in zip(ranked, QUERIES)])
        assert res[f"recall@{k}"] == pytest.approx(want)
        want_pr = np.mean([any(a.lower() in PASSAGES[p] for p in r[:k] for a in q[4]) for r, q in zip(ranked, QUERIES)])
        assert res[f"pseudo_recall@{k}"] == pytest.approx(want_pr)
        low, high = res[f"pseudo_recall@{k}_ci"]
        assert low <= res[f"pseudo_recall@{k}"] <= high
    table = (tmp_path / "results" / "table.md").read_text()
    assert "PR@500" in table and "pseudo-recall" in table
    assert main(["eval", "--m2kr", str(root), "--m2kr-task", "EVQA", "--out", str(tmp_path / "r2")]) != 0
    assert "needs at least one --retriever" in capsys.readouterr().err
