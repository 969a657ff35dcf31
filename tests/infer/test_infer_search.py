"""`grace search` and the SearchService: every retriever of a run, loaded once, generative hits explained."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from grace.errors import InputError
from grace.experiments.retrievers import load_service
from grace.infer.search import run_search
from grace.retriever import Query
from grace.run_layout import RunLayout, retriever_name


@pytest.fixture(scope="module")
def service(small_run):
    run, dataset_json = small_run
    return load_service(run=run, dataset=dataset_json, num_beams=5)


def test_a_run_names_its_generative_and_baseline_retrievers(small_run, tmp_path):
    run, _ = small_run
    built = RunLayout(run).retrievers()
    specs = list(built.values())
    # bm25 and sibling: the controls; the hybrid: the generative candidates re-scored by CLIP-FAISS
    assert [s.partition(":")[0] for s in specs] == ["generative", "bm25", "clip_faiss", "sibling", "hybrid"]
    assert list(built) == [retriever_name(spec) for spec in specs]  # one naming, whoever names
    assert retriever_name(specs[-1]) == "hybrid/structured+clip_faiss"
    assert RunLayout(tmp_path).retrievers() == {}
    with pytest.raises(InputError, match="no trained retriever"):
        load_service(run=tmp_path)


def test_generative_hits_carry_their_identifier_path_and_step_scores(service):
    out = service.search(Query(text="a small red circle"), k=4)
    assert set(out) == {"generative/structured", "bm25", "clip_faiss", "sibling", "hybrid/structured+clip_faiss"}
    hybrid = {r["image_id"] for r in out["hybrid/structured+clip_faiss"]["results"]}
    generated = {h.image_id for h in service.retrievers["generative/structured"].search([Query(text="a small red "
                                                                                                 "circle")], 10)[0]}
    hybrid_retriever = service.retrievers["hybrid/structured+clip_faiss"]
    if hybrid_retriever.config.pool == "union":  # (val chose to join the dense retriever's top candidates)
        generated |= {h.image_id for h in hybrid_retriever.second.search([Query(text="a small red circle")], 10)[0]}
    assert len(hybrid) == 4 and hybrid <= generated  # the hybrid ranks its candidate pool only
    generative = out["generative/structured"]["results"]
    assert [r["rank"] for r in generative] == list(range(1, len(generative) + 1)) and len(generative) == 4
    retriever = service.retrievers["generative/structured"]
    for row in generative:
        assert row["file"].endswith(".png") and row["image_id"] in service.files and row["caption"]
        # the identifier is the trie path, and it names the image the hit reports
        assert "".join(row["trie_path"]) == row["identifier"]
        assert retriever.idmap.to_image(row["identifier"]) == row["image_id"]
        # cumulative log-probs: decreasing, and the last one (end-of-identifier) / length is the beam score
        steps = row["step_scores"]
        assert len(steps) == len(row["trie_path"]) + 1 and all(a >= b for a, b in itertools.pairwise(steps))
        assert math.isclose(steps[-1] / len(steps), row["score"], rel_tol=1e-4)
    assert all(r["identifier"] is None and r["trie_path"] == [] for r in out["clip_faiss"]["results"])


def test_bad_requests_are_refused_with_one_line_errors(service):
    for kwargs, message in [({"k": 0}, "positive integer"), ({"k": 10_000}, "larger than the corpus"),
                            ({"names": ["dense2"]}, "unknown retriever")]:
        with pytest.raises(InputError, match=message):
            service.search(Query(text="red"), **kwargs)
    with pytest.raises(InputError, match="characters long"):
        service.search(Query(text="x" * 100_000))
    with pytest.raises(InputError, match=r"--k 6 is more than the beams of generative/structured \(5\)"):
        run_search(service, ["red"], k=6)  # `grace search`: a beam narrower than k is refused, not widened
    with pytest.raises(InputError, match="text queries only"):
        service.search(Query(image=next(iter(service.files.values()))))


def test_image_queries_reach_the_retrievers_that_take_them(service):
    image_id, path = next(iter(service.files.items()))
    out = service.search(Query(image=path), k=3, names=["clip_faiss"])
    assert out["clip_faiss"]["results"][0]["image_id"] == image_id  # an image finds itself first


def test_search_cli_loads_each_retriever_once_for_many_queries(small_run, tmp_path, capsys, monkeypatch):
    import grace.experiments.retrievers as retriever_module
    from grace.cli import main

    run, dataset_json = small_run
    loads = []
    real = retriever_module.load_retriever
    monkeypatch.setattr(retriever_module, "load_retriever", lambda spec, **kw: loads.append(spec) or real(spec, **kw))
    queries = tmp_path / "queries.txt"
    queries.write_text("blue square\n\nlarge green triangle\n")
    assert main(["search", "--run", str(run), "--dataset", str(dataset_json), "--queries-file", str(queries),
                 "--k", "3", "--json", "a small red circle"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["query"] for p in printed] == ["a small red circle", "blue square", "large green triangle"]
    assert len(loads) == 5 + 2  # once for all queries: the five retrievers, and the hybrid's own two inside it
    for entry in printed:
        assert set(entry["results"]) == {"generative/structured", "bm25", "clip_faiss", "sibling",
                                         "hybrid/structured+clip_faiss"}
        assert all(len(rows) == 3 for rows in entry["results"].values())
    assert main(["search", "--run", str(run), "--dataset", str(dataset_json), "--k", "2", "red circle"]) == 0
    table = capsys.readouterr().out
    assert "generative/structured" in table and "id '<" in table and "rank" in table
