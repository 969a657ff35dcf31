"""Recall@K semantics, the generative retriever, and the eval harness (1 process vs torchrun gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from infer_helpers import tiny_generative_retriever

from grace.infer.evaluate import evaluate, hits_at_k, recall_at_k
from grace.retriever import Hit, Query, Retriever
from launch_helpers import torchrun_prefix

HERE = Path(__file__).parent


def test_recall_hand_made():
    rankings = [["a", "b", "c"], ["b", "a", "c"], ["x", "y", "z"], ["c", "c", "c", "a"]]
    gold = ["a", "a", "a", "a"]
    r = recall_at_k(rankings, gold, ks=(1, 2, 3))
    # q0 hits at 1; q1 at 2; q2 never; q3: duplicates collapse to distinct images -> "a" is 2nd distinct
    assert r == {"recall@1": 0.25, "recall@2": 0.75, "recall@3": 0.75}


def test_recall_semantic_ids_count_any_caption_id():
    """Semantic ids: several identifiers name one image; the retriever maps ids→images, gold may be a set."""
    id_to_image = {"a red apple": "img1", "apple fruit": "img1", "a banana": "img2"}
    generated = [["apple fruit", "a banana"], ["a banana", "a red apple"]]
    rankings = [[id_to_image[i] for i in row] for row in generated]
    assert recall_at_k(rankings, ["img1", "img1"], ks=(1, 2)) == {"recall@1": 0.5, "recall@2": 1.0}
    assert hits_at_k(["img3", "img2"], {"img2", "img9"}, ks=(1, 2)) == {1: False, 2: True}
    with pytest.raises(ValueError):
        recall_at_k([["a"]], [], ks=(1,))


class _Fixed(Retriever):
    name = "fixed"

    def search(self, queries, k):
        return [[Hit(q.text, 1.0)][:k] for q in queries]

    @classmethod
    def load(cls, path, **kw):
        return cls()


def test_evaluate_returns_metrics_and_latency():
    res = evaluate(_Fixed(), ["a", Query(text="b"), "c"], ["a", "x", "c"], ks=(1, 5), progress=False)
    assert res["recall@1"] == pytest.approx(2 / 3) and res["recall@5"] == pytest.approx(2 / 3)
    assert res["latency_ms"] >= 0 and res["num_queries"] == 3


def test_generative_retriever_returns_distinct_valid_images():
    retriever = tiny_generative_retriever(n_images=30, num_beams=6)
    queries = [Query(text=f"query {i}") for i in range(20)]
    results = retriever.search(queries, k=5)
    valid = set(retriever.idmap.image_to_id)
    assert len(results) == 20
    for hits in results:
        ids = [h.image_id for h in hits]
        assert len(ids) == 5 and len(set(ids)) == 5 and set(ids) <= valid
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # k above num_beams widens the beam so k distinct images come back
    assert len(retriever.search(queries[:2], k=12)[0]) == 12


def _run(cmd):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(HERE.parent)]), OMP_NUM_THREADS="1")
    out = subprocess.run(cmd, check=False, cwd=HERE, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(line[-1][len("RESULT "):])


@pytest.mark.multiproc
def test_torchrun_two_processes_equal_one_process():
    single = _run([sys.executable, "infer_dist_script.py"])
    double = _run([*torchrun_prefix(2), "infer_dist_script.py"])
    assert single == double
    assert single["num_queries"] == 23 and 0 < single["recall@10"] <= 1


def test_grace_eval_cli_random_baseline(shared_tiny_dataset, tmp_path, capsys):
    from grace.cli import main

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    out = tmp_path / "results"
    assert main(["eval", "--dataset", str(dataset_json), "--out", str(out), "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert set(results) == {"random", "provenance"}
    provenance = results.pop("provenance")
    test = shared_tiny_dataset.split("test")
    assert provenance["protocol"] == "image-only" and provenance["queries"]["gold"] == [r.image_id for r in test]
    assert provenance["queries"]["ids"] == [f"{r.image_id}#0" for r in test] and "commit" in provenance["git"]
    assert results["random"]["num_queries"] == len(shared_tiny_dataset.split("test"))
    low, high = results["random"]["recall@1_ci"]  # every recall comes with its interval
    assert low <= results["random"]["recall@1"] <= high and len(results["random"]["gold_ranks"]) == 4
    for name in ("table.md", "recall.png", "latency.png", "config.json"):
        assert (out / name).is_file()
    assert "| random |" in capsys.readouterr().out
    # bad input: a one-line error naming the file, or the flag
    assert main(["eval", "--dataset", str(tmp_path / "missing.json"), "--out", str(out)]) == 2
    assert main(["eval", "--dataset", str(dataset_json), "--out", str(out), "--protocol", "leaky"]) == 2
    assert "unknown --protocol 'leaky'" in capsys.readouterr().err


def test_a_flamingo_model_reads_the_null_image_once_per_search():
    import torch

    from grace.model import create_model

    retriever = tiny_generative_retriever(n_images=20, num_beams=3)
    tok = retriever.tokenizer
    torch.manual_seed(0)
    retriever.model = create_model("tiny", vocab_size=48, image_token_id=tok.image_token_id,
                                   eoc_token_id=tok.eoc_token_id, pad_token_id=tok.pad_token_id).eval()
    inputs = retriever.prompt_inputs(["a", "bb b"])
    assert inputs["vision_features"].shape[0] == 2  # the prompt: one null image per query
    rows = []
    retriever.model.perceiver.register_forward_hook(lambda module, args, out: rows.append(out.shape[0]))
    results = retriever.search([Query(text="a"), Query(text="bb b")], k=3)
    assert all(len(r) == 3 for r in results)
    assert rows == [1]  # decoding: the null image's latents once for the whole search, reused by every beam


def test_grace_eval_missing_export_is_one_line_error(shared_tiny_dataset, tmp_path, capsys):
    from grace.cli import main

    dataset_json = shared_tiny_dataset.root.parent / "dataset.json"
    code = main(["eval", "--dataset", str(dataset_json), "--retriever", f"generative:{tmp_path / 'nope'}",
                 "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "export folder not found" in err[0] and "nope" in err[0]


def test_eval_on_hand_written_queries_over_their_split(tiny_with_val, tmp_path, capsys):
    """--queries-file: the file's queries, paired by its query ids, over the images of the split it names;
    queries whose image is not in this dataset are dropped (a run on a subset); a wrong file is one line."""
    from grace.cli import main

    dataset_json = tiny_with_val.root.parent / "dataset.json"
    val = tiny_with_val.split("val")
    rows = [{"query_id": f"nq-{n}", "image_id": r.image_id, "text": f"hand written {n}"} for n, r in enumerate(val)]
    rows.append({"query_id": "nq-gone", "image_id": "not-in-this-subset", "text": "dropped"})
    natural = tmp_path / "natural.json"
    natural.write_text(json.dumps({"benchmark": "synthetic", "split": "val", "queries": rows}))
    out = tmp_path / "results"
    assert main(["eval", "--dataset", str(dataset_json), "--queries-file", str(natural), "--out", str(out),
                 "--no-progress"]) == 0
    results = json.loads((out / "results.json").read_text())
    queries = results["provenance"]["queries"]
    assert queries["ids"] == [f"nq-{n}" for n in range(len(val))] and queries["split"] == "val"
    assert "4 of 5 queries have their image here" in queries["source"]
    assert results["random"]["corpus_size"] == len(val) == results["random"]["num_queries"]
    natural.write_text(json.dumps({"split": "val", "queries": [rows[-1]]}))
    assert main(["eval", "--dataset", str(dataset_json), "--queries-file", str(natural), "--out", str(out)]) == 2
    assert "none of its 1 queries has its image in this dataset's val split" in capsys.readouterr().err
    natural.write_text(json.dumps({"split": "val", "queries": [{"image_id": val[0].image_id}]}))
    assert main(["eval", "--dataset", str(dataset_json), "--queries-file", str(natural), "--out", str(out)]) == 2
