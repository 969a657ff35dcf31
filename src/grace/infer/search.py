"""``grace search``: ask loaded retrievers for images, and the :class:`SearchService` ``grace serve`` wraps.

A service holds each retriever once (loaded by ``grace.experiments.retrievers.load_service``) and the corpus
(image id → file), so results carry file paths and every request after the first costs only a search.
Generative hits keep the identifier they were generated as, its trie path and the beam score per step.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grace.errors import GraceError, InputError
from grace.infer.retriever import GeneratedHit, GenerativeRetriever
from grace.retriever import Hit, Query, Retriever

#: most characters a text query may have (a longer one is refused, not truncated)
MAX_QUERY_CHARS = 1000


@dataclass
class Result:
    """One ranked image: ``rank`` from 1, its ``path`` in the corpus (None when unknown), and for generative
    hits the ``identifier``, its trie ``path`` pieces and cumulative ``step_scores``."""

    rank: int
    image_id: str
    score: float
    file: str | None = None
    caption: str | None = None
    identifier: str | None = None
    trie_path: list[str] = field(default_factory=list)
    step_scores: list[float] = field(default_factory=list)


class SearchService:
    """Named retrievers over one corpus; :meth:`search` validates a request and returns :class:`Result` rows."""

    def __init__(self, retrievers: dict[str, Retriever], files: dict[str, Path] | None = None,
                 run: Path | None = None, captions: dict[str, str] | None = None):
        if not retrievers:
            raise GraceError("a search service needs at least one retriever")
        self.retrievers = retrievers
        self.files = files or {}
        self.captions = captions or {}
        self.run = run

    def describe(self) -> list[dict]:
        """What is loaded: name, class name and query modalities of each retriever."""
        return [{"name": name, "kind": type(r).__name__, "modalities": list(r.modalities)}
                for name, r in self.retrievers.items()]

    def check_request(self, names: list[str] | None, k: int, query: Query) -> list[str]:
        """The retriever names a request targets; InputError on an unknown name, k outside [1, corpus], an
        over-long text, or an image query for text-only retrievers."""
        names = list(names or self.retrievers)
        unknown = [n for n in names if n not in self.retrievers]
        if unknown:
            raise InputError(f"unknown retriever(s) {unknown}; loaded: {sorted(self.retrievers)}")
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise InputError(f"k must be a positive integer, got {k!r}")
        if self.files and k > len(self.files):
            raise InputError(f"k={k} is larger than the corpus ({len(self.files)} images)")
        if query.text is not None and len(query.text) > MAX_QUERY_CHARS:
            raise InputError(f"query is {len(query.text)} characters long (at most {MAX_QUERY_CHARS})")
        if query.image is not None:
            text_only = [n for n in names if "image" not in self.retrievers[n].modalities]
            if text_only:
                raise InputError(f"retriever(s) {text_only} take text queries only")
        return names

    def rows(self, hits: list[Hit]) -> list[Result]:
        """Result rows of one query's hits (file paths from the corpus, generative explanations kept)."""
        out = []
        for rank, hit in enumerate(hits, 1):
            file = self.files.get(hit.image_id)
            out.append(Result(rank=rank, image_id=hit.image_id, score=float(hit.score),
                              file=str(file) if file else None, caption=self.captions.get(hit.image_id),
                              **(explanation(hit) if isinstance(hit, GeneratedHit) else {})))
        return out

    def search_one(self, name: str, queries: list[Query], k: int) -> list[list[Result]]:
        """Rows for ``queries`` from one retriever (generative: with the identifiers it generated)."""
        return [self.rows(h) for h in self.retrievers[name].search_explained(queries, k)]

    def search(self, query: Query, k: int = 10, names: list[str] | None = None) -> dict[str, dict]:
        """One query against the named retrievers: ``{name: {"results": [...], "latency_ms": t}}``."""
        out = {}
        for name in self.check_request(names, k, query):
            t0 = time.perf_counter()
            out[name] = response_entry(self.search_one(name, [query], k)[0], time.perf_counter() - t0)
        return out


def explanation(hit: GeneratedHit) -> dict[str, Any]:
    """The :class:`Result` fields that say why a generative hit was retrieved."""
    return {"identifier": hit.identifier, "trie_path": list(hit.path), "step_scores": [float(s) for s in hit.step_scores]}


def response_entry(rows: list[Result], seconds: float) -> dict:
    """One retriever's answer to one query, as the API and :meth:`SearchService.search` return it."""
    return {"results": [asdict(r) for r in rows], "latency_ms": 1000 * seconds}


