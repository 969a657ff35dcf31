"""Soak and abuse test of `grace serve`, on loopback only, bounded in time: N clients for D seconds, every
``--abuse-every``-th request of each client an abusive one (oversized, chunked, malformed, out of range, a path
out of the corpus, a fake upload). Reports, for the normal searches, q/s and p50/p99 latency and errors by kind;
for each abusive kind, what the server answered (every answer must be a 4xx with a one-line JSON error, never a
5xx or a dropped connection); the server's RSS sampled every 2 s (``--sample-every``) under the load (allocator pools grow while the
first batches of every size arrive, so the first ``--warmup`` seconds of load are reported apart, and growth is
judged on the rest: a least-squares slope and the change from the start to the end of that steady window, beside
the samples' own noise); that it still answers /healthz; and that the run folder is byte-for-byte unchanged.

    python benchmarks/soak_serve.py --run runs/demo --clients 16 --duration 300 --out docs/results/serve-soak
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import sys
import threading
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import QUERIES, free_port, latency_percentiles, run_clients, start_server  # noqa: E402 (a sibling script)

JSON = {"Content-Type": "application/json"}


def _multipart(field: str, filename: str, data: bytes) -> tuple[bytes, dict]:
    boundary = "grace-soak-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"{field}\"; filename=\"{filename}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}


def _chunks(total: int, size: int = 64 << 10):
    for start in range(0, total, size):
        yield b" " * min(size, total - start)


#: abusive request kinds: name → (method, path, body or a chunk iterator factory, headers)
ABUSES = {
    "JSON body of 2 MB": lambda: ("POST", "/api/search", b'{"query": "' + b"a" * (2 << 20) + b'"}', JSON),
    "chunked body of 2 MB": lambda: ("POST", "/api/search", _chunks(2 << 20), JSON),
    "malformed JSON": lambda: ("POST", "/api/search", b'{"query": "red', JSON),
    "binary garbage": lambda: ("POST", "/api/search", os.urandom(512), JSON),
    "k = 100000": lambda: ("POST", "/api/search", json.dumps({"query": "red heart", "k": 100000}).encode(), JSON),
    "k not a number": lambda: ("POST", "/api/search", json.dumps({"query": "red heart", "k": "ten"}).encode(), JSON),
    "empty query": lambda: ("POST", "/api/search", json.dumps({"query": "  "}).encode(), JSON),
    "unknown retriever": lambda: ("POST", "/api/search", json.dumps({"query": "x", "retrievers": ["nope"]}).encode(),
                                  JSON),
    "path out of the corpus": lambda: ("GET", "/images/..%2F..%2Fdata%2Fdataset.json", None, {}),
    "upload that is not an image": lambda: ("POST", "/api/search/image", *_multipart("image", "x.png", b"not png")),
    "upload of 11 MB": lambda: ("POST", "/api/search/image", *_multipart("image", "big.png", b"\x89PNG" + b"0" * (11 << 20))),
    "wrong method": lambda: ("DELETE", "/api/search", None, {}),
}


def _send(conn: http.client.HTTPConnection, method: str, path: str, body, headers: dict) -> tuple[int, bytes]:
    chunked = body is not None and not isinstance(body, bytes)
    conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
    response = conn.getresponse()
    return response.status, response.read()


def _one_line_error(status: int, payload: bytes) -> bool:
    try:
        body = json.loads(payload)
    except ValueError:
        return False
    return 400 <= status < 500 and isinstance(body, dict) and set(body) == {"error"} and "\n" not in body["error"]


def folder_digest(folder: Path) -> str:
    """sha1 over every file's relative path and bytes under ``folder``."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def soak(port: int, clients: int, duration: float, abuse_every: int, k: int) -> dict:
    """``clients`` threads until ``duration`` seconds pass; per request kind what came back."""
    lock = threading.Lock()
    latencies: list[float] = []
    normal: Counter = Counter()
    abusive: dict[str, Counter] = {name: Counter() for name in ABUSES}
    stop = time.perf_counter() + duration

    def client(index: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        n = 0
        while time.perf_counter() < stop:
            n += 1
            abuse = list(ABUSES)[(index + n) % len(ABUSES)] if n % abuse_every == 0 else None
            if abuse:
                method, path, body, headers = ABUSES[abuse]()
            else:
                body = json.dumps({"query": QUERIES[(index * 7 + n) % len(QUERIES)], "k": k}).encode()
                method, path, headers = "POST", "/api/search", JSON
            t0 = time.perf_counter()
            try:
                status, payload = _send(conn, method, path, body, headers)
                outcome = str(status) if abuse is None or _one_line_error(status, payload) else f"{status} (not a one-line error)"
            except (OSError, http.client.HTTPException) as err:
                outcome = f"connection: {type(err).__name__}"
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            with lock:
                if abuse is None:
                    normal[outcome] += 1
                    if outcome == "200":
                        latencies.append(time.perf_counter() - t0)
                else:
                    abusive[abuse][outcome] += 1
        conn.close()

    wall = run_clients(client, [(i,) for i in range(clients)])
    return {"wall_s": wall, "normal": dict(normal), "qps": len(latencies) / wall, **latency_percentiles(latencies),
            "abusive": {name: dict(c) for name, c in abusive.items()}}


def rss_trend(samples: list[tuple[float, float]], warmup_s: float) -> dict:
    """RSS growth after the warm-up: the samples ``(seconds into the load, MB)`` at or after ``warmup_s``, their
    least-squares slope (MB/min), the change between the means of the window's first and last tenth, and the
    noise (sd of the residuals about the line). ``within_noise``: the change is under 3 noise sd or under 2% of
    the RSS (a step of one allocator arena on a ~600 MB process)."""
    import numpy as np

    steady = [(t, mb) for t, mb in samples if t >= warmup_s]
    if len(steady) < 10:
        raise SystemExit(f"{len(steady)} RSS samples after a {warmup_s:.0f} s warm-up: run longer (--duration)")
    t, mb = np.array(steady).T
    slope, intercept = np.polyfit(t, mb, 1)
    noise = float(np.std(mb - (slope * t + intercept), ddof=2))
    tenth = max(1, len(mb) // 10)
    change = float(mb[-tenth:].mean() - mb[:tenth].mean())
    return {"warmup_s": warmup_s, "samples": len(steady), "start_mb": float(mb[:tenth].mean()),
            "end_mb": float(mb[-tenth:].mean()), "change_mb": change, "slope_mb_per_min": float(slope * 60),
            "noise_mb": noise, "within_noise": bool(abs(change) <= max(3 * noise, 0.02 * float(mb[:tenth].mean())))}


def _healthy(port: int) -> bool:
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> dict:
    import psutil

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="run folder with trained retrievers")
    parser.add_argument("--dataset", type=Path, default=None, help="dataset.json (default RUN/data/dataset.json)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--duration", type=float, default=300.0, help="seconds of load (bounded)")
    parser.add_argument("--abuse-every", type=int, default=4, help="every N-th request of a client is abusive")
    parser.add_argument("--warmup", type=float, default=60.0,
                        help="seconds of load before RSS growth is judged (allocator pools fill)")
    parser.add_argument("--sample-every", type=float, default=2.0, help="seconds between two RSS samples")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--window-ms", type=float, default=5.0)
    parser.add_argument("--out", type=Path, required=True, help="write OUT.md and OUT.json")
    args = parser.parse_args(argv)
    if not 0 < args.duration <= 3600 or not 0 < args.clients <= 64:
        raise SystemExit("--duration must be in (0, 3600] s and --clients in 1..64 (a bounded test)")
    if not 0 <= args.warmup < args.duration:
        raise SystemExit("--warmup must be shorter than --duration")

    before = folder_digest(args.run)
    port = free_port()
    proc = start_server(args, port)
    server = psutil.Process(proc.pid)
    try:
        for query in QUERIES[:4]:  # warm-up: every retriever answers once before the start RSS is read
            _send(http.client.HTTPConnection("127.0.0.1", port, timeout=300), "POST", "/api/search",
                  json.dumps({"query": query, "k": args.k}).encode(), JSON)
        rss_start = server.memory_info().rss
        samples: list[tuple[float, float]] = []
        sampling = threading.Event()
        began = time.perf_counter()

        def sample() -> None:
            while not sampling.wait(args.sample_every):
                samples.append((time.perf_counter() - began, server.memory_info().rss / 2**20))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        report = soak(port, args.clients, args.duration, args.abuse_every, args.k)
        sampling.set()
        sampler.join()
        rss_end = server.memory_info().rss
        report["alive"] = proc.poll() is None and _healthy(port)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    report.update(clients=args.clients, duration_s=args.duration, abuse_every=args.abuse_every,
                  rss_start_mb=rss_start / 2**20, rss_end_mb=rss_end / 2**20,
                  rss_peak_mb=max([rss_start / 2**20, *(mb for _, mb in samples)]),
                  rss_steady=rss_trend(samples, args.warmup), rss_samples=samples, sample_every_s=args.sample_every,
                  run_folder_unchanged=folder_digest(args.run) == before)
    from grace.provenance import script_provenance

    report.update(script_provenance(__file__, argv))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=1))
    args.out.with_suffix(".md").write_text(render(report))
    print(render(report))
    return report


