"""Dynamic batching for a search server: concurrent requests to one retriever become one batched search.

Each :class:`DynamicBatcher` owns one worker thread (the retriever's model is used by one thread at a time).
A request waits at most ``window_ms`` for others to join its batch (or until ``max_batch`` are queued), so a
lone client pays a few milliseconds and many clients share every forward pass.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """Raised by :meth:`DynamicBatcher.submit` when ``max_pending`` requests already wait (the server answers 503)."""


@dataclass
class _Pending:
    query: Any
    k: int
    future: asyncio.Future


class DynamicBatcher:
    """``await batcher.submit(query, k)`` → that query's rows, computed in a batch with concurrent requests.

    ``search(queries, k)`` is the batched function (one list of rows per query, best first); a batch runs at
    the largest ``k`` asked and each caller gets its own top ``k``. When a batched call fails, its requests
    are retried one by one, so one bad query fails alone. At most ``max_pending`` requests wait: one more is
    refused with :class:`Overloaded` (nothing queues without bound), and ``batch_sizes`` keeps the last
    ``STATS`` batches only.
    """

    STATS = 10_000

    def __init__(self, search: Callable[[list, int], list[list]], *, max_batch: int = 32, window_ms: float = 5.0,
                 name: str = "retriever", max_pending: int = 1024):
        if max_batch < 1 or window_ms < 0 or max_pending < 1:
            raise ValueError("max_batch and max_pending must be >= 1 and window_ms >= 0")
        self.search, self.max_batch, self.window = search, max_batch, window_ms / 1000.0
        self.name, self.max_pending = name, max_pending
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"batch-{name}")
        self.batch_sizes: deque[int] = deque(maxlen=self.STATS)  # recent batch sizes: the load benchmark's view
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None

    async def submit(self, query: Any, k: int) -> list:
        if self._queue is None or self._worker is None or self._worker.done():
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._run())
        if self._queue.qsize() >= self.max_pending:
            raise Overloaded(f"{self.name}: {self._queue.qsize()} requests are already waiting; try again shortly")
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(query, k, future))
        return await future

    async def _collect(self) -> list[_Pending]:
        assert self._queue is not None
        batch = [await self._queue.get()]
        deadline = asyncio.get_running_loop().time() + self.window
        while len(batch) < self.max_batch:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
                break
            try:
                batch.append(await asyncio.wait_for(self._queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            batch = [p for p in batch if not p.future.cancelled()]
            if not batch:
                continue
            self.batch_sizes.append(len(batch))
            k = max(p.k for p in batch)
            try:
                rows = await loop.run_in_executor(self.executor, self.search, [p.query for p in batch], k)
                for pending, result in zip(batch, rows):
                    _resolve(pending, result[:pending.k])
            except Exception:
                log.debug("%s: batch of %d failed; retrying one by one", self.name, len(batch), exc_info=True)
                for pending in batch:
                    try:
                        result = await loop.run_in_executor(self.executor, self.search, [pending.query], pending.k)
                        _resolve(pending, result[0])
                    except Exception as err:  # noqa: BLE001 — handed to the caller
                        if not pending.future.done():
                            pending.future.set_exception(err)

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _resolve(pending: _Pending, result: list) -> None:
    if not pending.future.done():
        pending.future.set_result(result)
