"""``grace serve``: a FastAPI app over a :class:`~grace.infer.search.SearchService`.

- ``GET /`` the search page (``static/index.html``: plain HTML + JS, no build step);
- ``POST /api/search`` ``{query, k, retrievers}`` → ranked lists of every named retriever (with latency);
- ``POST /api/search/image`` (multipart: ``image``, optional ``query``, ``k``, ``retrievers``) for the
  retrievers that take image queries;
- ``GET /api/retrievers``, ``GET /api/run`` (the run's result tables and plots), ``GET /healthz``;
- ``GET /images/{image_id}`` serves a corpus image *by id* (never by path, so nothing outside the corpus can
  be reached), ``GET /run/{name}`` one of the files ``/api/run`` lists.

Concurrent requests to a retriever are batched (:class:`~grace.infer.batching.DynamicBatcher`). Bad input
gets a 4xx with ``{"error": "one line"}`` and the server keeps serving. (fastapi, uvicorn and
python-multipart are the ``serve`` extra; import this module only to serve.)
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException

from grace.errors import GraceError, InputError
from grace.infer.batching import DynamicBatcher, Overloaded
from grace.infer.search import SearchService, response_entry
from grace.retriever import Query
from grace.run_layout import RunLayout

STATIC = Path(__file__).parent / "static"
#: largest accepted image upload
MAX_UPLOAD_BYTES = 10 * 1024 * 1024
#: largest body of every other request (a JSON search is a few hundred bytes)
MAX_BODY_BYTES = 64 * 1024
#: the most results one request may ask for (beams grow with k)
MAX_K = 100
#: seconds a request may wait for its results before a 504
TIMEOUT_S = 30.0
#: requests that may wait per retriever before a 503
MAX_PENDING = 256


class _BodyTooLarge(Exception):
    pass


class BodyLimit:
    """ASGI middleware: a request body over its route's limit gets a 413 with a one-line JSON error, judged on
    the declared Content-Length and on the bytes actually streamed (chunked bodies have no length), before a
    route parses or spools any of it."""

    def __init__(self, app: Any, limit_for: Any):
        self.app, self.limit_for = app, limit_for

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            response = JSONResponse({"error": f"the body is {int(declared)} bytes; this route takes at most {limit}"},
                                    status_code=413)
            return await response(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited, send)
        except _BodyTooLarge:
            response = JSONResponse({"error": f"the body is over {limit} bytes, the most this route takes"},
                                    status_code=413)
            await response(scope, receive, send)



#: result files of a run the page links to
RUN_FILES = (".md", ".png", ".json")


def run_result_files(run: Path | None) -> dict[str, Path]:
    """name → file of the tables, plots and JSON under ``RUN/results`` (the only run files served)."""
    results = RunLayout(run).results if run is not None else None
    if results is None or not results.is_dir():
        return {}
    return {p.name: p.resolve() for p in sorted(results.iterdir())
            if p.is_file() and p.suffix in RUN_FILES}


def create_app(service: SearchService, *, max_batch: int = 32, window_ms: float = 5.0, max_k: int = MAX_K,
               timeout_s: float = TIMEOUT_S, max_pending: int = MAX_PENDING,
               max_body_bytes: int = MAX_BODY_BYTES) -> Any:
    """The FastAPI app serving ``service`` (one dynamic batcher per retriever). Every bound is explicit: bodies
    (``max_body_bytes``; image uploads ``MAX_UPLOAD_BYTES``), ``k`` (``max_k``), the wait for results
    (``timeout_s``: 504) and the requests waiting per retriever (``max_pending``: 503 with Retry-After)."""
    batchers = {name: DynamicBatcher(lambda qs, k, n=name: service.search_one(n, qs, k), max_batch=max_batch,
                                     window_ms=window_ms, name=name, max_pending=max_pending)
                for name in service.retrievers}
    results_files = run_result_files(service.run)
    default_k = min(10, len(service.files) or 10)

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        yield
        for batcher in batchers.values():
            batcher.close()

    app = FastAPI(title="grace search", docs_url="/api/docs", redoc_url=None, lifespan=lifespan)
    app.state.service, app.state.batchers = service, batchers
    upload_limit = MAX_UPLOAD_BYTES + 64 * 1024  # the image plus the form's other fields
    app.add_middleware(BodyLimit, limit_for=lambda path: upload_limit if path == "/api/search/image"
                       else max_body_bytes)

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": " ".join(str(message).split())}, status_code=status)

    @app.exception_handler(GraceError)
    async def _grace_error(_: Request, exc: GraceError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        return error(400, f"{where + ': ' if where else ''}{first.get('msg', 'invalid request')}")

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        return error(exc.status_code, exc.detail)

    async def run_search(query: Query, k: Any, names: Any) -> dict:
        if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) for n in names)):
            return error(400, "retrievers must be a list of names")
        names = service.check_request(names, k, query)
        if k > max_k:
            return error(400, f"k={k} is more than this server's maximum of {max_k}")
        out = {}
        for name in names:
            t0 = time.perf_counter()
            try:
                rows = await asyncio.wait_for(batchers[name].submit(query, k), timeout_s)
            except asyncio.TimeoutError:
                return error(504, f"{name} did not answer within {timeout_s:g} s")
            except Overloaded as exc:
                response = error(503, str(exc))
                response.headers["Retry-After"] = "1"
                return response
            out[name] = response_entry(rows, time.perf_counter() - t0)
        return {"query": query.text, "k": k, "retrievers": out}

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "retrievers": len(service.retrievers)}

    @app.get("/api/retrievers")
    def retrievers() -> dict:
        return {"retrievers": service.describe(), "corpus_size": len(service.files) or None}

    @app.get("/api/run")
    def run_files() -> dict:
        return {"run": str(service.run) if service.run else None,
                "files": [{"name": n, "url": f"/run/{n}"} for n in results_files]}

    @app.post("/api/search")
    async def search(request: Request) -> Any:
        try:
            body = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            return error(400, f"malformed JSON: {err}")
        if not isinstance(body, dict):
            return error(400, "the body must be a JSON object {query, k, retrievers}")
        text = body.get("query")
        if not isinstance(text, str):
            return error(400, "query must be a string")
        return await run_search(Query(text=text), body.get("k", default_k), body.get("retrievers"))

    @app.post("/api/search/image")
    async def search_image(request: Request) -> Any:
        # BodyLimit has refused a body over MAX_UPLOAD_BYTES + 64 KiB, declared or streamed
        form = await request.form(max_part_size=MAX_UPLOAD_BYTES + 1)
        upload = form.get("image")
        if not isinstance(upload, UploadFile):  # absent, or a plain text field
            return error(400, "no image file in the form (field 'image')")
        data = await upload.read(MAX_UPLOAD_BYTES + 1)
        if len(data) > MAX_UPLOAD_BYTES:
            return error(413, f"images up to {MAX_UPLOAD_BYTES} bytes are accepted")
        suffix = _image_suffix(data)
        try:
            k = int(form.get("k") or default_k)
        except ValueError:
            return error(400, "k must be an integer")
        names = form.getlist("retrievers") or None
        text = str(form.get("query") or "").strip() or None
        with tempfile.NamedTemporaryFile(suffix=suffix) as tmp:
            tmp.write(data)
            tmp.flush()
            return await run_search(Query(text=text, image=Path(tmp.name)), k, names)

    @app.get("/images/{image_id:path}")
    def image(image_id: str) -> Any:
        path = service.files.get(image_id)
        if path is None or not path.is_file():
            return error(404, "no such image in the corpus")
        return FileResponse(path)

    @app.get("/run/{name}")
    def run_file(name: str) -> Any:
        path = results_files.get(name)
        if path is None:
            return error(404, "no such result file")
        return FileResponse(path)

    @app.get("/")
    def page() -> Any:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    return app


def _image_suffix(data: bytes) -> str:
    """File suffix of an uploaded image; InputError when the bytes are not an image PIL can decode."""
    import io

    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as img:
            img.verify()
            fmt = (img.format or "png").lower()
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as err:
        raise InputError(f"the upload is not an image PIL can read ({type(err).__name__})") from None
    return "." + {"jpeg": "jpg"}.get(fmt, fmt)


def serve(service: SearchService, *, host: str = "127.0.0.1", port: int = 8000, **bounds: Any) -> None:
    """Run the app with uvicorn (blocks); ``bounds`` go to :func:`create_app`."""
    import uvicorn

    uvicorn.run(create_app(service, **bounds), host=host, port=port, log_level="warning")
