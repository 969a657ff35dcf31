"""Hybrid retrieval: a first retriever's candidates re-scored by a second, fused with a weight chosen on val."""

from __future__ import annotations

import contextlib
import json
import types

import pytest

from grace.errors import GraceError
from grace.experiments import rows
from grace.experiments.hybrid import choose_weight, stage_hybrid
from grace.experiments.stage import RunContext
from grace.fusion import Candidates, HybridConfig, HybridRetriever, fuse, minmax
from grace.io_utils import write_json
from grace.retriever import Hit, Query, Rescorer, Retriever

CORPUS = ["a", "b", "c", "d", "e"]


class ListRetriever(Retriever):
    """Ranks the corpus in a fixed order for every query, scores 5, 4, 3, ..."""

    def __init__(self, order, name="first"):
        self.order, self.name = list(order), name

    def search(self, queries, k):
        return [[Hit(i, float(len(self.order) - r)) for r, i in enumerate(self.order[:k])] for _ in queries]

    @classmethod
    def load(cls, path, **kwargs):
        raise NotImplementedError


class TableRescorer(Rescorer):
    """Scores each (query text, image) from a table; images outside its corpus are an error."""

    def __init__(self, table, name="second"):
        self.table, self.name = table, name
        self.scored = 0

    def score(self, queries, candidates):
        self.scored += sum(len(c) for c in candidates)
        for images in candidates:
            for image in images:
                if image not in CORPUS:
                    raise GraceError(f"{image} not in the corpus")
        return [[self.table[q.text].get(i, 0.0) for i in images] for q, images in zip(queries, candidates)]

    def search(self, queries, k):
        return [sorted((Hit(i, s) for i, s in self.table[q.text].items()), key=lambda h: -h.score)[:k]
                for q in queries]

    @classmethod
    def load(cls, path, **kwargs):
        raise NotImplementedError


def test_fuse_weight_0_keeps_the_first_order_and_1_takes_the_second():
    candidates = Candidates([["a", "b", "c"]], first=[[-1.0, -2.0, -9.0]], second=[[0.1, 0.9, 0.5]])
    assert [h.image_id for h in fuse(candidates, 0.0)[0]] == ["a", "b", "c"]
    assert [h.image_id for h in fuse(candidates, 1.0)[0]] == ["b", "c", "a"]
    # halfway: a = 0.5 * 1 + 0.5 * 0, b = 0.5 * 0.875 + 0.5 * 1, c = 0 + 0.5 * 0.5
    assert [h.image_id for h in fuse(candidates, 0.5)[0]] == ["b", "a", "c"]
    assert [h.image_id for h in fuse(candidates, 1.0, "rrf")[0]] == ["b", "c", "a"]
    assert minmax([2.0, 2.0]) == [1.0, 1.0] and minmax([1.0, 3.0, 2.0]) == [0.0, 1.0, 0.5]


def test_hybrid_reranks_only_the_first_retrievers_candidates():
    table = {"q": {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.9, "e": 0.8}}
    second = TableRescorer(table)
    hybrid = HybridRetriever(ListRetriever(CORPUS), second, HybridConfig("x:first", "y:second", depth=3, weight=1.0))
    hits = hybrid.search([Query(text="q")], 3)[0]
    assert [h.image_id for h in hits] == ["c", "b", "a"]  # d and e score higher, but were never generated
    assert second.scored == 3
    with pytest.raises(GraceError, match="more than the hybrid's depth 3"):
        hybrid.search([Query(text="q")], 5)
    with pytest.raises(GraceError, match="cannot re-score candidates"):
        HybridRetriever(ListRetriever(CORPUS), ListRetriever(CORPUS), HybridConfig("x:a", "y:b"))
    with pytest.raises(GraceError, match="unknown fusion"):
        HybridConfig("x:a", "y:b", fusion="max").check()
    other_corpus = HybridRetriever(ListRetriever(["z", "a"]), second, HybridConfig("x:a", "y:b", depth=2))
    with pytest.raises(GraceError, match="not in the corpus"):
        other_corpus.search([Query(text="q")], 1)


