"""The query sets a run is scored on, each over the images of its split (the corpus):

- ``test``: the test images' own texts (e.g. CLDR names) — scored once per configuration, for the tables;
- ``val``: the val images' own texts — where schemes, levers and hyper-parameters are chosen;
- ``val-natural``: hand-written queries for val images (``benchmarks/natural_queries/<benchmark>-val.json``,
  ``{"benchmark", "split", "queries": [{"query_id", "image_id", "text"}]}``), reported beside the names.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grace.errors import GraceError, InputError
from grace.io_utils import file_digest, read_json


@dataclass
class QuerySet:
    """Queries, their gold images and stable ids; ``split`` names the corpus (its images) they search."""

    name: str
    split: str
    texts: list[str]
    gold: list[str]
    ids: list[str]
    source: str

    def __post_init__(self) -> None:
        if not (len(self.texts) == len(self.gold) == len(self.ids)):
            raise ValueError(f"query set {self.name}: {len(self.texts)} texts, {len(self.gold)} gold, {len(self.ids)} ids")

    def provenance(self) -> dict:
        from grace.provenance import query_provenance

        return query_provenance(self.ids, self.gold, self.split, self.source)


def split_queries(dataset, split: str = "test", max_queries: int = 0, name: str | None = None) -> QuerySet:
    """The images of ``split`` with their own texts as queries (the first ``max_queries`` when > 0)."""
    from grace.data_process.dataset import query_ids, test_queries

    texts, gold = test_queries(dataset, split)
    ids = query_ids(dataset, split)
    if max_queries:
        texts, gold, ids = texts[:max_queries], gold[:max_queries], ids[:max_queries]
    if not texts:
        raise GraceError(f"the dataset has no {split} queries (its splits: {dataset.split_counts()})")
    return QuerySet(name or split, split, texts, gold, ids, f"the {split} images' own texts (dataset.json)")


def load_natural_queries(path: str | Path, dataset, *, name: str = "val-natural") -> QuerySet:
    """Hand-written queries of ``path`` whose gold image is in the dataset's split named by the file (a run on
    a subset keeps the queries of its images). Unknown fields, another split, or none left are errors."""
    path = Path(path)
    data = read_json(path)
    rows = data.get("queries") if isinstance(data, dict) else None
    split = data.get("split") if isinstance(data, dict) else None
    if not isinstance(rows, list) or split is None:
        raise InputError('expected {"split": ..., "queries": [{"query_id", "image_id", "text"}, ...]}', path=path)
    bad = [i for i, r in enumerate(rows) if not isinstance(r, dict) or not {"query_id", "image_id", "text"} <= set(r)
           or not str(r["text"]).strip()]
    if bad:
        raise InputError(f"query {bad[0]} needs a query_id, an image_id and a non-empty text", path=path)
    corpus = {r.image_id for r in dataset.split(split)}
    kept = [r for r in rows if r["image_id"] in corpus]
    if not kept:
        raise InputError(f"none of its {len(rows)} queries has its image in this dataset's {split} split "
                         f"({len(corpus)} images): another benchmark or split?", path=path)
    digest = file_digest(path)
    return QuerySet(name, split, [str(r["text"]).strip() for r in kept], [r["image_id"] for r in kept],
                    [str(r["query_id"]) for r in kept],
                    f"{path.name} (sha1 {digest}; {len(kept)} of {len(rows)} queries have their image here)")


def check_select_on(select_on: str) -> str:
    """``val`` or ``none``; anything else is a one-line error naming the flag."""
    if select_on not in ("val", "none"):
        raise GraceError(f"--select-on {select_on!r}: choose val or none")
    return select_on


def query_sets(dataset, *, max_queries: int = 0, select_on: str = "val",
               natural_queries: str | Path | None = None) -> list[QuerySet]:
    """``test`` first, then — when choices are made on val — ``val`` and the natural val queries if given."""
    sets = [split_queries(dataset, "test", max_queries)]
    if check_select_on(select_on) == "val":
        if not dataset.split("val"):
            raise GraceError(f"--select-on val, but the dataset has no val images (its splits: "
                             f"{dataset.split_counts()}); use --select-on none, or a dataset with a val split")
        sets.append(split_queries(dataset, "val", max_queries))
    if natural_queries:
        sets.append(load_natural_queries(natural_queries, dataset))
    return sets
