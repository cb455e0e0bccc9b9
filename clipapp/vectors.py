"""Row normalisation of embedding matrices: the one function behind the index (vectors stored and searched) and the
fine-tuned adapter (features and class weights)."""

from __future__ import annotations

from typing import Optional

import numpy as np

from clipapp.errors import ClipAppError


def normalize_rows(vectors: np.ndarray, *, what: Optional[str] = "vector") -> np.ndarray:
    """float32 C-contiguous copy with unit rows (a 1-d vector becomes one row).

    what: names the rows in the error raised for a zero or non-finite row (it has no direction: nothing to search
    for). None: no check; a zero row stays zero (an adapter's class with no weight scores 0 for every image).
    """
    array = np.array(vectors, dtype=np.float32, copy=True, ndmin=2)
    if what is not None and not np.all(np.isfinite(array)):
        raise ClipAppError(f"A {what} contains NaN or infinite values.")
    norms = np.sqrt(np.einsum("ij,ij->i", array, array))[:, None]  # no (n, d) temporary, unlike linalg.norm
    if what is not None and np.any(norms < 1e-12):
        raise ClipAppError(f"A {what} is all zeros and has no direction to search for.")
    array /= np.maximum(norms, 1e-12)
    return np.ascontiguousarray(array)
