"""Bugs that mypy found in clipapp (issue 14, item 6): each test failed before its fix."""

from __future__ import annotations

import numpy as np
import pytest

from clipapp.errors import ClipAppError
from clipapp.finetune.adapter import Adapter
from clipapp.index import ImageIndex
from tests.support.fake_index import DIM, SPEC, infos_for, random_unit


def test_a_closed_index_says_so_instead_of_failing_on_none(tmp_path):
    # Store.close() set its connection to None, and every later call failed with
    # "'NoneType' object has no attribute 'execute'".
    index = ImageIndex.create(tmp_path / "idx", SPEC, DIM)
    index.add_items(random_unit(3, DIM, seed=71), infos_for(range(3)))
    index.save()
    index.close()
    index.close()  # a second close is harmless
    with pytest.raises(ClipAppError, match="is closed"):
        _ = index.path_count
    with pytest.raises(ClipAppError, match="is closed"):
        index.records()
    reopened = ImageIndex.open(tmp_path / "idx")
    assert reopened.path_count == 3
    reopened.close()


def _cache_adapter(**cache) -> Adapter:
    head = np.eye(2, 4, dtype=np.float32)
    return Adapter(
        name="c", class_names=["x", "y"], spec="s", head=head, logit_scale=10.0, mode="cache", cache_alpha=1.0, **cache
    )


def test_an_adapter_cache_needs_both_keys_and_values():
    # A cache with keys but no values was accepted and then failed inside numpy's matmul on the first classify.
    keys = np.eye(3, 4, dtype=np.float32)
    with pytest.raises(ClipAppError, match="both its keys and its values"):
        _cache_adapter(cache_keys=keys)
    with pytest.raises(ClipAppError, match="both its keys and its values"):
        _cache_adapter(cache_values=np.eye(3, 2, dtype=np.float32))
    adapter = _cache_adapter(cache_keys=keys, cache_values=np.eye(3, 2, dtype=np.float32), cache_beta=1.0)
    logits = adapter.logits_from_features(np.eye(1, 4, dtype=np.float32))
    # feature = key 0 = class x's head row: the head gives x 10, the cache adds exp(0) = 1 to x
    np.testing.assert_allclose(logits, [[11.0, np.exp(-1.0)]], rtol=1e-5)