def render(r: dict) -> str:
    from grace.provenance import provenance_lines

    lines = [f"# `grace serve` soak and abuse test: {r['clients']} clients, {r['duration_s']:.0f} s, one request "
             f"in {r['abuse_every']} abusive\n",
             "| abusive request | sent | answers | every answer a 4xx one-line error |", "|---|---|---|---|"]
    for name, outcomes in r["abusive"].items():
        ok = bool(outcomes) and all(k.isdigit() and 400 <= int(k) < 500 for k in outcomes)
        answers = ", ".join(f"{k} × {v}" for k, v in sorted(outcomes.items()))
        lines.append(f"| {name} | {sum(outcomes.values())} | {answers} | {'yes' if ok else 'NO'} |")
    normal = ", ".join(f"{k} × {v}" for k, v in sorted(r["normal"].items()))
    growth = r["rss_end_mb"] - r["rss_start_mb"]
    steady = r["rss_steady"]
    minutes = [mb for t, mb in r["rss_samples"] if t % 60 < r["sample_every_s"]]
    lines += ["", f"- normal searches: {normal}; {r['qps']:.1f} q/s answered 200, p50 {r['p50_ms']:.0f} ms, "
              f"p99 {r['p99_ms']:.0f} ms",
              f"- server RSS: start {r['rss_start_mb']:.0f} MB, end {r['rss_end_mb']:.0f} MB ({growth:+.1f} MB, "
              f"{100 * growth / r['rss_start_mb']:+.1f}%), peak {r['rss_peak_mb']:.0f} MB; about each minute: "
              + ", ".join(f"{mb:.0f}" for mb in minutes),
              f"- after the first {steady['warmup_s']:.0f} s of load ({steady['samples']} samples, every "
              f"{r['sample_every_s']:g} s): "
              f"{steady['start_mb']:.0f} → {steady['end_mb']:.0f} MB ({steady['change_mb']:+.1f} MB; slope "
              f"{steady['slope_mb_per_min']:+.2f} MB/min; noise sd {steady['noise_mb']:.1f} MB): "
              + ("no growth beyond noise" if steady["within_noise"] else "GROWS beyond noise")
              + " (within noise: |change| under 3 noise sd or under 2% of the RSS)",
              f"- server alive at the end (/healthz 200): {'yes' if r['alive'] else 'NO'}; run folder byte-for-byte "
              f"unchanged: {'yes' if r['run_folder_unchanged'] else 'NO'}",
              *provenance_lines(r)]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
