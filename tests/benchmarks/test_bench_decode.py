"""benchmarks/bench_decode.py end to end on tiny models: P1 at two batch sizes, the loop comparison (the new loop
returns the reference loop's answers), P2, dense rows and the latency-vs-corpus plot."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
from bench_decode import BenchConfig, run_bench  # (benchmarks/ is a folder of scripts, not a package)


def test_bench_decode_writes_every_section(tmp_path):
    config = BenchConfig(out=tmp_path / "bench", model="tiny-llama", num_beams=4, batch_size=2, id_digits=3,
                         p1_ids=200, p1_repeats=1, sizes=[1000, 3000], p2_queries=2, loop_models=["tiny-llama", "tiny"],
                         loop_batch=3, loop_repeats=1, compile=True)  # on a CPU: the eager fallback, labelled
    run_bench(config, ["--model", "tiny-llama"])
    assert torch.is_grad_enabled()  # the benchmark leaves the process's autograd as it found it
    results = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert [p["batch"] for p in results["p1_batches"]] == [2, 3] and results["p1"]["batch"] == 2
    assert [r["model"] for r in results["loop"]] == ["tiny-llama", "tiny"]
    for row in results["loop"]:
        assert min(row["reference_qps"], row["new_qps"], row["new_dynamic_qps"], row["new_bf16_qps"]) > 0
        # each speed-up is the ratio of the two loops timed in this run, not a constant
        assert row["speedup"] == pytest.approx(row["new_qps"] / row["reference_qps"])
        assert row["static_cache_speedup"] == pytest.approx(row["new_qps"] / row["new_dynamic_qps"])
        assert row["bf16_speedup"] == pytest.approx(row["new_bf16_qps"] / row["reference_qps"])
        assert row["new_top1_equal"] == 1.0 and row["new_max_score_diff"] < 1e-4  # same answers as the reference
        assert row["id_head_speedup"] == pytest.approx(row["new_id_head_qps"] / row["new_qps"])
        assert 0.0 <= row["id_head_top1_equal"] <= 1.0
        assert row["compiled_ran"] is False  # the row says the eager step was timed, not a compiled one
    assert {(f["what"], f["used"]) for f in results["fallbacks"]} >= {("decode step", "eager")}
    assert [r["ids"] for r in results["p2"]] == [1000, 3000]
    assert {r["index"] for r in results["dense"]} == {"Flat", "IVF1024_PQ32"}
    assert (tmp_path / "bench" / "latency_vs_corpus.png").stat().st_size > 1000
    text = (tmp_path / "bench" / "results.md").read_text()
    assert "## Loop" in text and "latency_vs_corpus.png" in text and "id_head_speedup" in text
    assert "bench_decode.py --model tiny-llama`" in text and "- commit: " in text and "- machine: " in text
