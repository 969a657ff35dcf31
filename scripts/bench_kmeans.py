#!/usr/bin/env python
"""Benchmarks of the identifier stage (CPU).

    python scripts/bench_kmeans.py kmeans --n 1000000 --dim 512 --k 30 --c 30   # structured ids
    python scripts/bench_kmeans.py trie --sizes 1000 10000 100000 1000000      # numeric-id tries
    python scripts/bench_kmeans.py schemes [--dataset /tmp/emoji/dataset.json]  # each scheme's build time
    python scripts/bench_kmeans.py at-scale --file /tmp/x10m.npy --n 10000000 --dim 512   # out of core:
        # structured and rq ids from a float16 features file (written first if absent: clustered vectors)

Each measurement runs in a fresh subprocess so peak RSS (ru_maxrss) is that of the measured step alone.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_kmeans(n: int, dim: int, k: int, c: int, backend: str) -> dict:
    import numpy as np

    from grace.identifiers.kmeans import hierarchical_kmeans

    x = np.random.default_rng(0).standard_normal((n, dim), dtype=np.float32)
    base = _peak_mb()
    start = time.perf_counter()
    paths = hierarchical_kmeans(x, k=k, c=c, seed=0, backend=backend)
    seconds = time.perf_counter() - start
    depth = [len(p) for p in paths]
    return {"n": n, "dim": dim, "k": k, "c": c, "backend": backend, "seconds": round(seconds, 2),
            "max_depth": max(depth), "mean_depth": round(float(np.mean(depth)), 3),
            "unique": len(set(paths)) == n, "peak_rss_mb": round(_peak_mb()), "rss_before_mb": round(base)}


def one_trie(n: int) -> dict:
    import numpy as np

    from grace.data_process.dataset import Dataset, ImageRecord
    from grace.identifiers import build_trie, create_scheme

    records = [ImageRecord(str(i), "", "test", ["x"]) for i in range(n)]
    dataset = Dataset(records)
    start = time.perf_counter()
    idmap = create_scheme("numeric", tokenizer="smollm2").build(dataset)
    tok = idmap.tokenizer()
    ids_s = time.perf_counter() - start
    base = _peak_mb()
    start = time.perf_counter()
    trie = build_trie(idmap, tok)
    build_s = time.perf_counter() - start
    table = trie.transitions()
    rng = np.random.default_rng(0)
    probes = [list(s) for s in (tok.encode_identifier(idmap.to_id(str(i))) for i in rng.integers(0, n, 200))]
    start = time.perf_counter()
    for seq in probes:
        for d in range(len(seq) + 1):
            trie.get(seq[:d])
    get_us = (time.perf_counter() - start) / sum(len(s) + 1 for s in probes) * 1e6
    table_mb = sum(a.nbytes for a in (table.offsets, table.tokens, table.children)) / 2**20
    return {"n": n, "ids_and_tokenizer_s": round(ids_s, 2), "build_trie_s": round(build_s, 2),
            "nodes": table.num_nodes, "edges": table.num_edges, "table_mb": round(table_mb, 1),
            "get_us": round(get_us, 1), "peak_rss_mb": round(_peak_mb()), "rss_before_build_mb": round(base)}


def one_scheme(name: str, dataset_json: str | None) -> dict:
    import numpy as np

    from grace.identifiers import create_scheme

    if dataset_json:
        from grace.data_process.dataset import load_karpathy

        dataset = load_karpathy(dataset_json, check_files=False)
    else:
        from grace.data_process.dataset import Dataset, ImageRecord

        rng = np.random.default_rng(0)
        words = ["red", "blue", "cat", "dog", "tree", "car", "smiling", "face", "flag", "heart"]
        dataset = Dataset([ImageRecord(f"im{i}", "", "test" if i % 8 == 7 else "train",
                                       [" ".join(rng.choice(words, 3)) for _ in range(2)],
                                       {"keywords": [" ".join(rng.choice(words, 2))]}) for i in range(3000)])
    features = np.random.default_rng(0).standard_normal((len(dataset), 1280), dtype=np.float32)
    start = time.perf_counter()
    idmap = create_scheme(name).build(dataset, features)
    scheme_s = time.perf_counter() - start
    tok = idmap.tokenizer()
    lengths = [len(tok.encode_identifier(i)) for i in idmap.identifiers()]
    return {"scheme": name, "images": len(dataset), "build_s": round(scheme_s, 2),
            "with_tokenizer_s": round(time.perf_counter() - start, 2), "new_tokens": len(tok.new_tokens),
            "max_len": max(lengths), "mean_len": round(float(np.mean(lengths)), 2),
            "data": dataset_json or "3000 synthetic records + random 1280-d features"}


def make_file(path: str, n: int, dim: int, clusters: int = 4096, chunk: int = 250_000) -> dict:
    """A float16 ``.npy`` of ``n`` unit-normalised clustered vectors, written chunk by chunk."""
    import numpy as np

    from grace.identifiers.out_of_core import write_vectors

    rng = np.random.default_rng(0)
    centres = rng.standard_normal((clusters, dim)).astype(np.float32)

    def blocks():
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            x = centres[rng.integers(0, clusters, m)] + 0.5 * rng.standard_normal((m, dim), dtype=np.float32)
            yield x / np.linalg.norm(x, axis=1, keepdims=True)

    start = time.perf_counter()
    write_vectors(path, blocks(), n, dim, "float16")
    return {"file": path, "n": n, "dim": dim, "write_s": round(time.perf_counter() - start, 1),
            "gb": round(os.path.getsize(path) / 2**30, 2)}


def _unique_rows(a) -> bool:
    import numpy as np

    a = np.ascontiguousarray(a)
    return len(np.unique(a.view(np.dtype((np.void, a.dtype.itemsize * a.shape[1]))).ravel())) == len(a)


def one_at_scale(path: str, scheme: str, k: int, c: int, levels: int, codebook: int, in_memory_rows: int) -> dict:
    """Structured paths or rq codes (+ the position that makes each id unique) of every row of ``path``."""
    import numpy as np

    from grace.identifiers.out_of_core import VectorFile, hierarchical_kmeans, residual_kmeans

    features = VectorFile(path)
    base = _peak_mb()
    start = time.perf_counter()
    if scheme == "structured":
        ids = hierarchical_kmeans(features, k=k, c=c, seed=0, in_memory_rows=in_memory_rows,
                                  workdir=os.path.dirname(path))
        extra = {"k": k, "c": c, "in_memory_rows": in_memory_rows, "depth": int(ids.shape[1])}
    else:
        codes = residual_kmeans(features, levels=levels, codebook=codebook, seed=0)
        order = np.lexsort(codes.T[::-1])  # rows sharing codes are adjacent; their rank among them is the position
        same = np.r_[False, (np.diff(codes[order], axis=0) == 0).all(axis=1)]
        run_start = np.maximum.accumulate(np.where(same, 0, np.arange(len(codes))))
        position = np.empty(len(codes), np.int32)
        position[order] = np.arange(len(codes)) - run_start
        ids = np.column_stack([codes, position])
        extra = {"levels": levels, "codebook": codebook, "largest_cell": int(position.max()) + 1}
    seconds = time.perf_counter() - start
    return {"scheme": scheme, "n": len(features), "dim": features.shape[1], "dtype": features.dtype.name,
            "seconds": round(seconds, 1), "unique": _unique_rows(ids), "peak_rss_mb": round(_peak_mb()),
            "rss_before_mb": round(base), **extra}


def _child(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "_one", kind, json.dumps(kw)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("kmeans")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--c", type=int, default=30)
    p.add_argument("--backend", default="faiss")
    p = sub.add_parser("trie")
    p.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000, 1_000_000])
    p = sub.add_parser("schemes")
    p.add_argument("--dataset", default="/tmp/emoji/dataset.json")
    p = sub.add_parser("at-scale")
    p.add_argument("--file", required=True, help="float16 .npy features (written here first when absent)")
    p.add_argument("--n", type=int, default=10_000_000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--schemes", nargs="+", default=["structured", "rq"])
    p.add_argument("--k", type=int, default=30)
    p.add_argument("--c", type=int, default=30)
    p.add_argument("--levels", type=int, default=3)
    p.add_argument("--codebook", type=int, default=256)
    p.add_argument("--in-memory-rows", type=int, default=1_000_000)
    p = sub.add_parser("_one")
    p.add_argument("kind")
    p.add_argument("kw")
    args = parser.parse_args()
    if args.cmd == "_one":
        fn = {"kmeans": one_kmeans, "trie": one_trie, "scheme": one_scheme, "make": make_file,
              "at_scale": one_at_scale}[args.kind]
        print(json.dumps(fn(**json.loads(args.kw))))
        return
    if args.cmd == "kmeans":
        print(json.dumps(_child("kmeans", n=args.n, dim=args.dim, k=args.k, c=args.c, backend=args.backend)))
    elif args.cmd == "at-scale":
        if not os.path.isfile(args.file):
            print(json.dumps(_child("make", path=args.file, n=args.n, dim=args.dim)), flush=True)
        for scheme in args.schemes:
            print(json.dumps(_child("at_scale", path=args.file, scheme=scheme, k=args.k, c=args.c, levels=args.levels,
                                    codebook=args.codebook, in_memory_rows=args.in_memory_rows)), flush=True)
    elif args.cmd == "trie":
        for n in args.sizes:
            print(json.dumps(_child("trie", n=n)), flush=True)
    else:
        dataset = args.dataset if os.path.isfile(args.dataset) else None
        for name in ("numeric", "string", "semantic", "structured", "atomic"):
            print(json.dumps(_child("scheme", name=name, dataset_json=dataset)), flush=True)


if __name__ == "__main__":
    main()
