"""Distributed indexing on Ray: the embedding of new and changed images runs as Ray Data `map_batches` over actors
that each hold the model; the results come back as shards and are merged into the index in this process.

Core module: no Gradio. Ray is imported lazily (only when there is something to embed), so `import
clipapp.index.distributed` costs nothing and a missing Ray is a clear `ClipAppError` rather than an ImportError.

How it fits together
--------------------
`sync_folder_ray` is `clipapp.index.sync_folder` with a different encoder: the single-process logic decides what
needs embedding (size/mtime, then content hash; copies become aliases; deleted files are dropped) and applies the
results (add_items, checkpoint saves, the final atomic `index.save()`). Only `encode_image_files` of the files to
embed is replaced by `RayEncoder`, so both paths index exactly the same way and cannot drift apart.

`RayEncoder.encode_image_files(paths)`:
  1. reuses vectors from shards of an interrupted earlier run (same model, same path, same size and mtime);
  2. sends the rest to Ray: `ray.data.from_items([{"path": p}]).map_batches(EmbedActor, ...)`; each actor loads
     `ClipService.load(spec, device="auto", precision=...)` once (one GPU per actor where the cluster has GPUs);
  3. streams the result blocks back (`iter_batches`); each block is written as a shard (.npz) by this process,
     so `shard_dir` need not be visible to the workers, and then handed to sync_folder, which merges it into the
     index (its periodic checkpoint saves keep the work of a long run if the driver dies).
Shards are deleted once everything is merged and saved; after a failure they stay and the next run resumes from
them (results are reused for files whose path, size and mtime are unchanged, the same trust rule sync_folder uses).
Images that failed to decode are kept in `shard-skipped.npz`, so an unchanged broken file does not start Ray again.

What the workers need (a real cluster)
--------------------------------------
* the same Python packages (requirements.txt) and clipapp itself: the folder that holds the `clipapp` package
  is put on the workers' PYTHONPATH, so a checkout at the same path on every node works;
* the images at the same paths as on this machine (a shared mount): rows carry paths, not bytes;
* the model: for `NAME:/path/to/weights` that file must exist at that path on every worker node; pretrained tags
  and `hf-hub:` need the weights in each node's cache (or network). $CLIPAPP_MODEL_CONFIGS, $CLIPAPP_OFFLINE,
  $HF_HUB_OFFLINE are passed to the workers through `runtime_env`.
A worker that cannot load the model, or cannot see a file this machine sees, stops the run with a ClipAppError
that names the node, instead of quietly skipping every image.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import socket
import tempfile
import time
import uuid
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.index import ImageIndex, ProgressFn, SyncReport, sync_folder
from clipapp.storage import atomic_path

log = logging.getLogger(__name__)

RAY_INSTALL_HINT = "pip install 'clipapp[ray]'"  # the extra that brings ray[data] and pyarrow
DEFAULT_OBJECT_STORE_MB = 200  # the rows are paths and 32..1024 floats: a small store starts faster
SHARD_DIR_NAME = ".ray-shards"  # inside the index folder (hidden: never listed as images or index data)
SHARD_FORMAT = 1
# Passed to the workers: they decide which model configs exist, whether to go online and which images are too big.
FORWARDED_ENV = ("CLIPAPP_MODEL_CONFIGS", "CLIPAPP_OFFLINE", "HF_HUB_OFFLINE")  # workers keep the default image limits
MAX_CPUS_PER_ACTOR = 8  # beyond this, torch's CPU scaling on one image batch flattens out

# Row status returned by EmbedActor.
OK, BAD_IMAGE, MISSING, FATAL = "ok", "error", "missing", "fatal"
DISAPPEARED = "cannot read: the file disappeared"


def _import_ray():
    try:
        import ray
        import ray.data  # noqa: F401 - the [data] extra (pyarrow, pandas) must be there too
    except ImportError as exc:
        raise ClipAppError(f"Distributed indexing needs Ray Data: {RAY_INSTALL_HINT} (error: {exc}).") from exc
    return ray


# ---------------------------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------------------------
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
    ray = _import_ray()
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


def cluster_plan(ray: Any, *, num_actors: Optional[int], precision: str) -> dict:
    """How many actors and what each one asks for: one GPU per actor where the cluster has GPUs, else CPUs.

    CPU actors get an equal share of the CPUs but never more than the smallest node has, so every actor fits on
    any node (a fixed-size actor pool with an unschedulable actor would wait forever).
    """
    if num_actors is not None and (not isinstance(num_actors, int) or num_actors < 1):
        raise ClipAppError(f"num_actors must be a positive whole number, not {num_actors!r}.")
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpus = int(sum(n.get("GPU", 0) for n in nodes))
    if gpus:
        if precision == "int8":
            raise ClipAppError("int8 runs on the CPU only, and this cluster's actors use GPUs: use fp16 or fp32.")
        actors = num_actors or gpus
        if actors > gpus:
            raise ClipAppError(f"{actors} actors asked for, but the cluster has {gpus} GPU(s): one actor per GPU.")
        per_gpu = min(int(n.get("CPU", 0) // n["GPU"]) for n in nodes if n.get("GPU"))
        return {
            "num_actors": actors,
            "num_gpus": 1,
            "num_cpus": max(1, min(per_gpu, MAX_CPUS_PER_ACTOR)),
            "device": "cuda",
        }
    if precision == "fp16":
        raise ClipAppError("fp16 needs a GPU and this Ray cluster has none: use fp32 (or bf16, int8) on CPUs.")
    cpu_nodes = [int(n.get("CPU", 0)) for n in nodes if n.get("CPU", 0) >= 1]
    if not cpu_nodes:
        raise ClipAppError("The Ray cluster has no CPUs or GPUs available to run the model on.")
    total = sum(cpu_nodes)
    actors = num_actors or max(1, total // 4)  # ~4 threads per model copy: fewer copies in memory, good scaling
    per_actor = max(1, min(total // actors, min(cpu_nodes), MAX_CPUS_PER_ACTOR))
    return {"num_actors": actors, "num_gpus": 0, "num_cpus": per_actor, "device": "cpu"}


def _worker_env() -> dict[str, str]:
    env = {name: os.environ[name] for name in FORWARDED_ENV if name in os.environ}
    # Workers import clipapp from the same checkout path (a local cluster's workers would not find it otherwise,
    # e.g. under pytest's `pythonpath = .`); ${PYTHONPATH} keeps what the node already has.
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + os.pathsep + "${PYTHONPATH}"
    return env


# ---------------------------------------------------------------------------------------------------------------
# The actor
# ---------------------------------------------------------------------------------------------------------------
class EmbedActor:
    """Ray Data callable class: loads the model once, then embeds batches of {"path": [...]} rows.

    Returns per row: path, vector (float32, zeros unless ok), status (ok / error / missing / fatal), error text and
    node. A model that cannot be loaded is reported in-band as `fatal` rows rather than by failing __init__, so
    the driver can name the cause and node instead of Ray retrying the actor.
    """

    def __init__(
        self,
        *,
        spec: str,
        dim: int,
        precision: str = "fp32",
        device: str = "auto",
        num_cpus: int = 1,
        batch_size: int = 32,
    ):
        import torch

        torch.set_num_threads(max(1, int(num_cpus)))  # this actor's share of the node, no oversubscription
        self.dim = int(dim)
        self.batch_size = int(batch_size)
        self.node = socket.gethostname()
        self.service = None
        self.error: Optional[str] = None
        try:
            from clipapp.model.service import ClipService

            # No fallback to the demo model: every vector of an index must come from the same model.
            # No micro-batcher: a bulk job has no concurrent small requests to merge.
            service = ClipService.load(
                spec,
                device=device,
                precision=precision,
                allow_fallback=False,
                micro_batch_window_s=0,
                decode_workers=max(1, int(num_cpus)),
            )
            if service.spec != spec or service.embed_dim != self.dim:
                raise ClipAppError(f"loaded {service.spec} ({service.embed_dim}-d), expected {spec} ({self.dim}-d)")
            self.service = service
        except Exception as exc:  # noqa: BLE001 - reported to the driver, which raises a ClipAppError
            self.error = f"cannot load model {spec}: {exc if isinstance(exc, ClipAppError) else repr(exc)}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        vectors = np.zeros((len(paths), self.dim), dtype=np.float32)
        status = [FATAL] * len(paths)
        errors = [self.error or ""] * len(paths)
        if self.service is not None:
            row_of = {p: i for i, p in enumerate(paths)}
            present = []
            for i, path in enumerate(paths):
                if os.path.exists(path):
                    present.append(path)
                else:
                    status[i], errors[i] = MISSING, "no such file on this node"
            for path, vector, error in self.service.encode_image_files(present, batch_size=self.batch_size):
                i = row_of[path]
                if vector is None:
                    status[i], errors[i] = BAD_IMAGE, error or "could not be encoded"
                else:
                    vectors[i], status[i], errors[i] = vector, OK, ""
        return {
            "path": np.array(paths, dtype=object),
            "vector": vectors,
            "status": np.array(status, dtype=object),
            "error": np.array(errors, dtype=object),
            "node": np.array([self.node] * len(paths), dtype=object),
        }


# ---------------------------------------------------------------------------------------------------------------
# Shards
# ---------------------------------------------------------------------------------------------------------------
def _write_shard(
    path: Path,
    *,
    header: dict,
    paths: list[str],
    stats: list[tuple[int, float]],
    vectors: np.ndarray,
    errors: list[str],
) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.savez(
                handle,
                format=np.int64(SHARD_FORMAT),
                spec=np.str_(header["spec"]),
                dim=np.int64(header["dim"]),
                precision=np.str_(header["precision"]),
                path=np.array(paths, dtype=np.str_),
                size=np.array([s for s, _ in stats], dtype=np.int64),
                mtime=np.array([m for _, m in stats], dtype=np.float64),
                vector=np.asarray(vectors, dtype=np.float32),
                error=np.array(errors, dtype=np.str_),
            )


def _read_shards(
    folder: Path, header: dict
) -> tuple[dict[str, tuple[int, float, Optional[np.ndarray], str]], list[Path]]:
    """Results in earlier shards of the same model and precision: path -> (size, mtime, vector or None, error),
    and those shard files. Shards of another model or precision are left alone (another index may own them)."""
    found: dict[str, tuple[int, float, Optional[np.ndarray], str]] = {}
    used = []
    for file in sorted(folder.glob("shard-*.npz")) if folder.is_dir() else []:
        try:
            with np.load(file, allow_pickle=False) as data:
                if (
                    int(data["format"]) != SHARD_FORMAT
                    or str(data["spec"]) != header["spec"]
                    or int(data["dim"]) != header["dim"]
                    or str(data["precision"]) != header["precision"]
                ):
                    continue
                for path, size, mtime, vector, error in zip(
                    data["path"], data["size"], data["mtime"], data["vector"], data["error"], strict=True
                ):
                    found[str(path)] = (int(size), float(mtime), None if error else vector.copy(), str(error))
            used.append(file)
        except (OSError, ValueError, KeyError) as exc:  # a damaged shard only costs its images a re-embedding
            log.warning("ignoring unreadable shard %s: %s", file, exc)
    return found, used


# ---------------------------------------------------------------------------------------------------------------
# The encoder that sync_folder drives
# ---------------------------------------------------------------------------------------------------------------
@dataclasses.dataclass
class RayStats:
    """What one Ray indexing run did; `sync_folder_ray(stats=...)` receives it as a dict."""

    reused: int = 0  # results taken from an earlier run's shards
    embedded: int = 0  # vectors computed on Ray
    ray_seconds: float = 0.0
    startup_seconds: float = 0.0  # connecting to (or starting) Ray
    plan: Optional[dict] = None  # cluster_plan's choice: actors, CPUs and GPUs each, device


class RayEncoder:
    """Duck-typed encoder for `clipapp.index.sync_folder` whose `encode_image_files` runs on a Ray cluster.

    Only `spec`, `embed_dim` and `encode_image_files` are used by sync_folder; text encoding is not offered.
    Results are yielded in the order they come back from the cluster, not in the order asked for (sync_folder
    matches them by path).
    """

    def __init__(
        self,
        *,
        spec: str,
        dim: int,
        num_actors: Optional[int],
        precision: str,
        shard_dir: Path,
        session: "_LazySession",
    ):
        self.spec, self.embed_dim = spec, int(dim)
        self.num_actors, self.precision = num_actors, precision
        self.shard_dir = shard_dir
        self._session = session
        self._header = {"spec": spec, "dim": self.embed_dim, "precision": precision}
        self.shard_files: list[Path] = []  # read or written in this run; removed after a successful save
        self.bad_images: dict[str, tuple[tuple[int, float], str]] = {}  # path -> ((size, mtime), error)
        self.stats = RayStats()

    def encode_image_files(
        self, paths: list[str], *, batch_size: int = 32
    ) -> Iterator[tuple[str, Optional[np.ndarray], Optional[str]]]:
        paths = [str(p) for p in paths]
        if not paths:
            return
        stat_of: dict[str, tuple[int, float]] = {}
        for path in paths:
            try:
                st = os.stat(path)
                stat_of[path] = (st.st_size, st.st_mtime)
            except OSError as exc:
                yield path, None, f"cannot read: {exc.strerror or exc}"

        # 1. Results an interrupted earlier run already has in its shards.
        previous, files = _read_shards(self.shard_dir, self._header)
        self.shard_files.extend(files)
        todo = []
        for path, stat in stat_of.items():
            hit = previous.get(path)
            if hit is not None and (hit[0], hit[1]) == stat:
                self.stats.reused += 1
                if hit[2] is None:
                    self.bad_images[path] = (stat, hit[3])
                yield path, hit[2], hit[3] or None
            else:
                todo.append(path)
        if not todo:
            return

        # 2. The rest on Ray.
        ray = self._session.ray()
        started = time.perf_counter()
        plan = cluster_plan(ray, num_actors=self.num_actors, precision=self.precision)
        plan["num_actors"] = min(plan["num_actors"], max(1, -(-len(todo) // batch_size)))  # no idle model copies
        self.stats.plan = plan
        log.info("embedding %d images on Ray: %s", len(todo), plan)
        context = ray.data.DataContext.get_current()
        saved_bars = context.enable_progress_bars
        context.enable_progress_bars = False  # sync_folder reports progress itself; no bars on the CLI's stderr
        dataset = ray.data.from_items([{"path": p} for p in todo]).map_batches(
            EmbedActor,
            fn_constructor_kwargs={
                "spec": self.spec,
                "dim": self.embed_dim,
                "precision": self.precision,
                "device": plan["device"],
                "num_cpus": plan["num_cpus"],
                "batch_size": batch_size,
            },
            # compute= rather than the deprecated concurrency=: a fixed pool of model copies.
            compute=ray.data.ActorPoolStrategy(size=plan["num_actors"]),
            batch_size=batch_size,
            batch_format="numpy",
            num_gpus=plan["num_gpus"],
            num_cpus=plan["num_cpus"],
            runtime_env={"env_vars": _worker_env()},
        )
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        returned: set[str] = set()
        try:
            for number, block in enumerate(dataset.iter_batches(batch_size=None, batch_format="numpy")):
                results = self._check_block(block, stat_of)
                # 3. Shard first, then merge: a shard on disk is work the next run need not redo. A file that
                # vanished meanwhile is no result worth keeping.
                kept = [r for r in results if r[2] != DISAPPEARED]
                if kept:
                    shard = self.shard_dir / f"shard-{run_id}-{number:06d}.npz"
                    _write_shard(
                        shard,
                        header=self._header,
                        paths=[p for p, _, _ in kept],
                        stats=[stat_of[p] for p, _, _ in kept],
                        vectors=np.stack(
                            [v if v is not None else np.zeros(self.embed_dim, np.float32) for _, v, _ in kept]
                        ),
                        errors=[e or "" for _, _, e in kept],
                    )
                    self.shard_files.append(shard)
                for path, vector, error in results:
                    returned.add(path)
                    self.stats.embedded += int(vector is not None)
                    yield path, vector, error
        finally:
            context.enable_progress_bars = saved_bars
            self.stats.ray_seconds += time.perf_counter() - started
        for path in todo:
            if path not in returned:  # not expected: Ray Data returns every row or raises
                yield path, None, "not returned by the Ray job"

    def _check_block(
        self, block: dict[str, np.ndarray], stat_of: dict[str, tuple[int, float]]
    ) -> list[tuple[str, Optional[np.ndarray], Optional[str]]]:
        results: list[tuple[str, Optional[np.ndarray], Optional[str]]] = []
        for path, vector, status, error, node in zip(
            block["path"], block["vector"], block["status"], block["error"], block["node"], strict=True
        ):
            path, status, error = str(path), str(status), str(error)
            if status == FATAL:
                raise ClipAppError(
                    f"Ray worker on {node}: {error}. The model must be loadable on every node "
                    "(same weights path or a filled cache, the same packages)."
                )
            if status == MISSING:
                if os.path.exists(path):
                    raise ClipAppError(
                        f"Ray worker on {node} cannot see {path}, which exists here: the images must "
                        "be at the same path on every node (a shared folder)."
                    )
                results.append((path, None, DISAPPEARED))
            elif status == OK:
                results.append((path, np.asarray(vector, dtype=np.float32), None))
            else:
                results.append((path, None, error or "could not be encoded"))
                self.bad_images[path] = (stat_of[path], error or "could not be encoded")
        return results

    def finish(self) -> None:
        """After a successful save: drop the merged shards, keep one shard of the images that failed to decode, so
        an unchanged broken file (same size and mtime) does not start Ray again on every run."""
        for file in self.shard_files:
            file.unlink(missing_ok=True)
        if self.bad_images:
            paths = list(self.bad_images)
            _write_shard(
                self.shard_dir / "shard-skipped.npz",
                header=self._header,
                paths=paths,
                stats=[self.bad_images[p][0] for p in paths],
                vectors=np.zeros((len(paths), self.embed_dim), np.float32),
                errors=[self.bad_images[p][1] for p in paths],
            )
        elif self.shard_dir.is_dir() and not any(self.shard_dir.iterdir()):
            self.shard_dir.rmdir()


class _LazySession:
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


# ---------------------------------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------------------------------
def sync_folder_ray(
    index: ImageIndex,
    folder: str | os.PathLike,
    *,
    address: str = "auto",
    spec: Optional[str] = None,
    num_actors: Optional[int] = None,
    batch_size: int = 32,
    shard_dir: Optional[str | os.PathLike] = None,
    precision: str = "fp32",
    progress: Optional[ProgressFn] = None,
    num_cpus: Optional[int] = None,
    stats: Optional[dict] = None,
) -> SyncReport:
    """`clipapp.index.sync_folder` with the embedding on a Ray cluster; returns the same `SyncReport`.

    address: "auto" (a running cluster, else a private local one with `num_cpus` CPUs), "local", "HOST:6379" or
    "ray://HOST:10001"; see `ray_session`. Ray is only started if some file needs embedding.
    spec: the model; default the index's own. It must be resolvable on every worker: a local weights file
    (`NAME:/path/to/file`) must exist at that same path on every node, pretrained tags and hf-hub models must be
    in each node's cache (or downloadable); extra model configs come from $CLIPAPP_MODEL_CONFIGS, which is passed
    to the workers. The images, too, must be at the same paths on the workers as here.
    num_actors: model copies; default one per GPU, or on a CPU-only cluster one per 4 CPUs.
    precision: "fp32" (default; on CPUs, vectors match the single-process path to ~1e-6), "fp16"/"bf16" on GPUs,
    "int8" on CPUs. A cluster with GPUs puts every actor on one GPU; without GPUs the actors share the CPUs.
    shard_dir: where result shards go (default INDEX/.ray-shards, or a temporary folder for an in-memory index);
    written by this process, so it need not be shared with the workers. After a successful run only
    `shard-skipped.npz` stays: images that failed to decode, which are not retried while their size and mtime
    stay the same (otherwise one broken file would start Ray on every run).
    num_cpus: CPUs of a local Ray started here (default: all this process may use).
    stats: a dict to fill with what happened: reused (results taken from shards), embedded (on Ray), plan
    (actors, CPUs/GPUs each), startup_seconds (Ray connection or start), ray_seconds.
    """
    spec = (spec or index.spec).strip()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ClipAppError(f"batch_size must be a positive whole number, not {batch_size!r}.")
    from clipapp.model.device import PRECISIONS

    precision = (precision or "fp32").lower()
    if precision not in PRECISIONS or precision == "auto":
        # "auto" would let each node pick (int8 on CPUs, fp16 on GPUs): one index would mix precisions.
        raise ClipAppError(f"precision must be one of fp32, fp16, bf16, int8 for a Ray run, not {precision!r}.")
    _import_ray()  # fail fast, before any hashing, if Ray is not installed
    temporary = None
    if shard_dir is not None:
        shards = Path(shard_dir).expanduser()
    elif index.path is not None:
        shards = index.path / SHARD_DIR_NAME
    else:
        temporary = tempfile.mkdtemp(prefix="clipapp-shards-")
        shards = Path(temporary)
    session = _LazySession(address, num_cpus)
    encoder = RayEncoder(
        spec=spec, dim=index.dim, num_actors=num_actors, precision=precision, shard_dir=shards, session=session
    )
    try:
        report = sync_folder(index, folder, encoder, progress=progress, batch_size=batch_size)
        encoder.finish()  # everything in the shards is now in the saved index
    finally:
        session.close()
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        encoder.stats.startup_seconds = session.startup_seconds
        if stats is not None:
            stats.update(dataclasses.asdict(encoder.stats))
    log.info("Ray indexing: %s", encoder.stats)
    return report


def index_folder_ray(
    folder: str | os.PathLike,
    index_path: str | os.PathLike,
    *,
    address: str = "auto",
    spec: Optional[str] = None,
    **options: Any,
) -> SyncReport:
    """`python -m clipapp index DIR --index PATH --ray ADDRESS`: open (or create) the index and sync it on Ray.

    spec: default the existing index's model, else $CLIPAPP_MODEL / the default spec. Other keyword options go to
    `sync_folder_ray`. Returns its report.
    """
    from clipapp.index import stored_model_spec
    from clipapp.model.loading import model_embed_dim
    from clipapp.model.spec import default_spec

    folder_path = Path(index_path)
    if spec is None:
        spec = stored_model_spec(folder_path)
    spec = (spec or default_spec()).strip()
    index = ImageIndex.open_or_create(folder_path, spec, model_embed_dim(spec))
    return sync_folder_ray(index, folder, address=address, spec=spec, **options)
