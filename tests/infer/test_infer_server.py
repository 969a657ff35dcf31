"""`grace serve`'s JSON API: a normal search over a small trained run, every bad input answered with a 4xx
and a one-line JSON error (the server keeps serving), no file outside the corpus reachable, and the dynamic
batcher that groups concurrent requests."""

from __future__ import annotations

import asyncio
import io
import json

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient

from grace.experiments.retrievers import load_service
from grace.infer.batching import DynamicBatcher
from grace.infer.server import MAX_UPLOAD_BYTES, create_app


@pytest.fixture(scope="module")
def client(small_run):
    run, dataset_json = small_run
    service = load_service(run=run, dataset=dataset_json, num_beams=5)
    with TestClient(create_app(service, window_ms=2)) as client:
        yield client


def _png(size: int = 8) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size), (200, 30, 30)).save(buf, format="PNG")
    return buf.getvalue()


def _assert_error(response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"] and "\n" not in body["error"]


def test_health_and_loaded_retrievers(client):
    assert client.get("/healthz").json()["status"] == "ok"
    info = client.get("/api/retrievers").json()
    assert {r["name"]: r["modalities"] for r in info["retrievers"]} == {
        "generative/structured": ["text"], "bm25": ["text"], "sibling": ["text"], "clip_faiss": ["text", "image"],
        "hybrid/structured+clip_faiss": ["text"]}
    assert info["corpus_size"] == 16
    names = {f["name"] for f in client.get("/api/run").json()["files"]}
    assert {"ablation.md", "ablation.png"} <= names
    assert client.get("/run/ablation.md").text.startswith("#")
    page = client.get("/")
    assert page.status_code == 200 and "/api/search" in page.text


def test_search_returns_every_retriever_with_thumbnails_and_identifiers(client):
    response = client.post("/api/search", json={"query": "a small red circle", "k": 3})
    assert response.status_code == 200, response.text
    data = response.json()["retrievers"]
    assert set(data) == {"generative/structured", "bm25", "clip_faiss", "sibling", "hybrid/structured+clip_faiss"}
    for res in data.values():
        assert len(res["results"]) == 3 and res["latency_ms"] > 0
        thumb = client.get(f"/images/{res['results'][0]['image_id']}")
        assert thumb.status_code == 200 and thumb.content[:4] == b"\x89PNG"
    assert all(r["identifier"] and r["trie_path"] for r in data["generative/structured"]["results"])
    only = client.post("/api/search", json={"query": "blue", "k": 2, "retrievers": ["clip_faiss"]}).json()
    assert list(only["retrievers"]) == ["clip_faiss"]


def test_image_upload_searches_the_retrievers_that_take_images(client):
    response = client.post("/api/search/image", files={"image": ("q.png", _png(), "image/png")},
                           data={"k": "2", "retrievers": "clip_faiss"})
    assert response.status_code == 200, response.text
    assert len(response.json()["retrievers"]["clip_faiss"]["results"]) == 2


@pytest.mark.parametrize("body", [
    {"query": ""}, {"query": "   "}, {"query": "x" * 5_000}, {"query": "red", "k": 0}, {"query": "red", "k": -3},
    {"query": "red", "k": 17}, {"query": "red", "k": "five"}, {"query": "red", "retrievers": ["dense2"]},
    {"query": "red", "retrievers": "clip_faiss"}, {"k": 3}, {"query": 7}, ["red"],
])
def test_bad_json_requests_get_400(client, body):
    _assert_error(client.post("/api/search", json=body), 400)


def test_malformed_json_and_bad_uploads(client):
    _assert_error(client.post("/api/search", content=b"{query: red", headers={"content-type": "application/json"}),
                  400)
    _assert_error(client.post("/api/search", content=b"\xff\xfe", headers={"content-type": "application/json"}), 400)
    _assert_error(client.post("/api/search/image", files={"image": ("q.png", b"not an image", "image/png")}), 400)
    _assert_error(client.post("/api/search/image", data={"k": "3"}), 400)
    big = _png()[:64] + bytes(50 * 1024 * 1024)  # a 50 MB "image"
    assert len(big) > MAX_UPLOAD_BYTES
    _assert_error(client.post("/api/search/image", files={"image": ("big.png", big, "image/png")}), 413)
    # generative retrievers take text only
    _assert_error(client.post("/api/search/image", files={"image": ("q.png", _png(), "image/png")},
                              data={"retrievers": "generative/structured"}), 400)
    assert client.get("/healthz").status_code == 200  # still serving


@pytest.mark.parametrize("path", [
    "/images/../data/dataset.json", "/images/..%2F..%2Fdataset.json", "/images/%2E%2E/%2E%2E/etc/passwd",
    "/images//etc/passwd", "/images/%2Fetc%2Fpasswd", "/images/images%2F..%2F..%2Fdataset.json",
    "/run/..%2Fdata%2Fdataset.json", "/run/%2E%2E%2Fckpt", "/images/small-red-circle.png",
])
def test_nothing_outside_the_corpus_is_served(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert b"images" not in response.content and b"root:" not in response.content


def test_dynamic_batcher_groups_concurrent_requests_and_isolates_failures():
    calls = []

    def search(queries, k):
        calls.append(list(queries))
        if "bad" in queries:
            raise ValueError("bad query")
        return [[f"{q}-{i}" for i in range(k)] for q in queries]

    async def scenario():
        batcher = DynamicBatcher(search, max_batch=16, window_ms=50)
        results = await asyncio.gather(*(batcher.submit(f"q{i}", 1 + i % 3) for i in range(8)))
        failing = await asyncio.gather(batcher.submit("ok", 2), batcher.submit("bad", 2), return_exceptions=True)
        batcher.close()
        return results, failing, batcher.batch_sizes

    results, failing, sizes = asyncio.run(scenario())
    assert results == [[f"q{i}-{j}" for j in range(1 + i % 3)] for i in range(8)]
    assert sizes[0] == 8 and calls[0] == [f"q{i}" for i in range(8)]  # one search call for 8 clients
    assert failing[0] == ["ok-0", "ok-1"] and isinstance(failing[1], ValueError)


def test_server_batches_concurrent_http_clients(client):
    from concurrent.futures import ThreadPoolExecutor

    batcher = client.app.state.batchers["generative/structured"]
    before = len(batcher.batch_sizes)
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: client.post("/api/search", json={
            "query": f"shape {i}", "k": 2, "retrievers": ["generative/structured"]}).status_code, range(16)))
    assert codes == [200] * 16
    sizes = list(batcher.batch_sizes)[before:]
    assert sum(sizes) == 16 and max(sizes) > 1
    assert json.loads(client.get("/healthz").text)["status"] == "ok"


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_trust_image_paths_outside_the_image_root_are_refused(tmp_path, escape):
    """A dataset.json naming a file outside its image root (``..``, an absolute path, a link out) is refused at
    load, so neither ``grace search`` nor ``grace serve`` can be made to read it."""
    from grace.errors import InputError
    from grace.infer.search import corpus_files

    root = tmp_path / "data" / "images"
    root.mkdir(parents=True)
    (root / "ok.png").write_bytes(_png())
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0")
    name = {"dotdot": "../../secret.txt", "absolute": str(secret), "symlink": "link.png"}[escape]
    if escape == "symlink":
        (root / "link.png").symlink_to(secret)
    images = [{"filename": "ok.png", "imgid": 0, "split": "test", "sentences": [{"raw": "a red square"}]},
              {"filename": name, "imgid": 1, "split": "test", "sentences": [{"raw": "a secret"}]}]
    dataset_json = tmp_path / "data" / "dataset.json"
    dataset_json.write_text(json.dumps({"dataset": "t", "images": images}))
    with pytest.raises(InputError, match="outside the image root"):
        corpus_files(dataset_json)
    images.pop()
    dataset_json.write_text(json.dumps({"dataset": "t", "images": images}))
    files, _ = corpus_files(dataset_json)
    assert list(files.values()) == [(root / "ok.png").resolve()]


def test_trust_a_runs_dataset_copy_serves_images_from_its_source_root(shared_tiny_dataset, tmp_path):
    """``grace ablate --dataset`` keeps the images where they are (absolute paths in RUN/data/dataset.json);
    their source root, in RUN/data/source.json, is the one they may lie under."""
    from grace.experiments.pipeline import stage_dataset
    from grace.experiments.stage import RunContext
    from grace.infer.search import corpus_files

    source = shared_tiny_dataset.root.parent / "dataset.json"
    stage_dataset(RunContext(tmp_path), dataset=source)
    files, _ = corpus_files(tmp_path / "data" / "dataset.json")
    assert files and all(p.is_relative_to(shared_tiny_dataset.root.resolve()) for p in files.values())