def test_a_candidate_the_first_retriever_did_not_return_gets_the_floor():
    candidates = Candidates([["a", "b", "x"]], first=[[-1.0, -3.0, None]], second=[[0.0, 0.5, 1.0]])
    assert [h.image_id for h in fuse(candidates, 0.0)[0]] == ["a", "b", "x"]  # x ties b at 0: candidate order
    assert [h.image_id for h in fuse(candidates, 1.0)[0]] == ["x", "b", "a"]
    # 0.6: a = 0.4 * 1 + 0, b = 0 + 0.6 * 0.5, x = 0 (floor) + 0.6 * 1
    assert [h.image_id for h in fuse(candidates, 0.6)[0]] == ["x", "a", "b"]
    # rrf: x has no first rank (0) and its second rank 1/61 alone: below b (1/62 on both sides)
    assert [h.image_id for h in fuse(candidates, 0.5, "rrf")[0]] == ["a", "b", "x"]
    first_only = candidates.of_first()
    assert first_only.image_ids == [["a", "b"]] and first_only.second == [[0.0, 0.5]]


def test_union_pool_keeps_what_the_second_retriever_ranks_high():
    table = {"q": {"a": 0.1, "b": 0.2, "c": 0.3, "d": 0.9, "e": 0.8}}
    second = TableRescorer(table)
    union = HybridRetriever(ListRetriever(CORPUS), second,
                            HybridConfig("x:first", "y:second", depth=3, weight=1.0, pool="union"))
    blocks = []
    second.one_batch = lambda: contextlib.nullcontext(blocks.append("one batch"))
    candidates = union.candidates([Query(text="q")])
    assert blocks == ["one batch"]  # the second's search and scoring share one block (one query embedding)
    assert candidates.image_ids == [["a", "b", "c", "d", "e"]]  # the beam's 3, then the second's top 3 not in it
    assert candidates.first[0][3:] == [None, None] and second.scored == 5
    assert [h.image_id for h in union.search([Query(text="q")], 3)[0]] == ["d", "e", "c"]
    at_zero = HybridRetriever(ListRetriever(CORPUS), second,
                              HybridConfig("x:first", "y:second", depth=3, weight=0.0, pool="union"))
    assert [h.image_id for h in at_zero.search([Query(text="q")], 3)[0]] == ["a", "b", "c"]
    with pytest.raises(GraceError, match="unknown candidate pool"):
        HybridConfig("x:a", "y:b", pool="all").check()


def test_choose_weight_chooses_the_pool_on_val_too():
    # q1's gold (d) is outside the first retriever's top 3: only the union pool can rank it
    table = {"q1": {"d": 1.0, "a": 0.5}, "q2": {"a": 1.0}}
    hybrid = HybridRetriever(ListRetriever(CORPUS), TableRescorer(table), HybridConfig("x:a", "y:b", depth=3))
    choice = choose_weight(hybrid, [Query(text="q1"), Query(text="q2")], ["d", "a"], weights=[0.0, 1.0],
                           pools=["first", "union"])
    assert choice["recall@1"] == {"first/0.0": 0.5, "first/1.0": 0.5, "union/0.0": 0.5, "union/1.0": 1.0}
    assert (choice["pool"], choice["weight"]) == ("union", 1.0)
    assert (hybrid.config.pool, hybrid.config.weight) == ("union", 1.0)
    only_first = HybridRetriever(ListRetriever(CORPUS), TableRescorer(table), HybridConfig("x:a", "y:b", depth=3))
    assert choose_weight(only_first, [Query(text="q1")], ["d"], weights=[1.0])["pool"] == "first"


def test_choose_weight_picks_the_best_weight_on_val_and_records_the_grid():
    # the first retriever ranks gold third for q1; the second puts it first: re-ranking wins on val
    table = {"q1": {"a": 0.0, "b": 0.0, "c": 1.0}, "q2": {"a": 1.0, "b": 0.0, "c": 0.0}}
    hybrid = HybridRetriever(ListRetriever(CORPUS), TableRescorer(table), HybridConfig("x:a", "y:b", depth=3))
    choice = choose_weight(hybrid, [Query(text="q1"), Query(text="q2")], ["c", "a"], weights=[0.0, 0.5, 1.0])
    assert choice["recall@1"] == {"0.0": 0.5, "0.5": 0.5, "1.0": 1.0}
    assert choice["weight"] == 1.0 and hybrid.config.weight == 1.0
    assert hybrid.config.chosen["split"] == "val" and hybrid.config.chosen["recall@1"]["1.0"] == 1.0


