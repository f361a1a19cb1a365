"""The inference queue: all tensor work (pre-processing, the network, upsampling and arg-max) runs on one inference
thread, so the event loop never waits on a network and neither requests nor networks fight over the intra-op
threads (decoding and encoding, which do not use them, run elsewhere); with a batch window, requests that arrive
within a few milliseconds of each other run as one batch."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["InferenceQueue", "QueueFull", "Result"]


class QueueFull(Exception):
    """More requests wait for a network than the queue holds: the server answers 503 with Retry-After."""


@dataclass
class Result:
    label_map: Any  # H x W uint8 at the image's size
    input_size: tuple[int, int]
    batch_size: int
    queue_ms: float
    preprocess_ms: float
    run_ms: float  # the network on the whole batch, plus this image's upsampling and arg-max


@dataclass
class _Item:
    rgb: Any
    size: tuple[int, int] | None  # the prepare() size: None feeds the image as rtseg predict does
    key: tuple[int, int]  # the network input size it comes to: only equal keys share a batch
    future: asyncio.Future
    queued: float


class InferenceQueue:
    """One queue per served network, drained by a task on the event loop that hands batches to ``executor``.

    ``batch_window_ms`` 0 runs each request alone. Otherwise the first waiting request waits up to that long for
    others of the same input shape (up to ``max_batch``, and the network's own limit) and they run as one batch.
    ``max_queue`` bounds the requests waiting; past it :meth:`submit` raises :class:`QueueFull` at once.
    """

    def __init__(self, segmenter: Any, executor: ThreadPoolExecutor, *, batch_window_ms: float = 0.0, max_batch: int = 8,
                 max_queue: int = 64):
        self.segmenter, self.executor = segmenter, executor
        self.window_s = max(0.0, batch_window_ms) / 1e3
        limit = segmenter.max_batch
        self.max_batch = 1 if self.window_s == 0 else max(1, min(max_batch, limit) if limit else max_batch)
        self.max_queue = max_queue
        self._queue: asyncio.Queue[_Item] | None = None
        self._task: asyncio.Task | None = None
        self.in_flight = 0
        self.batches = 0
        self.images = 0

    def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.get_running_loop().create_task(self._drain())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    @property
    def waiting(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    async def submit(self, rgb: Any, size: tuple[int, int] | None, key: tuple[int, int]) -> Result:
        """The label map of one decoded image, when its batch has run."""
        if self._queue is None:
            raise RuntimeError("InferenceQueue.start() was not called (the app's lifespan starts it)")
        if self.waiting >= self.max_queue:
            raise QueueFull(f"{self.waiting} requests already wait for this network (--max-queue {self.max_queue})")
        future = asyncio.get_running_loop().create_future()
        self.in_flight += 1
        try:
            await self._queue.put(_Item(rgb, size, tuple(key), future, time.perf_counter()))
            return await future
        finally:
            self.in_flight -= 1

    async def _drain(self) -> None:
        assert self._queue is not None
        loop = asyncio.get_running_loop()
        while True:
            first = await self._queue.get()
            batch, later = [first], []
            if self.max_batch > 1:
                deadline = loop.time() + self.window_s
                while len(batch) < self.max_batch:
                    timeout = deadline - loop.time()
                    if timeout <= 0 and self._queue.empty():
                        break
                    try:
                        item = self._queue.get_nowait() if timeout <= 0 else await asyncio.wait_for(self._queue.get(), timeout)
                    except (asyncio.TimeoutError, asyncio.QueueEmpty):
                        break
                    (batch if item.key == first.key else later).append(item)
            for item in later:  # another input shape waits for the next batch
                self._queue.put_nowait(item)
            batch = [item for item in batch if not item.future.cancelled()]  # the client went away while queued
            if not batch:
                continue
            start = time.perf_counter()
            try:
                results = await loop.run_in_executor(self.executor, self._run, batch)
            except Exception as exc:  # a failure of the network fails its requests, never the queue
                for item in batch:
                    if not item.future.done():
                        item.future.set_exception(exc)
                continue
            self.batches += 1
            self.images += len(batch)
            for item, result in zip(batch, results):
                result.queue_ms = (start - item.queued) * 1e3
                if not item.future.done():
                    item.future.set_result(result)

    def _run(self, batch: list[_Item]) -> list[Result]:
        seg = self.segmenter
        t0 = time.perf_counter()
        xs = [seg.prepare(item.rgb, item.size) for item in batch]
        t1 = time.perf_counter()
        out = seg.run(xs[0] if len(xs) == 1 else torch.cat(xs))
        t2 = time.perf_counter()
        results = []
        for i, (item, x) in enumerate(zip(batch, xs)):
            t = time.perf_counter()
            labels = seg.labels(out[i:i + 1], item.rgb.shape[:2])
            results.append(Result(labels, tuple(x.shape[-2:]), len(batch), 0.0, (t1 - t0) * 1e3 / len(batch),
                                  (t2 - t1) * 1e3 + (time.perf_counter() - t) * 1e3))
        return results
