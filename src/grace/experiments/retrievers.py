"""Every retriever kind, by name: ``KIND:PATH`` → a loaded :class:`~grace.retriever.Retriever`, and the search
service over a run's retrievers (what ``grace eval``, ``search`` and ``serve`` load).

This floor sits above the generative retriever (``grace.infer``) and the baselines, so it is the one place
that knows them all; ``grace.infer``'s search service and server take retrievers already loaded. Each kind's
module is imported when a retriever of that kind is loaded, so ``grace --help`` stays fast.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from grace.errors import InputError
from grace.infer.search import SearchService, corpus_files
from grace.retriever import Retriever
from grace.run_layout import RunLayout, retriever_name


def query_encoder(export: str | Path) -> Callable[[list[str]], Any] | None:
    """The text tower a generative export embeds its queries with (its ``query_encoder/`` copy; a model trained
    with ``t2id_media``), as ``texts -> (N, D)``; None for a model that reads the null image."""
    from grace.infer.retriever import query_media_spec

    spec = query_media_spec(export)
    if spec is None:
        return None
    folder = Path(export) / str(spec.get("dir", ""))
    if spec.get("encoder") != "lit":
        raise InputError(f"unknown query text tower {spec.get('encoder')!r} (known: lit)", path=folder)
    if not folder.is_dir():
        raise InputError("the export names a query text tower but has no copy of it", path=folder)
    from grace.retrieval_baselines.clip_faiss.dual_encoder import LitDualEncoder

    return LitDualEncoder(folder).encode_texts


def _generative(path: str, **kwargs: Any) -> Retriever:
    from grace.infer.retriever import GenerativeRetriever

    if kwargs.get("query_media") is None:
        kwargs["query_media"] = query_encoder(path)
    return GenerativeRetriever.load(path, **kwargs)


def _clip_faiss(path: str, **kwargs: Any) -> Retriever:
    from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever

    return ClipFaissRetriever.load(path, **kwargs)


def _late_interaction(path: str, **kwargs: Any) -> Retriever:
    from grace.retrieval_baselines.late_interaction.retriever import LateInteractionRetriever

    return LateInteractionRetriever.load(path, **kwargs)


def _bm25(path: str, **kwargs: Any) -> Retriever:
    from grace.retrieval_baselines.lexical.bm25 import BM25Retriever

    return BM25Retriever.load(path, **kwargs)


def _sibling(path: str, **kwargs: Any) -> Retriever:
    from grace.retrieval_baselines.sibling import SiblingRetriever

    return SiblingRetriever.load(path, **kwargs)


def _random(path: str, **kwargs: Any) -> Retriever:
    from grace.retrieval_baselines.random import RandomRetriever

    return RandomRetriever.load(path, **kwargs)


def _hybrid(path: str, **kwargs: Any) -> Retriever:
    from grace.fusion import HybridRetriever

    return HybridRetriever.load(path, load_part=load_retriever, **kwargs)


#: kind → loader (``loader(path, **kwargs)``); ``<kind>_expanded`` (an index that also holds the run's
#: pseudo-queries, ``grace ablate --protocol tagged``) loads as ``<kind>``
LOADERS: dict[str, Callable[..., Retriever]] = {
    "generative": _generative,
    "clip_faiss": _clip_faiss,
    "late_interaction": _late_interaction,
    "bm25": _bm25,
    "sibling": _sibling,
    "random": _random,
    "hybrid": _hybrid,
}

#: the kinds whose load takes the decoding options (a hybrid passes them to its generative retriever)
GENERATIVE_KINDS = ("generative", "hybrid")


def retriever_kind(spec: str) -> str:
    """The loader kind of ``KIND:PATH`` (``clip_faiss_expanded`` → ``clip_faiss``); an unknown kind is an error."""
    kind = spec.partition(":")[0]
    base = kind.removesuffix("_expanded")
    if base not in LOADERS:
        raise InputError(f"unknown retriever kind {kind!r} in {spec!r}; known: {sorted(LOADERS)} "
                         "(and <kind>_expanded)")
    return base


def load_retriever(spec: str, **kwargs: Any) -> Retriever:
    """Load ``KIND:PATH`` (e.g. ``generative:runs/emoji/ckpt/structured/export``)."""
    return LOADERS[retriever_kind(spec)](spec.partition(":")[2], **kwargs)


def load_for_eval(spec: str, config: Any) -> Retriever:
    """``KIND:PATH`` with ``grace eval``'s options (an ``EvalConfig``): decoding settings for a generative
    retriever, the split and seed for the random one."""
    kind = retriever_kind(spec)
    kwargs: dict[str, Any] = {}
    if kind == "generative":
        kwargs = {"num_beams": config.num_beams, "length_penalty": config.length_penalty, "compile": config.compile,
                  "trust_remote_code": config.trust_remote_code}
    elif kind == "random":
        kwargs = {"split": config.split, "seed": config.seed}
    return load_retriever(spec, **kwargs)


def load_service(specs: list[str] | None = None, *, run: str | Path | None = None,
                 dataset: str | Path | None = None, split: str = "test", num_beams: int = 10,
                 device: str | None = None, compile: bool = False, image_root: str | Path | None = None,
                 trust_remote_code: bool = False, load: Callable[..., Retriever] | None = None) -> SearchService:
    """A :class:`SearchService` over ``specs`` (default: every retriever ``run`` built), each loaded once by
    ``load`` (default :func:`load_retriever`); the ``split`` images of ``dataset`` (default ``RUN/data/dataset.json``) are the corpus results
    point to."""
    load = load or load_retriever
    layout = RunLayout(run) if run else None
    specs = list(specs or [])
    if not specs and layout is not None:
        specs = list(layout.retrievers().values())
        if not specs:
            raise InputError("no trained retriever in this run (looked for ckpt/*/export, baselines/*/index and "
                             "hybrid/*)", path=layout.root)
    if not specs:
        raise InputError("name a retriever (--retriever KIND:PATH) or a run (--run RUN)")
    retrievers: dict[str, Retriever] = {}
    for spec in specs:
        kwargs: dict[str, Any] = {}
        if retriever_kind(spec) in GENERATIVE_KINDS:
            kwargs = {"num_beams": num_beams, "compile": compile, "trust_remote_code": trust_remote_code}
            if device:
                kwargs["device"] = device
        name = retriever_name(spec)
        retrievers[name if name not in retrievers else spec] = load(spec, **kwargs)
    if dataset is None and layout is not None and layout.dataset.is_file():
        dataset = layout.dataset
    files, captions = corpus_files(dataset, split, image_root) if dataset else ({}, {})
    return SearchService(retrievers, files, layout.root if layout else None, captions)
