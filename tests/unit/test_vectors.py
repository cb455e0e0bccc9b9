"""clipapp.vectors.normalize_rows: the one row normaliser (index vectors, adapter features and class weights)."""

from __future__ import annotations

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.vectors import normalize_rows


def test_rows_become_unit_float32_contiguous_copies():
    vectors = np.array([[3.0, 4.0], [0.0, 2.0]], dtype=np.float64)
    out = normalize_rows(vectors)
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    assert out.dtype == np.float32 and out.flags.c_contiguous and vectors[0, 0] == 3.0
    assert normalize_rows(np.array([3.0, 4.0])).shape == (1, 2)


@pytest.mark.parametrize("bad, message", [([[0.0, 0.0]], "all zeros"), ([[np.nan, 1.0]], "NaN")])
def test_checked_rows_without_a_direction_are_errors(bad, message):
    with pytest.raises(ClipAppError, match=f"A query vector .*{message}|{message}"):
        normalize_rows(np.array(bad), what="query vector")


def test_unchecked_zero_rows_stay_zero():
    out = normalize_rows(np.array([[0.0, 0.0], [0.0, 5.0]]), what=None)
    np.testing.assert_array_equal(out, [[0.0, 0.0], [0.0, 1.0]])
