"""Result provenance: the code's commit and dirty flag, and query sets compared by id."""

from __future__ import annotations

from grace.provenance import git_state, query_provenance, same_queries


def test_git_state_names_the_commit_or_says_why_not(tmp_path):
    state = git_state()
    if state["commit"] is not None:  # a checkout (CI clones one)
        assert len(state["commit"]) == 40 and isinstance(state["dirty"], bool)
    outside = git_state(tmp_path)
    assert outside["commit"] is None and "not a git checkout" in outside["reason"]


def test_query_sets_match_by_id_and_gold():
    a = {"queries": query_provenance(["x#0", "y#0"], ["x", "y"], "test", "d")}
    assert same_queries(a, a) is None
    assert "different query ids" in same_queries(a, {"queries": query_provenance(["y#0", "x#0"], ["y", "x"], "test", "d")})
    assert "different gold" in same_queries(a, {"queries": query_provenance(["x#0", "y#0"], ["y", "x"], "test", "d")})
    assert "no query ids" in same_queries(a, {"num_queries": 2})


def test_a_script_result_names_its_command_as_typed_and_its_footer_every_part(tmp_path, monkeypatch):
    from grace.provenance import provenance_lines, script_provenance

    monkeypatch.chdir(tmp_path)
    made = script_provenance(tmp_path / "benchmarks" / "x.py", ["--out", "a b"])
    assert made["command"] == "python benchmarks/x.py --out 'a b'"  # relative to the working folder, quoted
    assert "CPU cores" in made["machine"] and "commit" in made["git"]
    lines = provenance_lines({**made, "wall_s": 61.4})
    assert lines[0] == "- command: `python benchmarks/x.py --out 'a b'`"
    assert lines[1].startswith("- commit: ") and lines[2].endswith("; wall 61 s")
    assert provenance_lines({"command": "c", "machine": "m"}) == ["- command: `c`", "- machine: m"]


def test_a_later_result_copies_how_its_run_was_trained(tmp_path):
    from grace.io_utils import write_json
    from grace.provenance import trained_run_provenance
    from grace.run_layout import RunLayout

    assert trained_run_provenance(tmp_path) == {}  # no table yet
    write_json(RunLayout(tmp_path).ablation, {"structured": {}, "provenance": {
        "protocol": "tagged", "selected_on": "val", "seeds": {"training": [0, 1]}, "git": {"commit": "c0ffee"},
        "queries": {"ids": ["q"]}, "pseudo_queries": {"generator": "keywords", "digest": "d", "leak_filter": {}}}})
    assert trained_run_provenance(tmp_path) == {
        "protocol": "tagged", "selected_on": "val", "seeds": {"training": [0, 1]}, "git": {"commit": "c0ffee"},
        "pseudo_queries": {"generator": "keywords", "digest": "d"}}
