"""``grace eval --checkpoints RUN/ckpt/<scheme>``: every checkpoint of a training scored on val and test, the
last one exactly as the export it became (ZeRO-3 partitions consolidated), the best step chosen on val."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from train_helpers import build_tiny_run, subprocess_env


@pytest.mark.parametrize("stage", [pytest.param(0, marks=pytest.mark.slow), 3])  # 3: partitions reassembled
def test_eval_checkpoints_scores_every_step_and_the_last_equals_the_export(tmp_path, stage):
    from grace.data_process.dataset import save_karpathy
    from grace.data_process.synthetic import build_synthetic
    from grace.experiments.configs import EvalConfig
    from grace.experiments.eval_run import run_eval
    from grace.experiments.query_sets import split_queries
    from grace.identifiers import IdentifierMap, build_trie
    from grace.infer.evaluate import evaluate
    from grace.infer.retriever import GenerativeRetriever
    from grace.run_layout import RunLayout

    dataset = build_synthetic(tmp_path / "source", n_images=20, val_every=4)
    run = tmp_path / "run"
    save_karpathy(dataset, run / "data" / "dataset.json")
    values = build_tiny_run(run / "work", dataset)
    idmap = IdentifierMap.load(values["ids_dir"])
    idmap.save(run / "ids" / "numeric")
    for split in ("test", "val"):
        build_trie(idmap, idmap.tokenizer(), [r.image_id for r in dataset.split(split)]).save(
            RunLayout(run).trie("numeric", split))
    values.update(output_dir=str(run / "ckpt" / "numeric"), steps=6, checkpoint_every=2, keep_checkpoints=0,
                  zero_stage=stage)
    (tmp_path / "cfg.json").write_text(json.dumps(values))
    proc = subprocess.run([sys.executable, "-m", "grace.cli", "train", "--config", str(tmp_path / "cfg.json")],
                          env=subprocess_env(), capture_output=True, text=True, check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    report = run_eval(EvalConfig(checkpoints=run / "ckpt" / "numeric", out=tmp_path / "out", num_beams=4,
                                 progress=False))
    assert sorted({r["step"] for r in report["rows"]}) == [2, 4, 6]
    assert {r["set"] for r in report["rows"]} == {"val", "test"} and report["chosen_on"] == "val"
    val = {r["step"]: r for r in report["rows"] if r["set"] == "val"}
    assert val[report["best_step"]]["recall@1"] == max(r["recall@1"] for r in val.values())
    assert all("recall@1_ci" in r for r in report["rows"])
    # the last checkpoint is the exported model: same ranks on the test queries
    retriever = GenerativeRetriever.load(run / "ckpt" / "numeric" / "export", ids=run / "ids" / "numeric",
                                         trie=RunLayout(run).trie("numeric", "test"), device="cpu", num_beams=4)
    test = split_queries(dataset, "test")
    exported = evaluate(retriever, test.texts, test.gold, progress=False)
    last = next(r for r in report["rows"] if r["step"] == 6 and r["set"] == "test")
    assert last["gold_ranks"] == exported["gold_ranks"]
    assert (tmp_path / "out" / "checkpoints.png").stat().st_size > 1000
    assert "best on val" in (tmp_path / "out" / "checkpoints.md").read_text()
