"""Old (pre-0.2) import paths of the names the support/index/viz refactor moved still resolve, with a warning."""

from __future__ import annotations

import importlib

import pytest


@pytest.mark.parametrize(
    "old, name, new",
    [
        ("clipapp.distributed", "sync_folder_ray", "clipapp.index.distributed.run"),
        ("clipapp.distributed", "ray_session", "clipapp.index.distributed.session"),
        ("clipapp.distributed", "cluster_plan", "clipapp.index.distributed.plan"),
        ("clipapp.distributed", "EmbedActor", "clipapp.index.distributed.actor"),
        ("clipapp.distributed", "RayEncoder", "clipapp.index.distributed.encoder"),
        ("clipapp.distributed", "SHARD_FORMAT", "clipapp.index.distributed.shards"),
        ("clipapp.distributed", "MAX_CPUS_PER_ACTOR", "clipapp.index.distributed.plan"),
        ("clipapp.sessions", "parse_duration", "clipapp.units"),
        ("clipapp.sessions", "describe_duration", "clipapp.units"),
        ("clipapp.viz", "thumbnail_rgba", "clipapp.viz.common"),
        ("clipapp.index.progress", "TqdmProgress", "clipapp.progress"),
        ("clipapp.viz", "shorten", "clipapp.viz.common"),
        ("clipapp.viz", "similarity_heatmap", "clipapp.viz.figures"),
    ],
)
def test_old_path_resolves_to_the_new_name(old, name, new):
    with pytest.warns(DeprecationWarning, match="moved to"):
        found = getattr(importlib.import_module(old), name)
    assert found is getattr(importlib.import_module(new), name)
