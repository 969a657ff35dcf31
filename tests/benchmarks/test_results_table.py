"""benchmarks/results_table.py: the README's results block is exactly what the published best-recipe files hold."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))
import results_table  # (benchmarks/ is a folder of scripts, not a package)


def test_the_readme_quotes_the_published_best_recipe_files():
    assert results_table.main(["--check", str(ROOT / "README.md")]) == 0


def test_a_changed_number_in_a_result_file_fails_the_check(tmp_path, capsys):
    for name in ("emoji-best.json", "openclipart-best.json"):
        (tmp_path / name).write_text((ROOT / "docs" / "results" / name).read_text())
    assert results_table.main(["--results", str(tmp_path), "--check", str(ROOT / "README.md")]) == 0
    data = json.loads((tmp_path / "emoji-best.json").read_text())
    data["sibling"]["recall@1"] += 0.01
    (tmp_path / "emoji-best.json").write_text(json.dumps(data))
    assert results_table.main(["--results", str(tmp_path), "--check", str(ROOT / "README.md")]) == 1
    assert "differs" in capsys.readouterr().err


def test_the_table_reads_seeds_controls_and_the_verdict_over_seeds():
    result = json.loads((ROOT / "docs" / "results" / "emoji-best.json").read_text())
    table = results_table.render({"emoji": result})
    generative = result["selection"]["generative"]
    spread = result[generative]["training_seeds"]["recall@1"]
    assert f"{100 * spread['mean']:.1f} ± {100 * spread['sd']:.1f}" in table
    assert "sibling: no training (control)" in table and "BM25" in table and "| random |" in table
    over = result["verdict"]["over_seeds"]["sibling"]["R@1"]
    assert f"generative − sibling {100 * over['diff']:+.1f}".replace("-", "−") in table
