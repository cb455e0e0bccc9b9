"""Interchange with other tools: export an index as an embedding folder, build or extend one from such a folder.

The layout is clip-retrieval's embedding folder (what `clip-retrieval inference` writes and `clip-retrieval index`
/ autofaiss read), one part per ROWS_PER_PART images, row i of a part's vectors = row i of its metadata:

    img_emb/img_emb_0.npy          float32 (rows, dim), L2-normalized (clip-retrieval writes float16: both are read)
    metadata/metadata_0.parquet    --format parquet: image_path, id, sha256, size, mtime, added_at, source,
                                   captured_at, aliases (list of other paths), tags (list of {label, prob})
    metadata/metadata_0.jsonl      --format npy: the same columns as JSON lines (numpy only, no pyarrow)
    clipapp.json                   {"model", "dim", "images", "parts", "format"}: lets an import refuse another model

One row per distinct image (its first path is image_path; copies are `aliases`), so the vectors are not repeated.
Export reads one SQLite snapshot (a read transaction) and the vector file of the same compaction epoch, so a sync
running meanwhile never mixes in; it writes in a temporary folder renamed to DEST at the end. Import encodes no
image: it checks the model (clipapp.json, where present) and the dimension, then adds the vectors in batches, one
commit each (a killed import resumes by running it again: known paths are replaced, known content becomes an
alias). Memory: one batch of rows (BATCH_ROWS x dim floats) either way.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.extras import import_extra
from clipapp.index.results import SyncReport
from clipapp.index.store import FileInfo, Store, _chunks
from clipapp.progress import ProgressFn
from clipapp.storage import fsync_dir

if TYPE_CHECKING:
    from clipapp.index.image_index import ImageIndex

EXPORT_FORMATS = ("parquet", "npy")
ROWS_PER_PART = 1_000_000  # clip-retrieval's default write batch: one part per million images
BATCH_ROWS = 65_536
INFO_NAME = "clipapp.json"
_PART = re.compile(r"img_emb_(\d+)\.npy$")
_ROW_SQL = "SELECT id, sha256, added_at FROM contents WHERE id > ? ORDER BY id LIMIT ?"


@dataclass(frozen=True)
class ExportReport:
    """What `export_index` wrote."""

    dest: str
    format: str
    images: int
    parts: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        """The JSON of `clipapp export --json`: {"dest", "format", "images", "parts", "bytes", "seconds"}."""
        return {
            "dest": self.dest,
            "format": self.format,
            "images": self.images,
            "parts": self.parts,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
        }


def _parquet(feature: str):
    return import_extra("pyarrow.parquet", extra="parquet", feature=feature)


# -- export ---------------------------------------------------------------------------------------------------------
def _metadata_rows(store: Store, rows: list[tuple[int, str, float]]) -> list[dict[str, Any]]:
    ids = [r[0] for r in rows]
    paths: dict[int, list[tuple]] = {}
    tags: dict[int, list[dict[str, Any]]] = {}
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for row in store.db.execute(
            f"SELECT content_id, path, size, mtime, source, captured_at FROM paths WHERE content_id IN ({marks}) "
            "ORDER BY seq",
            chunk,
        ):
            paths.setdefault(row[0], []).append(row[1:])
        for content_id, label, prob in store.db.execute(
            f"SELECT content_id, label, prob FROM tags WHERE content_id IN ({marks}) ORDER BY prob DESC, label", chunk
        ):
            tags.setdefault(content_id, []).append({"label": label, "prob": float(prob)})
    out = []
    for content_id, sha256, added_at in rows:
        (path, size, mtime, source, captured_at), *others = paths[content_id]
        out.append(
            {
                "image_path": path,
                "id": content_id,
                "sha256": sha256,
                "size": size,
                "mtime": mtime,
                "added_at": added_at,
                "source": source,
                "captured_at": captured_at,
                "aliases": [other[0] for other in others],
                "tags": tags.get(content_id, []),
            }
        )
    return out


class _PartWriter:
    """One part: the .npy written sequentially (header first: the row count is known) and its metadata file."""

    def __init__(self, work: Path, number: int, rows: int, dim: int, fmt: str):
        self.vectors = open(work / "img_emb" / f"img_emb_{number}.npy", "wb")
        header = {"descr": "<f4", "fortran_order": False, "shape": (rows, dim)}
        np.lib.format.write_array_header_1_0(self.vectors, header)
        suffix = "parquet" if fmt == "parquet" else "jsonl"
        self.fmt, self.meta_path = fmt, work / "metadata" / f"metadata_{number}.{suffix}"
        self.parquet_writer: Any = None
        self.jsonl = open(self.meta_path, "w", encoding="utf-8") if fmt == "npy" else None

    def write(self, vectors: np.ndarray, metadata: list[dict[str, Any]]) -> None:
        self.vectors.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
        if self.jsonl is not None:
            self.jsonl.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in metadata)
            return
        table = _table(metadata)
        if self.parquet_writer is None:
            pq = _parquet("clipapp export --format parquet")
            self.parquet_writer = pq.ParquetWriter(self.meta_path, table.schema)
        self.parquet_writer.write_table(table)

    def close(self) -> None:
        for handle in (self.vectors, self.jsonl):
            if handle is not None:
                handle.flush()
                os.fsync(handle.fileno())
                handle.close()
        if self.parquet_writer is not None:
            self.parquet_writer.close()
        elif self.fmt == "parquet":  # an empty part still gets its (empty) metadata file
            _parquet("clipapp export --format parquet").write_table(_table([]), self.meta_path)


_SCHEMA_FIELDS = (
    ("image_path", "string"),
    ("id", "int64"),
    ("sha256", "string"),
    ("size", "int64"),
    ("mtime", "float64"),
    ("added_at", "float64"),
    ("source", "string"),
    ("captured_at", "string"),
)


def _table(metadata: list[dict[str, Any]]):
    """A pyarrow table with a fixed schema (so every part and batch agree, even where a column is all null)."""
    pa = import_extra("pyarrow", extra="parquet", feature="clipapp export --format parquet")
    tag = pa.struct([("label", pa.string()), ("prob", pa.float64())])
    fields = [(name, getattr(pa, kind)()) for name, kind in _SCHEMA_FIELDS]
    schema = pa.schema([*fields, ("aliases", pa.list_(pa.string())), ("tags", pa.list_(tag))])
    return pa.Table.from_pylist(metadata, schema=schema)


def _begin_snapshot(store: Store) -> None:
    """A read transaction whose rows match the open vector file (retried if a compaction lands in between)."""
    for _ in range(5):
        store.db.execute("BEGIN")
        if store.read_vector_epoch() == store.vector_epoch:
            return
        store.db.execute("ROLLBACK")
        store.reopen_vectors()
    raise ClipAppError(f"The index at {store.folder} kept being compacted during the export; retry.")


def _export_parts(store: Store, work: Path, fmt: str, rows_per_part: int, progress: ProgressFn | None) -> int:
    total, after, part = store.content_count(), -1, 0
    written = 0
    while part == 0 or written < total:
        rows_here = min(rows_per_part, total - written)
        writer = _PartWriter(work, part, rows_here, store.dim, fmt)
        try:
            done = 0
            while done < rows_here:
                rows = store.db.execute(_ROW_SQL, (after, min(BATCH_ROWS, rows_here - done))).fetchall()
                ids = np.asarray([r[0] for r in rows], dtype=np.int64)
                writer.write(store.vectors_for(ids), _metadata_rows(store, rows))
                done, after = done + len(rows), int(ids[-1])
                if progress is not None:
                    progress(written + done, total, "Exporting the index")
        finally:
            writer.close()
        written, part = written + rows_here, part + 1
    return part


def export_index(
    folder: str | os.PathLike,
    dest: str | os.PathLike,
    fmt: str = "parquet",
    *,
    rows_per_part: int = ROWS_PER_PART,
    progress: ProgressFn | None = None,
) -> ExportReport:
    """Write the index at `folder` to the new folder `dest` as an embedding folder (see the module docstring)."""
    started = time.perf_counter()
    if fmt not in EXPORT_FORMATS:
        raise ClipAppError(f"Unknown export format {fmt!r}; choose one of {', '.join(EXPORT_FORMATS)}.")
    if fmt == "parquet":
        _parquet("clipapp export --format parquet")  # say so before any work
    dest = Path(dest)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ClipAppError(f"{dest} already exists and is not an empty folder; choose a new folder for the export.")
    store = Store(Path(folder))
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".export", dir=dest.parent))
    try:
        (work / "img_emb").mkdir()
        (work / "metadata").mkdir()
        _begin_snapshot(store)
        images = store.content_count()
        parts = _export_parts(store, work, fmt, max(1, int(rows_per_part)), progress)
        info = {"model": store.meta["model_spec"], "dim": store.dim, "images": images, "parts": parts, "format": fmt}
        store.db.execute("ROLLBACK")
        (work / INFO_NAME).write_text(json.dumps(info, indent=1), encoding="utf-8")
        fsync_dir(work)
        if dest.exists():
            dest.rmdir()
        os.replace(work, dest)
        fsync_dir(dest.parent)
    finally:
        store.close()
        shutil.rmtree(work, ignore_errors=True)
    size = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    return ExportReport(str(dest), fmt, images, parts, size, time.perf_counter() - started)


# -- import ---------------------------------------------------------------------------------------------------------
def _parts(folder: Path) -> list[tuple[Path, Path]]:
    found = []
    for npy in (folder / "img_emb").glob("img_emb_*.npy") if (folder / "img_emb").is_dir() else ():
        match = _PART.search(npy.name)
        if match is None:
            continue
        stem = folder / "metadata" / f"metadata_{match.group(1)}"
        meta = next((p for p in (stem.with_suffix(".parquet"), stem.with_suffix(".jsonl")) if p.exists()), None)
        if meta is None:
            raise ClipAppError(f"{npy} has no metadata file: expected {stem}.parquet (or .jsonl) beside it.")
        found.append((int(match.group(1)), npy, meta))
    if not found:
        raise ClipAppError(
            f"{folder} is not an embedding folder: expected img_emb/img_emb_0.npy with metadata/metadata_0.parquet "
            "(clip-retrieval's layout, or `clipapp export`)."
        )
    return [(npy, meta) for _, npy, meta in sorted(found)]


def _metadata_batches(path: Path, batch_rows: int) -> Iterator[list[dict[str, Any]]]:
    if path.suffix == ".jsonl":
        with open(path, encoding="utf-8") as handle:
            batch: list[dict[str, Any]] = []
            for line in handle:
                if line.strip():
                    batch.append(json.loads(line))
                if len(batch) == batch_rows:
                    yield batch
                    batch = []
            if batch:
                yield batch
        return
    parquet = _parquet("clipapp index --from-embeddings with parquet metadata").ParquetFile(path)
    for record_batch in parquet.iter_batches(batch_size=batch_rows):
        yield record_batch.to_pylist()


def _check_folder(index: ImageIndex, folder: Path) -> None:
    info_path = folder / INFO_NAME
    if info_path.exists():
        info = json.loads(info_path.read_text(encoding="utf-8"))
        if info.get("model") not in (None, index.spec):
            raise ClipAppError(
                f"{folder} holds embeddings of model {info['model']}; the index at {index.path} is of model "
                f"{index.spec}. Their vectors do not compare: import into an index of model {info['model']} "
                f"(--model {info['model']})."
            )


def _infos(rows: list[dict[str, Any]], vectors: np.ndarray, where: Path) -> list[FileInfo]:
    infos = []
    for row, vector in zip(rows, vectors, strict=True):
        path = row.get("image_path")
        if not isinstance(path, str) or not path:
            raise ClipAppError(f"{where} has a row without image_path; every row needs the path of its image.")
        # Foreign folders carry no file hash: the vector's own bytes identify the content (same image, same vector).
        sha = row.get("sha256") or hashlib.sha256(np.ascontiguousarray(vector, "<f4").tobytes()).hexdigest()
        infos.append(
            FileInfo(
                path=path,
                size=int(row.get("size") or 0),
                mtime=float(row.get("mtime") or 0.0),
                sha256=sha,
                source=row.get("source") or "file",
                captured_at=row.get("captured_at"),
            )
        )
    return infos


def _add_batch(index: ImageIndex, vectors: np.ndarray, infos: list, rows: list[dict[str, Any]]) -> int:
    """Add one batch with its aliases and tags and commit it; returns how many paths it named."""
    index.add_items(vectors, infos)
    named = len(infos)
    tagged = {}
    for info, row in zip(infos, rows, strict=True):
        for alias in row.get("aliases") or ():
            index.add_alias(FileInfo(alias, 0, 0.0, info.sha256, info.source))
            named += 1
        if row.get("tags"):
            tagged[info.path] = [(tag["label"], float(tag["prob"])) for tag in row["tags"]]
    if tagged:
        index.set_tags(tagged)
    index.save()
    return named


def import_embeddings(
    index: ImageIndex, folder: str | os.PathLike, *, batch_rows: int = BATCH_ROWS, progress: ProgressFn | None = None
) -> SyncReport:
    """Add the images of an embedding folder to `index` without encoding any (one commit per batch)."""
    folder = Path(folder)
    _check_folder(index, folder)
    parts = _parts(folder)
    arrays = [np.load(npy, mmap_mode="r", allow_pickle=False) for npy, _ in parts]
    for (npy, _), array in zip(parts, arrays, strict=True):
        if array.ndim != 2 or array.shape[1] != index.dim:
            raise ClipAppError(
                f"{npy} holds embeddings of shape {array.shape}; the index at {index.path} holds {index.dim}-d "
                f"vectors of model {index.spec}. Import into an index of the model that made them."
            )
    total, done, before, rows_seen = sum(len(a) for a in arrays), 0, index.path_count, 0
    for (npy, meta), array in zip(parts, arrays, strict=True):
        start = 0
        for rows in _metadata_batches(meta, batch_rows):
            vectors = np.asarray(array[start : start + len(rows)], dtype=np.float32)
            if len(vectors) != len(rows):
                raise ClipAppError(f"{meta} has more rows than {npy}; they must match row for row.")
            infos = _infos(rows, vectors, meta)
            rows_seen += _add_batch(index, vectors, infos, rows)
            start, done = start + len(rows), done + len(rows)
            if progress is not None:
                progress(done, total, "Importing embeddings")
        if start != len(array):
            raise ClipAppError(f"{npy} has {len(array)} rows but {meta} only {start}; they must match row for row.")
    added = index.path_count - before
    return SyncReport(added=added, updated=rows_seen - added, total=index.path_count)
