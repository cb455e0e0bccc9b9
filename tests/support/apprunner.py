"""Start the real app (`python app.py ...`) in a subprocess on a free loopback port: only for tests whose point is the
real process (its flags, start-up, signals); every other server test uses the in-process `server` fixture."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from typing import Iterator, Sequence

from tests.support.paths import REPO_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, *, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"app exited with {proc.returncode}: {proc.stdout.read() if proc.stdout else ''}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError as exc:
            if getattr(exc, "code", None) in (401, 403):  # up, behind a login
                return
            time.sleep(0.3)
    raise TimeoutError(f"app not answering at {url}")


@contextmanager
def running_app(args: Sequence[str], *, env: dict | None = None) -> Iterator[tuple[subprocess.Popen, str]]:
    port = free_port()
    full_env = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        CLIPAPP_MODEL_CONFIGS=str(REPO_DIR / "tests" / "data"),
        PYTHONPATH=str(REPO_DIR),
        **(env or {}),
    )
    proc = subprocess.Popen(
        [sys.executable, str(REPO_DIR / "app.py"), "--port", str(port), *args],
        cwd=REPO_DIR,
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_until_up(url, proc)
        yield proc, url
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
