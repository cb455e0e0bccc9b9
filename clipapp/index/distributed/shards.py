"""Result shard files (.npz): what a Ray run has embedded so far, written by the driver, so an interrupted run resumes
from them."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np

from clipapp.storage import atomic_path

log = logging.getLogger(__name__)

SHARD_DIR_NAME = ".ray-shards"  # inside the index folder (hidden: never listed as images or index data)
SHARD_FORMAT = 1


def write_shard(
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


def read_shards(
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
