"""Adapters written by old clipapp code still load, and classify as they did when they were written.

tests/data/adapters/<format>-<commit>/ holds adapters (head, cache, partial) that the code at <commit> wrote with
scripts/make_adapter_fixtures.py, and `expected.json`: the logits and probabilities that code computed for the
probe images in tests/data/adapters/images. Format 1 is there twice: before (d1264c6) and after (2e52e61) the JSON
started naming the tensors' sha256. All were made on today's demo model weights (recorded in expected.json), so
the comparison is of the file format and the adapter arithmetic, not of two demo models.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from clipapp.finetune.adapter import load_adapter
from clipapp.model.service import ClipService
from clipapp.model.spec import DEMO_WEIGHTS
from clipapp.storage import file_sha256

FIXTURES = Path(__file__).resolve().parents[2] / "data" / "adapters"
IMAGES = FIXTURES / "images"
CASES = [
    (folder.name, mode)
    for folder in sorted(FIXTURES.glob("format*"))
    for mode in json.loads((folder / "expected.json").read_text())["adapters"]
]
# The old code ran the same fp32 demo model on the same CPU kernels; what is left is summation order.
ATOL = 1e-4


@pytest.fixture(scope="module")
def service():
    return ClipService.load("demo", device="cpu", precision="fp32")


def test_every_format_ever_written_has_a_fixture():
    formats = {json.loads((FIXTURES / name / "expected.json").read_text())["format_version"] for name, _ in CASES}
    assert formats == {1, 2}
    assert {mode for _, mode in CASES} == {"head", "cache", "partial"}


@pytest.mark.parametrize("fixture, mode", CASES)
def test_old_adapter_gives_the_logits_it_gave(service, fixture, mode):
    expected = json.loads((FIXTURES / fixture / "expected.json").read_text())
    want = expected["adapters"][mode]
    assert expected["demo_weights_sha256"] == file_sha256(DEMO_WEIGHTS), "demo model retrained: regenerate fixtures"
    written = json.loads((FIXTURES / fixture / f"{mode}.json").read_text())
    assert written["format_version"] == expected["format_version"]  # the file is the old format, as written

    adapter = load_adapter(FIXTURES / fixture / mode, expected_spec=expected["spec"])
    assert adapter.mode == mode and list(adapter.class_names) == want["class_names"]
    features = adapter.image_features(service, [str(IMAGES / name) for name in expected["probe_images"]])
    np.testing.assert_allclose(adapter.logits_from_features(features), want["logits"], atol=ATOL, rtol=0)
    np.testing.assert_allclose(adapter.probs_from_features(features), want["probs"], atol=ATOL, rtol=0)
    # and the probe images are classified as their class: the fixture is a working adapter, not noise
    names = [name.split("-")[0] for name in expected["probe_images"]]
    assert [want["class_names"][i] for i in np.argmax(want["logits"], axis=1)] == names
