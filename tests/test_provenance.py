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
