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

Modules: session.py (importing and connecting Ray, the lazy session), plan.py (actors and resources per cluster,
the workers' environment), actor.py (EmbedActor, run on the workers), shards.py (result shard files), encoder.py
(RayEncoder, the encoder sync_folder drives), run.py (sync_folder_ray, index_folder_ray).
"""

from clipapp.index.distributed.actor import EmbedActor
from clipapp.index.distributed.encoder import RayEncoder, RayStats
from clipapp.index.distributed.plan import cluster_plan
from clipapp.index.distributed.run import index_folder_ray, sync_folder_ray
from clipapp.index.distributed.session import LazySession, import_ray, ray_session
from clipapp.index.distributed.shards import SHARD_DIR_NAME

__all__ = [
    "SHARD_DIR_NAME",
    "EmbedActor",
    "LazySession",
    "RayEncoder",
    "RayStats",
    "cluster_plan",
    "import_ray",
    "index_folder_ray",
    "ray_session",
    "sync_folder_ray",
]