def corpus_files(dataset_json: str | Path, split: str = "test", image_root: str | Path | None = None
                 ) -> tuple[dict[str, Path], dict[str, str]]:
    """image id → absolute image file, and image id → first caption, of the ``split`` images of a
    Karpathy-form dataset (the retrieval corpus of a run: its tries and baseline indexes cover the test split).
    A path that resolves (``..``, an absolute name, a symbolic link) outside the image root is an error (a run's
    copy made by ``grace ablate --dataset`` keeps its images under the source's root, named in its source.json)."""
    from grace.data_process.dataset import load_karpathy

    dataset = load_karpathy(dataset_json, image_root, check_files=False)
    records = dataset.split(split) if split else dataset.images
    if not records:
        raise InputError(f"split {split!r} has no images", path=dataset_json)
    roots = [Path(dataset.root).resolve()]
    source = Path(dataset_json).parent / "source.json"
    if image_root is None and source.is_file():  # a run's copy (grace ablate --dataset): images stay at the source
        from grace.data_process.dataset import default_image_root
        from grace.io_utils import read_json

        src = read_json(source)
        roots.append(Path(src["image_root"] or default_image_root(src["dataset"])).resolve())
    files = {r.image_id: Path(r.path).resolve() for r in records}  # links followed: where the bytes really are
    outside = [i for i, path in files.items() if not any(path.is_relative_to(root) for root in roots)]
    if outside:  # a dataset file never decides what the server reads: every image lies under its root
        raise InputError(f"{len(outside)} image path(s) resolve outside the image root "
                         f"{', '.join(map(str, roots))}, e.g. {outside[0]!r} -> {files[outside[0]]}; refused (copy the "
                         "images under the root or pass --image-root)", path=dataset_json)
    return files, {r.image_id: r.texts[0] for r in records if r.texts}


def format_table(query: str, name: str, rows: list[Result]) -> str:
    """A plain-text table of one retriever's results for one query."""
    lines = [f"{name}  ·  {query!r}", f"{'rank':>4}  {'image id':<28} {'score':>9}  file / identifier"]
    for r in rows:
        extra = f"{r.caption!r} {r.file or ''}" if r.caption else (r.file or "")
        if r.identifier is not None:
            steps = " → ".join(f"{p} ({s:.2f})" for p, s in zip(r.trie_path, r.step_scores))
            extra = f"{extra}\n{'':>45}id {r.identifier!r}: {steps}"
        lines.append(f"{r.rank:>4}  {r.image_id:<28} {r.score:>9.4f}  {extra}")
    return "\n".join(lines)


def read_queries(texts: list[str], queries_file: Path | None, image: Path | None = None) -> list[str]:
    """Queries from the command line and/or a file (one per line; blank lines skipped); none at all is an
    error unless an ``image`` is the query."""
    queries = list(texts)
    if queries_file is not None:
        if not Path(queries_file).is_file():
            raise InputError("queries file not found", path=queries_file)
        queries += [line.strip() for line in Path(queries_file).read_text(encoding="utf-8").splitlines()
                    if line.strip()]
    if not queries and image is None:
        raise InputError("no query given (pass text, --image, or --queries-file)")
    return queries


def run_search(service: SearchService, texts: list[str], *, k: int = 10, image: Path | None = None,
               as_json: bool = False) -> str:
    """Run every query through every retriever (each loaded once) and render a table or JSON."""
    queries = [Query(text=t, image=image) for t in texts] if texts else [Query(image=image)]
    names = None
    if image is not None:  # an image query goes to the retrievers that take images
        names = [n for n, r in service.retrievers.items() if "image" in r.modalities]
        if not names:
            raise InputError(f"none of the loaded retrievers ({', '.join(service.retrievers)}) takes image queries")
    names = service.check_request(names, k, queries[0])
    for q in queries[1:]:
        service.check_request(names, k, q)
    narrow = {n: service.retrievers[n].num_beams for n in names
              if isinstance(service.retrievers[n], GenerativeRetriever) and service.retrievers[n].num_beams < k}
    if narrow:  # (the server widens the beam to a request's k instead)
        raise InputError(f"--k {k} is more than the beams of {', '.join(f'{n} ({b})' for n, b in narrow.items())}: "
                         "beam search returns one identifier per beam (raise --num-beams)")
    per_name = {name: service.search_one(name, queries, k) for name in names}
    if as_json:
        return json.dumps([{"query": q.text, "image": str(q.image) if q.image else None,
                            "results": {n: [asdict(r) for r in per_name[n][i]] for n in names}}
                           for i, q in enumerate(queries)], indent=2)
    blocks = [format_table(q.text or str(q.image), n, per_name[n][i]) for i, q in enumerate(queries) for n in names]
    return "\n\n".join(blocks)
