"""The device rules of clipapp/model/device.py that need no GPU."""

from __future__ import annotations

import pytest

from clipapp.model.device import cluster_precision


@pytest.mark.parametrize(("given", "used"), [("auto", "fp32"), ("AUTO", "fp32"), ("", "fp32"), ("fp16", "fp16")])
def test_a_ray_cluster_runs_auto_at_fp32_and_an_explicit_precision_as_given(given, used):
    assert cluster_precision(given) == used
