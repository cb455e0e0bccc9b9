"""Shared fixtures: tiny real open_clip models and real images. No network: the hub is switched off."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import open_clip
import pytest
import torch

from clipapp.model.spec import register_model_configs
from tests.support.paths import EXAMPLES_DIR, TESTS_DIR, TINY_MODEL

register_model_configs(TESTS_DIR / "data")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A random tiny open_clip model saved as safetensors, loadable through a `NAME:/file` spec."""
    from clipapp.model.checkpoint import save_state_dict

    torch.manual_seed(0)
    model = open_clip.create_model(TINY_MODEL)
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_state_dict(model.state_dict(), path)
    return path


@pytest.fixture(scope="session")
def tiny_spec(tiny_weights) -> str:
    return f"{TINY_MODEL}:{tiny_weights}"


@pytest.fixture(scope="session")
def tiny_service(tiny_spec):
    from clipapp.model.service import ClipService

    return ClipService.load(tiny_spec, device="cpu", precision="fp32")  # fp32: compared to open_clip at 1e-5


@pytest.fixture(scope="session")
def photos() -> list[Path]:
    """The CLIP notebook photos from scikit-image, committed under assets/examples/photos."""
    found = sorted((EXAMPLES_DIR / "photos").glob("*.jpg"))
    assert len(found) >= 4, "assets/examples/photos is missing its example images"
    return found


@pytest.fixture(scope="session")
def server(tiny_service, tmp_path_factory):
    """The production server (clipapp.app.ui.build_server: the page, the Gradio API, /v1 and /health on one
    FastAPI app) under uvicorn in this process, on a free loopback port, with the tiny model: `.url` for clients
    (gradio_client, HTTP, the browser), `.ctx` to look inside. One for the session; a test that needs its own
    context or server options uses tests.support.serving.serving directly."""
    from clipapp.app.ui.common import AppContext
    from tests.support.serving import Served, serving

    root = tmp_path_factory.mktemp("served")
    ctx = AppContext(service=tiny_service, state_dir=root / "state", allowed_roots=(EXAMPLES_DIR,))
    with serving(ctx) as url:
        yield Served(url, ctx)


@pytest.fixture(scope="session")
def app_url(server) -> str:
    return server.url


@pytest.fixture
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)


SERVER_FIXTURES = {"server", "app_url", "client"}


def pytest_collection_modifyitems(items):
    """Marks that follow from the fixtures a test uses (directly or through other fixtures): the session's server
    makes it `server`; a Ray cluster (`ray_cluster`, ~5 s to start, 5-10 s per Ray Data job) `ray` and `slow`. Tests
    that start a server or a process of their own carry their marks in their module."""
    for item in items:
        used = set(getattr(item, "fixturenames", ()))
        if used & SERVER_FIXTURES:
            item.add_marker(pytest.mark.server)
        if "ray_cluster" in used:
            item.add_marker(pytest.mark.ray)
            item.add_marker(pytest.mark.slow)