def test_stage_hybrid_chooses_on_val_scores_every_set_and_saves_the_retriever(tmp_path):
    dataset = types.SimpleNamespace(split=lambda split: CORPUS)
    table = {"q1": {"c": 1.0}, "q2": {"a": 1.0}, "t1": {"b": 1.0}}
    loaded = []

    def load(spec, **kwargs):
        loaded.append((spec, kwargs))
        kind = spec.partition(":")[0]
        return ListRetriever(CORPUS) if kind == "generative" else TableRescorer(table)

    def query_set(name, split, texts, gold):
        return types.SimpleNamespace(name=name, split=split, texts=[Query(text=t) for t in texts], gold=gold,
                                     ids=[f"{g}#0" for g in gold])

    sets = [query_set("test", "test", ["t1"], ["b"]), query_set("val", "val", ["q1", "q2"], ["c", "a"])]
    for upstream in ("ckpt/structured", "trie/structured", "trie/structured-val", "baselines/clip_faiss/index",
                     "baselines/clip_faiss/index-val", "baselines/clip_faiss_expanded/index",
                     "baselines/clip_faiss_expanded/index-val"):  # the records the stages it reads leave
        write_json(tmp_path / upstream / "stage.json", {"built": upstream})
    ctx = RunContext(tmp_path)
    out = stage_hybrid(ctx, rows.hybrid("structured", "clip_faiss"), dataset, sets=sets, depth=10, load=load)
    # the smallest weight that puts both val golds first (q1's gold is third in the first order) ...
    assert out["val"]["weight"] == 0.4 and out["val"]["recall@1"] == 1.0
    assert out["test"]["weight"] == 0.4  # ... chosen on val, applied to test
    assert out["test"]["recall@1"] == 1.0 and out["test"]["weight_chosen_on"] == "val"
    saved = json.loads((tmp_path / "hybrid" / "structured+clip_faiss" / "hybrid.json").read_text())
    assert saved["first"] == f"generative:{tmp_path / 'ckpt' / 'structured' / 'export'}"
    assert saved["second"].endswith("baselines/clip_faiss/index") and saved["weight"] == 0.4
    assert (tmp_path / "results" / "structured+clip_faiss.json").is_file()
    tries = {str(kwargs["trie"]) for spec, kwargs in loaded if spec.startswith("generative")}
    assert tries == {str(tmp_path / "trie" / "structured"), str(tmp_path / "trie" / "structured-val")}
    assert all(kwargs["num_beams"] >= 10 for spec, kwargs in loaded if spec.startswith("generative"))
    loaded.clear()
    again = stage_hybrid(ctx, rows.hybrid("structured", "clip_faiss"), dataset, sets=sets, depth=10, load=load)
    assert again == out and loaded == []  # unchanged: neither the choice nor the scores are redone
    write_json(tmp_path / "baselines/clip_faiss/index-val/stage.json", {"built": "again"})  # a rebuilt val index
    rescored = stage_hybrid(ctx, rows.hybrid("structured", "clip_faiss"), dataset, sets=sets, depth=10, load=load)
    assert rescored["test"]["gold_ranks"] == out["test"]["gold_ranks"] and rescored["val"]["weight"] == 0.4
    assert loaded  # ... re-chose the weight and re-scored
    expanded = stage_hybrid(ctx, rows.hybrid("structured", "clip_faiss_expanded"), dataset, sets=sets, depth=10,
                            load=load)
    assert expanded["test"]["recall@1"] == 1.0  # the same kind of retriever, over the expanded index
    saved = json.loads((tmp_path / "hybrid" / "structured+clip_faiss_expanded" / "hybrid.json").read_text())
    assert saved["second"] == f"clip_faiss:{tmp_path / 'baselines' / 'clip_faiss_expanded' / 'index'}"
    with pytest.raises(GraceError, match="needs --select-on val"):
        stage_hybrid(ctx, rows.hybrid("structured", "clip_faiss"), dataset, sets=sets[:1], load=load)
