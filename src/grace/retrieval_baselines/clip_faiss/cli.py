"""``grace baselines clip-faiss {extract,merge,train-heads,build-index,search,retrieve-pairs,bench-latency}``."""

from __future__ import annotations

import json

from grace.config import add_command_group, dataclass_from_args
from grace.retrieval_baselines.clip_faiss import configs as C


def _extract(args) -> int:
    from grace.retrieval_baselines.clip_faiss.extract import extract_chunk

    print(extract_chunk(dataclass_from_args(C.ExtractConfig, args)))
    return 0


def _merge(args) -> int:
    from grace.retrieval_baselines.clip_faiss.extract import merge_chunks

    fs = merge_chunks(dataclass_from_args(C.MergeConfig, args).features)
    print(f"{len(fs.ids)} images, {len(fs.meta['texts'])} texts, dim {fs.meta['dim']}")
    return 0


def _train_heads(args) -> int:
    from grace.retrieval_baselines.clip_faiss.heads import train_heads

    stats = train_heads(dataclass_from_args(C.TrainHeadsConfig, args))
    print(json.dumps({k: v for k, v in stats.items() if k != "loss_history"}, indent=2))
    return 0


def _build_index(args) -> int:
    from grace.retrieval_baselines.clip_faiss.index import build_index

    index = build_index(dataclass_from_args(C.BuildIndexConfig, args))
    print(json.dumps(index.config, indent=2))
    return 0


def _search(args) -> int:
    from grace.errors import InputError
    from grace.io_utils import write_json
    from grace.retrieval_baselines.clip_faiss.retriever import ClipFaissRetriever
    from grace.retriever import Query

    config = dataclass_from_args(C.SearchConfig, args)
    if not config.texts and not config.images:
        raise InputError("empty query: give --texts and/or --images")
    retriever = ClipFaissRetriever.load(config.index)
    results = []
    if config.texts:
        hits = retriever.search([Query(text=t) for t in config.texts], config.k)
        results += [{"query": t, "task": "t2i", "hits": [[h.image_id, round(h.score, 4)] for h in hs]}
                    for t, hs in zip(config.texts, hits)]
    if config.images:
        hits = retriever.search_texts(config.images, config.k)
        results += [{"query": str(p), "task": "i2t", "hits": [[t, i, round(s, 4)] for t, i, s in hs]}
                    for p, hs in zip(config.images, hits)]
    if config.out:
        write_json(config.out, results)
    else:
        print(json.dumps(results, indent=2, ensure_ascii=False))
    return 0


def _retrieve_pairs(args) -> int:
    from grace.retrieval_baselines.clip_faiss.pairs import retrieve_pairs

    config = dataclass_from_args(C.RetrievePairsConfig, args)
    meta = retrieve_pairs(config)
    print(f"{sum(len(c['pairs']) for c in meta['classes'].values())} pairs for {len(meta['classes'])} classes → {config.out}")
    return 0


def _bench_latency(args) -> int:
    from grace.retrieval_baselines.clip_faiss.latency import bench_latency

    for row in bench_latency(dataclass_from_args(C.BenchLatencyConfig, args)):
        print(row)
    return 0


COMMANDS = {
    "extract": (C.ExtractConfig, _extract),
    "merge": (C.MergeConfig, _merge),
    "train-heads": (C.TrainHeadsConfig, _train_heads),
    "build-index": (C.BuildIndexConfig, _build_index),
    "search": (C.SearchConfig, _search),
    "retrieve-pairs": (C.RetrievePairsConfig, _retrieve_pairs),
    "bench-latency": (C.BenchLatencyConfig, _bench_latency),
}


def register(subparsers) -> None:
    """Add ``clip-faiss`` and its subcommands to ``grace baselines``."""
    add_command_group(subparsers, "clip-faiss", "CLIP/LiT + FAISS dense retrieval (REACT's retrieval stage)", COMMANDS)
