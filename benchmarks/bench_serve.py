"""Loopback load test of `grace serve`: q/s and p50/p99 latency per retriever at 1, 4 and 16 clients.

Starts ``grace serve`` on a run (its own process, 127.0.0.1, a free port), then for each retriever and each
client count sends a fixed number of ``POST /api/search`` requests from that many concurrent clients
(threads with keep-alive connections), and reports throughput, latency percentiles and errors (non-200
answers or transport failures). Generative throughput should grow with clients through the server's
dynamic batching (target: 16 clients >= 4x one client).

    python benchmarks/bench_serve.py --run runs/demo --requests 64 --out docs/results/serve-load
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

QUERIES = ["red heart", "smiling face with sunglasses", "a cat", "rocket", "pizza slice", "green tree", "rain cloud",
           "musical note", "sad face", "blue car", "the moon", "a flag", "hot beverage", "dog face", "fire", "star"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "grace.cli", "serve", "--run", str(args.run), "--port", str(port),
           "--num-beams", str(args.num_beams), "--max-batch", str(args.max_batch), "--window-ms", str(args.window_ms)]
    if args.dataset:
        cmd += ["--dataset", str(args.dataset)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(600):
        if proc.poll() is not None:
            raise SystemExit(f"grace serve exited with {proc.returncode}: {' '.join(cmd)}")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return proc
        except OSError:
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("grace serve did not come up within 5 minutes")


def load(port: int, retriever: str, clients: int, requests: int, k: int) -> dict:
    """``requests`` searches spread over ``clients`` threads; wall time, latencies and errors."""
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    per_client = [requests // clients + (i < requests % clients) for i in range(clients)]

    def client(index: int, count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
        for j in range(count):
            body = json.dumps({"query": QUERIES[(index * 7 + j) % len(QUERIES)], "k": k, "retrievers": [retriever]})
            t0 = time.perf_counter()
            try:
                conn.request("POST", "/api/search", body=body, headers={"Content-Type": "application/json"})
                response = conn.getresponse()
                response.read()
                ok = response.status == 200
            except OSError:
                ok = False
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
            with lock:
                latencies.append(time.perf_counter() - t0)
                errors[0] += not ok

    wall = run_clients(client, list(enumerate(per_client)))
    return {"retriever": retriever, "clients": clients, "requests": requests, "errors": errors[0],
            "qps": requests / wall, **latency_percentiles(latencies)}


def run_clients(client, args: list[tuple]) -> float:
    """Run ``client(*a)`` for each ``a`` in ``args``, one thread each, all at once; return the wall seconds."""
    threads = [threading.Thread(target=client, args=a) for a in args]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0


def latency_percentiles(seconds: list[float]) -> dict:
    """p50 and p99 in ms of request latencies given in seconds (0 when there are none)."""
    ms = np.asarray(seconds or [0.0]) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="run folder with trained retrievers")
    parser.add_argument("--dataset", type=Path, default=None, help="dataset.json (default RUN/data/dataset.json)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--requests", type=int, default=64, help="requests per (retriever, client count)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, default=Path("runs/bench_serve"))
    args = parser.parse_args()

    port = free_port()
    proc = start_server(args, port)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/retrievers")
        names = [r["name"] for r in json.loads(conn.getresponse().read())["retrievers"]]
        rows = []
        for name in names:
            load(port, name, 1, 4, args.k)  # warm-up (first-call allocations, lazy loads)
            for clients in args.clients:
                row = load(port, name, clients, args.requests, args.k)
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=30)

    for row in rows:
        one = next(r for r in rows if r["retriever"] == row["retriever"] and r["clients"] == min(args.clients))
        row["speedup_vs_1"] = row["qps"] / one["qps"]
    args.out.mkdir(parents=True, exist_ok=True)
    from grace.provenance import provenance_lines, script_provenance

    meta = {**script_provenance(__file__), "cpus": os.cpu_count(), "config": {k: str(v) for k, v in vars(args).items()}}
    (args.out / "results.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [(f"# `grace serve` loopback load test\n\n{args.requests} requests per row, k={args.k}, "
              f"{args.num_beams} beams, batch window {args.window_ms} ms.\n"),
             "| retriever | clients | q/s | × 1 client | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['retriever']} | {r['clients']} | {r['qps']:.1f} | {r['speedup_vs_1']:.2f} | {r['p50_ms']:.0f} | "
              f"{r['p99_ms']:.0f} | {r['errors']} |" for r in rows]
    lines += ["", *provenance_lines(meta)]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
