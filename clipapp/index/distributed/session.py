"""Connecting to Ray: importing it (a missing extra says what to install), `ray_session` for a block, and the lazy
session that connects only when something needs embedding."""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import AbstractContextManager, contextmanager
from typing import Any, Iterator, Optional

from clipapp.errors import ClipAppError
from clipapp.extras import import_extra

log = logging.getLogger(__name__)

DEFAULT_OBJECT_STORE_MB = 200  # the rows are paths and 32..1024 floats: a small store starts faster


def import_ray() -> Any:
    """The `ray` module, with Ray Data (its [data] extra: pyarrow, pandas) importable too; else a MissingExtraError
    naming `clipapp[ray]`."""
    feature = "Distributed indexing (Ray Data)"
    ray = import_extra("ray", extra="ray", feature=feature)
    import_extra("ray.data", extra="ray", feature=feature)
    return ray


@contextmanager
def ray_session(
    address: str = "auto", *, num_cpus: Optional[int] = None, object_store_mb: int = DEFAULT_OBJECT_STORE_MB
) -> Iterator[Any]:
    """Connect Ray for the duration of the block; yields the `ray` module.

    address: "auto" connects to a running cluster (RAY_ADDRESS, or one started with `ray start` on this machine)
    or else starts a private local one; "local" always starts a local one; anything else ("host:6379",
    "ray://host:10001") must be a reachable cluster. If Ray is already initialised in this process, that
    connection is used and left open (its owner shuts it down); otherwise what was started or connected here is
    shut down at the end (a connected cluster keeps running, only this driver leaves).
    A local Ray is started lean: no dashboard, workers' logs not forwarded, a small object store, and
    `num_cpus` (default: the CPUs this process may use).
    """
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    if not isinstance(address, str) or not address.strip():
        raise ClipAppError("--ray needs 'auto', 'local' or a cluster address such as HEAD:6379 or ray://HEAD:10001.")
    address = address.strip()
    target = _auto_address() if address == "auto" else address
    quiet = dict(log_to_driver=False, configure_logging=False)
    started = time.perf_counter()
    if target is None or target == "local":
        available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        ray.init(
            address="local",
            num_cpus=int(num_cpus or available or 1),
            include_dashboard=False,
            object_store_memory=int(object_store_mb) << 20,
            **quiet,
        )
    else:
        _check_reachable(target)
        try:
            ray.init(address=target, **quiet)
        except Exception as exc:  # noqa: BLE001 - ConnectionError, RuntimeError, grpc errors: all mean "not there"
            raise ClipAppError(
                f"Cannot connect to the Ray cluster at {target}: {type(exc).__name__}: {exc}. Is `ray start --head` "
                "running there, with the same Ray and Python versions? If the cluster uses token authentication "
                "(`ray start` turns it on by default since Ray 2.59), set RAY_AUTH_MODE=token here and give this "
                "machine the head's token (RAY_AUTH_TOKEN, or ~/.ray/auth_token; `ray get-auth-token` prints it)."
            ) from exc
    log.info(
        "Ray %s in %.1f s",
        "started" if target in (None, "local") else f"connected to {target}",
        time.perf_counter() - started,
    )
    try:
        yield ray
    finally:
        ray.shutdown()


def _auto_address() -> Optional[str]:
    """The cluster "auto" connects to: $RAY_ADDRESS, else the one last started with `ray start` on this machine if
    it still answers; None: start a local one. (ray.init("auto") would retry a stale address for minutes.)"""
    named = os.environ.get("RAY_ADDRESS", "").strip()
    if named:
        return named  # the user named it: unreachable is an error (checked by the caller), not a reason to go local
    try:
        from ray._private.services import find_bootstrap_address  # private: reads the file `ray start` writes

        found = find_bootstrap_address(None)
    except Exception:  # noqa: BLE001 - moved or renamed in another Ray version: just start a local one
        found = None
    if found and _unreachable(found) is None:
        return found
    if found:
        log.warning("The Ray cluster last started on this machine (%s) does not answer; starting a local one.", found)
    return None


def _unreachable(address: str, *, timeout_s: float = 5.0) -> Optional[str]:
    """Why HOST:PORT (or ray://HOST:PORT) cannot be reached, or None if a TCP connection opens."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    try:
        socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=timeout_s).close()
    except (OSError, ValueError) as exc:
        return getattr(exc, "strerror", None) or str(exc)
    return None


def _check_reachable(address: str) -> None:
    """Fail in seconds on a wrong or unreachable HOST:PORT: ray.init keeps retrying such an address for minutes."""
    host, sep, port = address.removeprefix("ray://").rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ClipAppError(f"Ray address {address!r} not understood: use auto, local, HOST:6379 or ray://HOST:10001.")
    problem = _unreachable(address)
    if problem is not None:
        raise ClipAppError(
            f"Cannot reach the Ray cluster at {address} ({problem}). Is `ray start --head` running "
            "there, and is the port open from this machine?"
        )


class LazySession:
    """Connects to Ray on first use, so a run with nothing to embed never pays Ray's start-up."""

    def __init__(self, address: str, num_cpus: Optional[int]):
        self.address, self.num_cpus = address, num_cpus
        self._context: AbstractContextManager[Any] | None = None
        self._ray: Any = None  # the ray module (untyped) once connected
        self.startup_seconds = 0.0

    def ray(self) -> Any:
        if self._ray is None:
            started = time.perf_counter()
            context = ray_session(self.address, num_cpus=self.num_cpus)
            self._ray = context.__enter__()
            self._context = context
            self.startup_seconds = time.perf_counter() - started
        return self._ray

    def close(self) -> None:
        if self._context is not None:
            context, self._context, self._ray = self._context, None, None
            context.__exit__(None, None, None)
