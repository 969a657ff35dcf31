"""`grace serve` has a bound on everything a client controls: body size (declared or streamed), k, the wait for
results (timeout: 504), the requests queued per retriever (503 + Retry-After), and the statistics it keeps."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from grace.infer.batching import DynamicBatcher, Overloaded
from grace.infer.search import SearchService
from grace.infer.server import create_app
from grace.retriever import Hit, Retriever

CORPUS = [f"img{i}" for i in range(200)]


class SleepyRetriever(Retriever):
    """Answers every query with the corpus in order, after ``delay`` seconds (a stand-in for a slow model)."""

    name = "sleepy"

    def __init__(self, delay: float = 0.0):
        self.delay = delay

    def search(self, queries, k):
        time.sleep(self.delay)
        return [[Hit(i, 1.0) for i in CORPUS[:k]] for _ in queries]

    @classmethod
    def load(cls, path, **kwargs):
        return cls()


def _client(delay=0.0, **bounds):
    service = SearchService({"sleepy": SleepyRetriever(delay)}, files={i: None for i in CORPUS})
    return TestClient(create_app(service, window_ms=1, **bounds))


def _error(response, status):
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]
    return body["error"]


def test_bodies_over_the_limit_are_refused_declared_or_streamed():
    with _client(max_body_bytes=1024) as client:
        assert client.post("/api/search", json={"query": "red", "k": 2}).status_code == 200
        big = json.dumps({"query": "x" * 5000, "k": 1})
        assert "1024" in _error(client.post("/api/search", content=big,
                                            headers={"content-type": "application/json"}), 413)

        def chunks():  # no Content-Length: the body is counted as it streams
            for _ in range(10):
                yield b" " * 512

        assert "over 1024 bytes" in _error(client.post("/api/search", content=chunks()), 413)
        assert client.get("/healthz").json()["status"] == "ok"  # still serving


def test_k_above_the_maximum_is_a_400():
    with _client(max_k=50) as client:
        assert len(client.post("/api/search", json={"query": "red", "k": 50}).json()["retrievers"]["sleepy"]
                   ["results"]) == 50
        assert "maximum of 50" in _error(client.post("/api/search", json={"query": "red", "k": 51}), 400)


def test_timeout_fuzz_a_slow_retriever_gets_a_504_and_the_server_keeps_serving():
    with _client(delay=1.0, timeout_s=0.2) as client:
        started = time.perf_counter()
        assert "within 0.2 s" in _error(client.post("/api/search", json={"query": "red", "k": 1}), 504)
        assert time.perf_counter() - started < 0.9
        assert client.get("/healthz").status_code == 200


def test_a_full_queue_is_a_503_with_retry_after():
    with _client(delay=0.3, max_pending=1, timeout_s=10) as client:
        responses = []

        def ask():
            responses.append(client.post("/api/search", json={"query": "red", "k": 1}))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        statuses = sorted(r.status_code for r in responses)
        assert statuses.count(200) >= 1 and statuses.count(503) >= 1 and set(statuses) <= {200, 503}
        refused = next(r for r in responses if r.status_code == 503)
        assert refused.headers["retry-after"] == "1" and "already waiting" in _error(refused, 503)


def test_batcher_statistics_are_bounded_and_its_queue_refuses_past_max_pending():
    async def scenario():
        batcher = DynamicBatcher(lambda qs, k: [[q] for q in qs], max_batch=1, window_ms=0, max_pending=2)
        batcher.STATS = 5
        batcher.batch_sizes = type(batcher.batch_sizes)(maxlen=5)
        for i in range(20):
            await batcher.submit(i, 1)
        assert len(batcher.batch_sizes) == 5
        slow = DynamicBatcher(lambda qs, k: time.sleep(0.2) or [[q] for q in qs], max_batch=1, window_ms=0,
                              max_pending=1)
        results = await asyncio.gather(*(slow.submit(i, 1) for i in range(6)), return_exceptions=True)
        batcher.close()
        slow.close()
        return results

    results = asyncio.run(scenario())
    assert any(isinstance(r, Overloaded) for r in results) and any(r == [0] for r in results)
