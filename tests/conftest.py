"""Shared fixtures: tiny real open_clip models and real images. No network: the hub is switched off."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

from pathlib import Path

import open_clip
import pytest
import torch

from clipapp.model.loading import register_model_configs
from tests.support.paths import EXAMPLES_DIR, TESTS_DIR, TINY_MODEL

register_model_configs(TESTS_DIR / "data")


@pytest.fixture(scope="session")
def tiny_weights(tmp_path_factory) -> Path:
    """A random tiny open_clip model saved as safetensors, loadable through a `NAME:/file` spec."""
    from clipapp.model.loading import save_state_dict

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
def app_url(tiny_service, tmp_path_factory):
    """The real Gradio app, launched on a free loopback port with the tiny model, for gradio_client tests."""
    from clipapp.app.ui import build_app, launch_options
    from clipapp.app.ui.common import AppContext

    root = tmp_path_factory.mktemp("served")
    ctx = AppContext(service=tiny_service, state_dir=root / "state", allowed_roots=(EXAMPLES_DIR,))
    demo = build_app(ctx)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=None, quiet=True,
                            **launch_options(ctx))
    yield url
    demo.close()


@pytest.fixture
def client(app_url):
    from gradio_client import Client

    return Client(app_url, verbose=False)

