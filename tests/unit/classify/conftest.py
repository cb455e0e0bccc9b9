"""Fixtures of the classification tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def fashion_folder(tmp_path_factory) -> Path:
    """300 real Fashion-MNIST test images as PNG files, ROOT/<class>/<n>.png (nested: the walk is recursive)."""
    from tests.support.fashion import write_fashion_folder

    return write_fashion_folder(tmp_path_factory.mktemp("fashion"))
