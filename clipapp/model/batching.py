"""Dynamic micro-batching: requests that arrive within a short window share one forward pass.

On a server, many users each send one or two images; one forward pass over all of them costs far less than one
pass each. A lone request waits at most `window_s` before it runs. Written by hand: the serving libraries that do
this (Triton, Ray Serve) are whole servers, not a class one can drop in front of a model.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass
class _Request:
    rows: torch.Tensor
    future: Future


class MicroBatcher:
    """Run `fn(batch) -> batch` over the concatenation of concurrently submitted row tensors.

    `submit(rows)` blocks until this caller's rows are done and returns exactly its own slice of the output.
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        *,
        window_s: float = 0.005,
        max_rows: int = 64,
        name: str = "micro-batcher",
    ):
        self._fn = fn
        self.window_s = window_s
        self.max_rows = max_rows
        self._queue: queue.Queue[_Request | None] = queue.Queue()
        self.batches_run = 0
        self.rows_run = 0
        self._worker = threading.Thread(target=self._loop, name=name, daemon=True)
        self._worker.start()

    def submit(self, rows: torch.Tensor) -> torch.Tensor:
        request = _Request(rows, Future())
        self._queue.put(request)
        return request.future.result()

    def close(self) -> None:
        self._queue.put(None)
        self._worker.join(timeout=5)

    def _loop(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            pending, n_rows = [first], len(first.rows)
            deadline = time.perf_counter() + self.window_s
            while n_rows < self.max_rows:
                timeout = deadline - time.perf_counter()
                if timeout <= 0:
                    break
                try:
                    request = self._queue.get(timeout=timeout)
                except queue.Empty:
                    break
                if request is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                pending.append(request)
                n_rows += len(request.rows)
            self._run(pending)

    def _run(self, pending: list[_Request]) -> None:
        try:
            output = self._fn(torch.cat([r.rows for r in pending]))
        except BaseException as exc:  # noqa: BLE001 - every waiting caller gets the error
            for request in pending:
                request.future.set_exception(exc)
            return
        self.batches_run += 1
        self.rows_run += sum(len(r.rows) for r in pending)
        start = 0
        for request in pending:
            stop = start + len(request.rows)
            request.future.set_result(output[start:stop])
            start = stop
