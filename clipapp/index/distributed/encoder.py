"""RayEncoder: the encoder `sync_folder` drives, whose `encode_image_files` reuses shards and runs the rest on Ray."""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Generator, Iterator, Optional

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.index.distributed.actor import FATAL, MISSING, OK, EmbedActor
from clipapp.index.distributed.plan import cluster_plan, worker_env
from clipapp.index.distributed.session import LazySession
from clipapp.index.distributed.shards import read_shards, write_shard

log = logging.getLogger(__name__)

DISAPPEARED = "cannot read: the file disappeared"
Result = tuple[str, Optional[np.ndarray], Optional[str]]  # (path, vector or None, error or None)
Stats = dict[str, tuple[int, float]]  # path -> (size, mtime) when it was listed


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
        session: LazySession,
    ):
        self.spec, self.embed_dim = spec, int(dim)
        self.num_actors, self.precision = num_actors, precision
        self.shard_dir = shard_dir
        self._session = session
        self._header = {"spec": spec, "dim": self.embed_dim, "precision": precision}
        self.shard_files: list[Path] = []  # read or written in this run; removed after a successful save
        self.bad_images: dict[str, tuple[tuple[int, float], str]] = {}  # path -> ((size, mtime), error)
        self.stats = RayStats()

    def encode_image_files(self, paths: list[str], *, batch_size: int = 32) -> Iterator[Result]:
        """(path, vector, error) for every path: unreadable ones first, then what shards already hold, then Ray's."""
        paths = [str(p) for p in paths]
        if not paths:
            return
        stat_of: Stats = {}
        for path in paths:
            try:
                st = os.stat(path)
                stat_of[path] = (st.st_size, st.st_mtime)
            except OSError as exc:
                yield path, None, f"cannot read: {exc.strerror or exc}"
        # 1. Results an interrupted earlier run already has in its shards.
        todo = yield from self._reused(stat_of)
        if todo:
            # 2. The rest on Ray.
            yield from self._embed_on_ray(todo, stat_of, batch_size)

    def _reused(self, stat_of: Stats) -> Generator[Result, None, list[str]]:
        """Yields the results earlier runs' shards hold for these files as they are now; returns the other paths."""
        previous, files = read_shards(self.shard_dir, self._header)
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
        return todo

    def _embed_on_ray(self, todo: list[str], stat_of: Stats, batch_size: int) -> Iterator[Result]:
        """Embeds `todo` on the cluster, each block written to a shard before its results are yielded."""
        ray = self._session.ray()
        started = time.perf_counter()
        plan = cluster_plan(ray, num_actors=self.num_actors, precision=self.precision)
        plan["num_actors"] = min(plan["num_actors"], max(1, -(-len(todo) // batch_size)))  # no idle model copies
        self.stats.plan = plan
        log.info("embedding %d images on Ray: %s", len(todo), plan)
        context = ray.data.DataContext.get_current()
        saved_bars = context.enable_progress_bars
        context.enable_progress_bars = False  # sync_folder reports progress itself; no bars on the CLI's stderr
        dataset = self._dataset(ray, todo, plan, batch_size)
        run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        returned: set[str] = set()
        try:
            for number, block in enumerate(dataset.iter_batches(batch_size=None, batch_format="numpy")):
                results = self._check_block(block, stat_of)
                # 3. Shard first, then merge: a shard on disk is work the next run need not redo.
                self._write_shard(self.shard_dir / f"shard-{run_id}-{number:06d}.npz", results, stat_of)
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

    def _dataset(self, ray, todo: list[str], plan: dict, batch_size: int):
        """The Ray Data pipeline: the paths, embedded by a fixed pool of `EmbedActor`s as `plan` sizes them."""
        return ray.data.from_items([{"path": p} for p in todo]).map_batches(
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
            runtime_env={"env_vars": worker_env()},
        )

    def _write_shard(self, shard: Path, results: list[Result], stat_of: Stats) -> None:
        """One block's results on disk (a file that vanished meanwhile is no result worth keeping)."""
        kept = [r for r in results if r[2] != DISAPPEARED]
        if not kept:
            return
        write_shard(
            shard,
            header=self._header,
            paths=[p for p, _, _ in kept],
            stats=[stat_of[p] for p, _, _ in kept],
            vectors=np.stack([v if v is not None else np.zeros(self.embed_dim, np.float32) for _, v, _ in kept]),
            errors=[e or "" for _, _, e in kept],
        )
        self.shard_files.append(shard)

    def _check_block(self, block: dict[str, np.ndarray], stat_of: Stats) -> list[Result]:
        results: list[Result] = []
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
            write_shard(
                self.shard_dir / "shard-skipped.npz",
                header=self._header,
                paths=paths,
                stats=[self.bad_images[p][0] for p in paths],
                vectors=np.zeros((len(paths), self.embed_dim), np.float32),
                errors=[self.bad_images[p][1] for p in paths],
            )
        elif self.shard_dir.is_dir() and not any(self.shard_dir.iterdir()):
            self.shard_dir.rmdir()
