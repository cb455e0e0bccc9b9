"""`classify --ray`: the indexing Ray encoder (clipapp/index/distributed/) gives the same predictions as the local
path."""

from __future__ import annotations

import numpy as np
import pytest

from clipapp.classify import stream as core
from clipapp.index.distributed import ray_session
from tests.support.fashion import LABELS
from tests.support.paths import TESTS_DIR


@pytest.fixture(scope="module")
def ray_cluster():
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CLIPAPP_MODEL_CONFIGS", str(TESTS_DIR / "data"))  # the workers load the tiny model too
        with ray_session("local", num_cpus=2) as ray:
            yield ray


def test_ray_classify_equals_local(ray_cluster, tiny_service, fashion_folder, tmp_path):
    files = sorted(fashion_folder.rglob("*.png"))[:60]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    sources = [*files, broken]
    classifier = core.zero_shot_classifier(tiny_service, LABELS)
    local = core.classify_files(tiny_service, sources, classifier, k=3, keep_results=True, batch_size=16)
    with core.ray_encoder("auto", tiny_service, precision="fp32") as encoder:
        remote = core.classify_files(
            tiny_service, sources, classifier, k=3, keep_results=True, batch_size=16, encoder=encoder
        )
        assert encoder.stats.embedded == len(files)  # the vectors did come from the actors
    assert remote.classified == local.classified == len(files)
    assert [s.path for s in remote.skipped] == [s.path for s in local.skipped] == [str(broken)]
    by_path = {p.image: p for p in local.results}
    for prediction in remote.results:  # Ray returns batches as they finish: compared by path
        expected = by_path[prediction.image]
        assert [label for label, _ in prediction.top] == [label for label, _ in expected.top]
        np.testing.assert_allclose([p for _, p in prediction.top], [p for _, p in expected.top], atol=1e-5)
