"""Search latency vs corpus size for Flat and IVF-PQ on synthetic unit vectors (dense-vs-generative plot).

``latency_rows(...)`` returns one row per (index, corpus size): build seconds, ms per query, and the
recall@k of the index against exact search. Run as a script:
``python -m grace.retrieval_baselines.clip_faiss.latency --sizes 1000 10000`` (same flags as
``grace baselines clip-faiss bench-latency``).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from grace.faiss_device import import_faiss

log = logging.getLogger(__name__)


def synthetic_vectors(n: int, dim: int, *, n_clusters: int = 256, noise: float = 0.5, seed: int = 0,
                      chunk: int = 100_000) -> np.ndarray:
    """``n`` L2-normalised clustered vectors (float32), generated in chunks to bound memory."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, dim)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, chunk):
        m = min(chunk, n - start)
        x = centres[rng.integers(0, n_clusters, m)] + noise * rng.standard_normal((m, dim)).astype(np.float32)
        out[start:start + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def scaled_index_name(name: str, n: int) -> str:
    """Shrink an ``IVF{n}_PQ{m}`` spec's list count to at most n/39 lists (FAISS's training minimum)."""
    from grace.retrieval_baselines.clip_faiss.index import IVFPQ_RE

    match = IVFPQ_RE.match(name)
    if not match:
        return name
    nlist = max(1, min(int(match.group(1)), n // 39))
    return f"IVF{nlist}_PQ{match.group(2)}"


def time_search(index, queries: np.ndarray, k: int, batch_size: int = 1) -> tuple[float, np.ndarray]:
    """(ms per query, result rows) of searching ``queries`` in batches of ``batch_size``."""
    index.search(queries[:batch_size], k)  # warm-up
    rows = []
    start = time.perf_counter()
    for s in range(0, len(queries), batch_size):
        rows.append(index.search(queries[s:s + batch_size], k)[1])
    return 1000 * (time.perf_counter() - start) / len(queries), np.concatenate(rows)


def recall_vs_exact(rows: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of the exact top-k found by an approximate search."""
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(rows, exact)]))


def latency_rows(sizes=(1_000, 10_000, 100_000, 1_000_000), indexes=("Flat", "IVF1024_PQ32"), *, dim: int = 256,
                 num_queries: int = 256, k: int = 10, batch_size: int = 1, nprobe: int = 16, seed: int = 0,
                 use_gpu: bool = True, progress: bool = True) -> list[dict]:
    """One row per (index, size): ``index``, ``corpus_size``, ``build_s``, ``latency_ms``, ``recall_vs_flat``."""
    from tqdm import tqdm

    from grace.retrieval_baselines.clip_faiss.index import _maybe_gpu, train_index

    rows = []
    rng = np.random.default_rng(seed + 1)
    for n in tqdm(sizes, desc="corpus sizes", disable=not progress):
        corpus = synthetic_vectors(n, dim, seed=seed)
        queries = corpus[rng.choice(n, size=min(num_queries, n), replace=False)]
        queries = queries + 0.05 * rng.standard_normal(queries.shape).astype(np.float32)
        queries /= np.linalg.norm(queries, axis=1, keepdims=True)
        exact = None
        for name in indexes:
            spec = scaled_index_name(name, n)
            start = time.perf_counter()
            index = train_index(corpus, spec, nprobe=nprobe, use_gpu=use_gpu, seed=seed)
            build_s = time.perf_counter() - start
            index, on_gpu = _maybe_gpu(index, use_gpu)
            ms, found = time_search(index, queries, k, batch_size)
            if exact is None:
                flat = import_faiss().IndexFlatIP(dim)
                flat.add(corpus)
                exact = flat.search(queries, k)[1]
            row = {"index": name, "faiss": spec, "corpus_size": n, "dim": dim, "build_s": round(build_s, 4),
                   "latency_ms": round(ms, 4), "batch_size": batch_size, "k": k, "nprobe": nprobe,
                   "recall_vs_flat": round(recall_vs_exact(found, exact), 4), "gpu": on_gpu}
            rows.append(row)
            log.info("%s", row)
            del index
        del corpus
    return rows


def bench_latency(config) -> list[dict]:
    """``bench-latency``: rows → ``OUT/rows.json`` + ``OUT/table.md`` (+ config)."""
    from grace.io_utils import atomic_write_text, save_config, write_json

    rows = latency_rows(config.sizes, config.indexes, dim=config.dim, num_queries=config.num_queries, k=config.k,
                        batch_size=config.batch_size, nprobe=config.nprobe, seed=config.seed)
    out = Path(config.out)
    write_json(out / "rows.json", rows)
    cols = ["index", "faiss", "corpus_size", "build_s", "latency_ms", "recall_vs_flat"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows]
    atomic_write_text(out / "table.md", "\n".join(lines) + "\n")
    save_config(out, config)
    return rows


def main(argv: list[str] | None = None) -> int:
    from grace.config import command_line, dataclass_from_args
    from grace.retrieval_baselines.clip_faiss.configs import BenchLatencyConfig

    parser = command_line(BenchLatencyConfig, __doc__.splitlines()[0])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    rows = bench_latency(dataclass_from_args(BenchLatencyConfig, parser.parse_args(argv)))
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
