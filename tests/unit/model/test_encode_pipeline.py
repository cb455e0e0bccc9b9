"""`ClipService.encode_image_files`: the decode threads only decode; the preprocessing's tensor work runs in the
encoding thread (torch ops in the decode threads made each forward pass ~3x slower: see its docstring), and the
vectors are the same as encoding the images in memory."""

from __future__ import annotations

import threading

import numpy as np
from PIL import Image

from clipapp.model.service import ClipService


def test_decode_threads_run_no_preprocessing_and_vectors_match_in_memory(tiny_spec, photos, tmp_path):
    service = ClipService.load(tiny_spec, device="cpu", micro_batch_window_s=0)
    paths = [str(p) for p in photos]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    threads: list[str] = []
    preprocess = service.preprocess

    def recording(image):
        threads.append(threading.current_thread().name)
        return preprocess(image)

    service.preprocess = recording
    results = list(service.encode_image_files([*paths, str(broken)], batch_size=2))
    assert [path for path, _, _ in results] == [*paths, str(broken)]
    assert results[-1][1] is None and results[-1][2]
    assert len(threads) == len(paths) and threading.current_thread().name in set(threads)
    assert not any(name.startswith("decode") for name in threads)
    service.preprocess = preprocess
    expected = service.encode_images([Image.open(p) for p in paths])
    np.testing.assert_allclose(np.stack([v for _, v, _ in results[:-1]]), expected, atol=1e-5)
