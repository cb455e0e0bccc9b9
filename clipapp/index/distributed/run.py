"""Entry points: `sync_folder_ray` (sync_folder with the Ray encoder), `index_folder_ray` (`index --ray`)."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Optional

from clipapp.errors import ClipAppError
from clipapp.index import ImageIndex, ProgressFn, SyncReport, sync_folder
from clipapp.index.distributed.encoder import RayEncoder
from clipapp.index.distributed.session import LazySession, import_ray
from clipapp.index.distributed.shards import SHARD_DIR_NAME

log = logging.getLogger(__name__)


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
    import_ray()  # fail fast, before any hashing, if Ray is not installed
    temporary = None
    if shard_dir is not None:
        shards = Path(shard_dir).expanduser()
    elif index.path is not None:
        shards = index.path / SHARD_DIR_NAME
    else:
        temporary = tempfile.mkdtemp(prefix="clipapp-shards-")
        shards = Path(temporary)
    session = LazySession(address, num_cpus)
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
