"""benchmarks/soak_serve.py, briefly: a real `grace serve` on loopback under normal and abusive requests answers
every abusive one with a 4xx one-line error, stays alive and leaves the run folder unchanged."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import soak_serve  # (benchmarks/ is a folder of scripts, not a package)


@pytest.mark.slow  # a real server process and seconds of load: CI's slow step
def test_soak_abuse_gets_4xx_one_line_errors_and_the_server_survives(small_run, tmp_path):
    run, dataset_json = small_run
    report = soak_serve.main(["--run", str(run), "--dataset", str(dataset_json), "--clients", "4", "--duration", "6",
                              "--warmup", "2", "--sample-every", "0.2", "--abuse-every", "2", "--num-beams", "5", "--out", str(tmp_path / "soak")])
    assert report["alive"] and report["run_folder_unchanged"]
    assert report["rss_steady"]["samples"] >= 10 and report["rss_steady"]["start_mb"] > 50
    assert report["normal"].get("200", 0) > 0 and set(report["normal"]) <= {"200", "503", "504"}
    sent = {name: outcomes for name, outcomes in report["abusive"].items() if outcomes}
    assert len(sent) >= 6  # the kinds rotate across clients and requests
    for name, outcomes in sent.items():
        assert all(k.isdigit() and 400 <= int(k) < 500 for k in outcomes), (name, outcomes)
    assert "every answer a 4xx one-line error" in (tmp_path / "soak.md").read_text()


def test_rss_growth_is_judged_after_the_warmup_against_the_samples_noise():
    """A step while the allocator pools fill is not growth; a steady climb is, and so is one hidden in noise."""
    import numpy as np

    rng = np.random.default_rng(0)
    t = np.arange(0, 300, 2.0)
    noise = rng.normal(0, 2.0, len(t))
    step_then_flat = [(float(s), 600 + (100 if s >= 30 else 0) + float(n)) for s, n in zip(t, noise)]
    judged = soak_serve.rss_trend(step_then_flat, warmup_s=60)
    assert judged["within_noise"] and abs(judged["slope_mb_per_min"]) < 1
    assert soak_serve.rss_trend(step_then_flat, warmup_s=60)["start_mb"] == pytest.approx(700, abs=3)
    assert not soak_serve.rss_trend(step_then_flat, warmup_s=0)["within_noise"]  # the step, if not warm-up
    climbing = [(float(s), 600 + 0.3 * float(s) + float(n)) for s, n in zip(t, noise)]  # +18 MB/min
    judged = soak_serve.rss_trend(climbing, warmup_s=60)
    assert not judged["within_noise"] and judged["slope_mb_per_min"] == pytest.approx(18, rel=0.1)
    with pytest.raises(SystemExit, match="run longer"):
        soak_serve.rss_trend(climbing[:20], warmup_s=30)
