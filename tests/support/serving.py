"""The whole server (page, Gradio API, /v1 and /health on one FastAPI app) in this process, on a free port, so a
test can call it through the network and look inside it (the service's counters, the session store, the jobs)."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import uvicorn

from clipapp.app.ui import build_server
from clipapp.app.ui.common import AppContext
from tests.support.apprunner import free_port


@dataclass(frozen=True)
class Served:
    url: str
    ctx: AppContext


@contextmanager
def serving(ctx: AppContext, **server_options) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(build_server(ctx, **server_options), host="127.0.0.1", port=port, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
