"""Converts an index of format 1 (manifest.json + vectors/ids/meta/faiss generation files) to the SQLite store,
once, without re-encoding: the vectors, ids, records and settings are copied, and the old faiss file becomes the
search cache, so the converted index searches exactly as before.

Crash-safe: everything is written under INDEX/.migrating/, then moved into the folder with index.sqlite last
(that rename is the commit); only then are the old files deleted. A conversion killed before the rename is
redone from the untouched old files on the next open; one killed after it only leaves old files to delete.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
from pathlib import Path

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.index.store import DB_NAME, VECTORS_NAME, Store
from clipapp.index.structure import CACHE_META, IndexSettings, IndexStructure
from clipapp.storage import fsync_dir

log = logging.getLogger(__name__)

OLD_FORMAT_NAME = "clipapp-image-index"
OLD_MANIFEST = "manifest.json"
_OLD_DATA_FILE = re.compile(r"^(vectors|ids|meta|faiss)-(\d+)\.(npy|json|index)$|^\..*\.tmp$")
WORK_DIR = ".migrating"


def read_old_manifest(folder: Path) -> dict:
    path = folder / OLD_MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ClipAppError(f"The index manifest {path} cannot be read ({exc}). Rebuild the index.") from exc
    if manifest.get("format") != OLD_FORMAT_NAME or manifest.get("format_version") != 1:
        raise ClipAppError(f"{path} is not a clipapp image index manifest of format 1.")
    return manifest


def migrate_if_needed(folder: Path) -> bool:
    """Convert the old index in `folder` if it has one and no database yet; True if it converted now."""
    from clipapp.index.image_index import folder_lock

    folder = Path(folder)
    if not (folder / OLD_MANIFEST).exists():
        return False
    with folder_lock(folder):  # two processes opening the same old index convert it once
        if (folder / DB_NAME).exists():
            _remove_old_files(folder)  # a conversion killed after its commit
            return False
        _convert(folder, read_old_manifest(folder))
        _remove_old_files(folder)
    return True


def _convert(folder: Path, manifest: dict) -> None:
    files, count = manifest["files"], manifest["count"]
    vectors = np.load(folder / files["vectors"], mmap_mode="r", allow_pickle=False)
    ids = np.load(folder / files["ids"], allow_pickle=False).astype(np.int64)
    meta = json.loads((folder / files["meta"]).read_text(encoding="utf-8"))
    dim = int(manifest["embed_dim"])
    if vectors.shape != (count, dim) or ids.shape != (count,):
        raise ClipAppError(
            f"The old index at {folder} is damaged (vectors {vectors.shape}, {len(ids)} ids for "
            f"{count}). Rebuild it: delete the folder and index the images again."
        )
    work = folder / WORK_DIR
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    settings = IndexSettings(**manifest.get("settings", {}))
    store = Store(
        work,
        create={
            "model_spec": manifest["model_spec"],
            "embed_dim": dim,
            "settings": json.dumps(vars(settings), sort_keys=True),
            "migrated_from": 1,
        },
    )
    records = meta["items"]
    sha_of: dict[int, str] = {}
    added_of: dict[int, float] = {}
    for record in records:
        sha_of.setdefault(record["id"], record["sha256"])
        added_of[record["id"]] = min(added_of.get(record["id"], record["added_at"]), record["added_at"])
    store.begin()
    store.put_contents_at(ids, [sha_of[i] for i in ids.tolist()], [added_of[i] for i in ids.tolist()], vectors)
    store.put_paths(
        (r["path"], r["id"], r["size"], r["mtime"], r["added_at"], r.get("source", "file"), None) for r in records
    )
    store.set_meta("next_id", int(meta["next_id"]))
    store.commit()
    store.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    store.close()
    # The old faiss file covers exactly these ids: it becomes the search cache (removal log empty: seq 0).
    cache_name = f"faiss-{int(meta['next_id'])}-0.index"
    shutil.copyfile(folder / files["faiss"], work / cache_name)
    structure = IndexStructure(**manifest["index"])
    (work / CACHE_META).write_text(
        json.dumps(
            {
                "file": cache_name,
                "next_id": int(meta["next_id"]),
                "removal_seq": 0,
                "ntotal": count,
                "structure": vars(structure),
            },
            indent=1,
        )
    )
    for name in (VECTORS_NAME, cache_name, CACHE_META):
        with open(work / name, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(work / name, folder / name)
    for suffix in ("-wal", "-shm"):
        (work / (DB_NAME + suffix)).unlink(missing_ok=True)
    with open(work / DB_NAME, "rb") as handle:
        os.fsync(handle.fileno())
    os.replace(work / DB_NAME, folder / DB_NAME)  # the commit point
    fsync_dir(folder)
    log.info("converted the index at %s to format 2 (%d vectors, %d paths)", folder, count, len(records))


def _remove_old_files(folder: Path) -> None:
    shutil.rmtree(folder / WORK_DIR, ignore_errors=True)
    for entry in os.scandir(folder):
        if _OLD_DATA_FILE.match(entry.name):
            os.unlink(entry.path)
    (folder / OLD_MANIFEST).unlink(missing_ok=True)
