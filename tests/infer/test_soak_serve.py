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
                              "--abuse-every", "2", "--num-beams", "5", "--out", str(tmp_path / "soak")])
    assert report["alive"] and report["run_folder_unchanged"]
    assert report["normal"].get("200", 0) > 0 and set(report["normal"]) <= {"200", "503", "504"}
    sent = {name: outcomes for name, outcomes in report["abusive"].items() if outcomes}
    assert len(sent) >= 6  # the kinds rotate across clients and requests
    for name, outcomes in sent.items():
        assert all(k.isdigit() and 400 <= int(k) < 500 for k in outcomes), (name, outcomes)
    assert "every answer a 4xx one-line error" in (tmp_path / "soak.md").read_text()
