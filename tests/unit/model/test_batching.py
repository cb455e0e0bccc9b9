"""Micro-batching: concurrent callers share forward passes and each gets exactly its own rows back."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from clipapp.model.batching import MicroBatcher


def test_each_caller_gets_its_own_rows_and_passes_are_shared():
    calls = []
    gate = threading.Event()

    def forward(batch):
        gate.wait(5)  # hold the first pass so the others queue up behind it
        calls.append(len(batch))
        return batch * 10

    batcher = MicroBatcher(forward, window_s=0.05, max_rows=64)
    inputs = [torch.full((1 + i % 3, 2), float(i)) for i in range(16)]
    with ThreadPoolExecutor(max_workers=16) as pool:
        futures = [pool.submit(batcher.submit, rows) for rows in inputs]
        gate.set()
        outputs = [f.result(timeout=10) for f in futures]
    batcher.close()
    for rows, out in zip(inputs, outputs, strict=False):
        torch.testing.assert_close(out, rows * 10)
    assert sum(calls) == sum(len(r) for r in inputs)
    assert len(calls) < len(inputs)


def test_errors_reach_every_waiting_caller():
    def forward(batch):
        raise RuntimeError("boom")

    batcher = MicroBatcher(forward, window_s=0.01)
    with pytest.raises(RuntimeError, match="boom"):
        batcher.submit(torch.zeros(1, 2))
    batcher.close()


def test_service_results_do_not_depend_on_batching(tiny_service, photos):
    from PIL import Image

    images = [Image.open(p).convert("RGB") for p in photos[:4]]
    alone = np.concatenate([tiny_service.encode_images([im]) for im in images])
    with ThreadPoolExecutor(max_workers=4) as pool:
        together = np.concatenate(list(pool.map(lambda im: tiny_service.encode_images([im]), images)))
    np.testing.assert_allclose(together, alone, atol=1e-5)
