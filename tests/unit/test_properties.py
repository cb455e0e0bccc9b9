"""Property-based tests: whatever text or bytes a user sends, the answer is a result or a clear ClipAppError."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from clipapp.errors import ClipAppError, ImageLoadError
from clipapp.images.decode import load_image
from clipapp.model.prompts import MAX_LABELS, parse_labels

label_text = st.text(alphabet=st.characters(codec="utf-8"), max_size=400)


@given(label_text)
@settings(max_examples=300, deadline=None)
def test_parse_labels_result_or_clear_error(text):
    try:
        labels = parse_labels(text)
    except ClipAppError:
        return
    assert 1 <= len(labels) <= MAX_LABELS
    assert all(label and label == label.strip() and "," not in label and "\n" not in label for label in labels)
    assert len({label.casefold() for label in labels}) == len(labels)


@given(st.lists(label_text, min_size=1, max_size=8))
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_zero_shot_on_any_labels(tiny_service, labels):
    image = Image.new("RGB", (16, 16), (200, 30, 30))
    try:
        result = tiny_service.zero_shot([image], parse_labels(labels), templates="none")
    except ClipAppError:
        return
    assert np.isfinite(result.probs).all()
    np.testing.assert_allclose(result.probs.sum(axis=1), 1.0, atol=1e-5)


def _valid_png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def _valid_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (24, 24), (10, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


@given(st.binary(max_size=4096))
@settings(max_examples=300, deadline=None)
def test_random_bytes_are_decoded_or_refused(data):
    try:
        image = load_image(data)
    except ImageLoadError:
        return
    assert image.mode == "RGB" and image.size[0] > 0


def _noisy_jpeg() -> bytes:
    """Large enough for reduced-scale decoding at min_side=8 (64 = 8 x 8)."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    return buffer.getvalue()


@given(
    st.sampled_from([_valid_png(), _valid_jpeg(), _noisy_jpeg()]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), max_size=12),
    st.integers(0, 10_000),
    st.sampled_from([None, 8]),
)
@settings(max_examples=300, deadline=None)
def test_corrupted_images_are_decoded_or_refused(original, flips, cut, min_side):
    """Full and reduced-scale decoding (min_side) alike: an RGB image or an ImageLoadError, nothing else."""
    data = bytearray(original)
    for position, value in flips:
        data[position % len(data)] = value
    try:
        image = load_image(bytes(data[: max(1, cut % (len(data) + 1))]), min_side=min_side)
    except ImageLoadError:
        return
    assert image.mode == "RGB"
