"""Filling the index: incremental folder sync (sync_folder) and uploaded images (add_images).

A sync commits in bounded transactions as it goes: the bookkeeping (touched files, copies, moves, deletions) in
one commit, then one commit per `save_every_batches` batches of newly embedded images, so a crash loses at most
the batch in flight and running the sync again resumes: what was committed is trusted by size + mtime.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from clipapp.errors import ClipAppError
from clipapp.images.folders import list_image_files
from clipapp.index.image_index import ImageIndex
from clipapp.index.results import SkippedFile, SyncReport
from clipapp.index.store import FileInfo
from clipapp.progress import ProgressFn
from clipapp.storage import file_sha256

EXIF_IFD = 0x8769
EXIF_DATETIME_ORIGINAL = 36867
EXIF_DATETIME = 306
Stats = dict[str, tuple[int, float]]  # path -> (size, mtime)


class FileEncoder(Protocol):
    """What `sync_folder` needs of a model: image files -> vectors (ClipService, or distributed.RayEncoder)."""

    @property
    def spec(self) -> str: ...

    @property
    def embed_dim(self) -> int: ...

    def encode_image_files(
        self, paths: list[str], *, batch_size: int = 32
    ) -> Iterator[tuple[str, np.ndarray | None, str | None]]: ...


class Encoder(FileEncoder, Protocol):
    """What uploads (`add_images`) and queries need besides: decoded images and texts (ClipService)."""

    def encode_images(self, images: list) -> np.ndarray: ...

    def encode_texts(self, texts: list[str]) -> np.ndarray: ...

    def text_embeddings(self, labels: Sequence[str], templates: Any) -> np.ndarray: ...


def capture_date(path: str) -> str | None:
    """EXIF DateTimeOriginal (else DateTime) as 'YYYY-MM-DD HH:MM:SS', None where the file has none.

    Pillow reads only the header here (no pixel decoding); anything unreadable simply has no date.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            exif = image.getexif()
            value = exif.get_ifd(EXIF_IFD).get(EXIF_DATETIME_ORIGINAL) or exif.get(EXIF_DATETIME)
    except Exception:  # noqa: BLE001 - a date is optional; decoding problems are reported by the encoder
        return None
    if not isinstance(value, str) or len(value) < 19 or value[4] != ":":
        return None
    return value[:10].replace(":", "-") + " " + value[11:19]


def image_sha256(image) -> str:
    """Content hash of a decoded PIL image: mode, size and pixels (an upload has no file bytes to hash)."""
    digest = hashlib.sha256(f"clipapp-pixels:{image.mode}:{image.width}x{image.height}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def check_encoder(index: ImageIndex, encoder: FileEncoder) -> None:
    if encoder.spec != index.spec or int(encoder.embed_dim) != index.dim:
        where = index.path or "in memory"
        raise ClipAppError(
            f"The index at {where} was built with model {index.spec} ({index.dim}-d embeddings), the app runs model "
            f"{encoder.spec} ({encoder.embed_dim}-d); rebuild it or start the app with --model {index.spec}."
        )


@dataclass
class _Tally:
    """The counts of a sync in progress; `freeze` makes them the `SyncReport` returned."""

    added: int = 0
    updated: int = 0
    removed: int = 0
    skipped: list[SkippedFile] = field(default_factory=list)

    def skip(self, path: str, error: str) -> None:
        self.skipped.append(SkippedFile(path=path, error=error))

    def freeze(self, total: int) -> SyncReport:
        return SyncReport(
            added=self.added, updated=self.updated, removed=self.removed, skipped=tuple(self.skipped), total=total
        )


def sync_folder(
    index: ImageIndex,
    folder: str | os.PathLike,
    encoder: FileEncoder,
    *,
    progress: ProgressFn | None = None,
    batch_size: int = 32,
    save_every_batches: int = 1,
) -> SyncReport:
    """Bring the index up to date with the image files under `folder` (recursive; hidden files skipped).

    Only new or changed files are embedded: a file whose size and mtime match its record is trusted unchanged
    (no hashing: an unchanged re-sync reads one row per file from the database and stats the files); otherwise
    it is hashed, and a touched but identical file only has its size/mtime refreshed. Content already in the
    index (a copy or a moved file) becomes an alias without encoding. Records of files under `folder` that are
    gone are dropped (other folders and uploads are untouched). A file the encoder cannot read is listed in
    `skipped` (and its old record, if any, dropped); nothing here is fatal.
    Commits the bookkeeping first, then every `save_every_batches` batches of embedded images, and at the end
    (also on errors and interrupts), so a crash keeps everything but the batch in flight.
    Returns the `SyncReport` (its `to_dict` is the JSON every front end shows).
    """
    check_encoder(index, encoder)
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ClipAppError(f"{folder}: not a folder.")
    root = root.resolve()
    tally = _Tally()
    notify: ProgressFn = progress or (lambda done, total, message: None)
    found = _stat_folder(root, tally)
    prefix = str(root).rstrip(os.sep) + os.sep
    known = index.file_stats(prefix)
    gone = [path for path in known if path not in found]
    changed = [path for path, stat in found.items() if known.get(path) != stat]

    def commit() -> None:
        if index.path is not None:
            index.save()

    try:
        hashes = _hash_files(changed, notify, tally)
        to_encode = _record_known_content(index, found, hashes, tally)  # before removals: a moved file is an alias
        tally.removed = index.remove_paths(gone)
        commit()
        _embed_new_content(
            index,
            encoder,
            to_encode,
            tally,
            notify=notify,
            batch_size=batch_size,
            save_every_batches=save_every_batches,
            commit=commit,
        )
    finally:
        commit()  # also on errors and interrupts: whatever was embedded is kept
    if index.path is not None and (tally.added or tally.updated or tally.removed):
        index.ensure_built(progress=notify)  # the first search is fast, and the saved structure stays current
    total = index.path_count
    notify(1, 1, f"Indexed {total} images")
    return tally.freeze(total)


def _stat_folder(root: Path, tally: _Tally) -> Stats:
    """The (size, mtime) of every image file under `root`; one that cannot be read is skipped and said so."""
    found: Stats = {}
    for file_path in list_image_files(root):
        try:
            stat = file_path.stat()
        except OSError as exc:  # e.g. a dangling symlink
            tally.skip(str(file_path), f"cannot read: {exc.strerror or exc}")
            continue
        found[str(file_path)] = (stat.st_size, stat.st_mtime)
    return found


def _record_known_content(
    index: ImageIndex, found: Stats, hashes: dict[str, tuple[str, str | None]], tally: _Tally
) -> dict[str, list[tuple[FileInfo, bool]]]:
    """Files whose bytes the index has already: a touched file gets its size and mtime refreshed, a copy or a moved
    file becomes an alias. Returns the rest to encode: content hash -> its files (in order), each with whether it had
    a record before."""
    to_encode: dict[str, list[tuple[FileInfo, bool]]] = {}
    for path, (digest, captured_at) in hashes.items():
        size, mtime = found[path]
        previous = index.record(path)
        if previous is not None and previous.sha256 == digest:
            index.update_file_stat(path, size=size, mtime=mtime)  # touched, same bytes: no re-embedding
            continue
        info = FileInfo(path=path, size=size, mtime=mtime, sha256=digest, captured_at=captured_at)
        if index.add_alias(info) is not None:
            _count_change(tally, existed=previous is not None)
        else:
            to_encode.setdefault(info.sha256, []).append((info, previous is not None))
    return to_encode


def _count_change(tally: _Tally, *, existed: bool) -> None:
    if existed:
        tally.updated += 1
    else:
        tally.added += 1


def _hash_files(paths: list[str], notify: ProgressFn, tally: _Tally) -> dict[str, tuple[str, str | None]]:
    """(sha256, EXIF capture date) of each readable file, in `paths`' order, hashed in a few threads (I/O bound;
    hashlib releases the GIL)."""

    def attempt(path: str) -> tuple[str, str | None, str | None, str | None]:
        try:
            return path, file_sha256(path), capture_date(path), None
        except OSError as exc:
            return path, None, None, f"cannot read: {exc.strerror or exc}"

    hashes: dict[str, tuple[str, str | None]] = {}
    if not paths:
        return hashes
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="hash") as pool:
        for done, (path, digest, captured_at, error) in enumerate(pool.map(attempt, paths), 1):
            if digest is None:
                tally.skip(path, error or "cannot read")
            else:
                hashes[path] = (digest, captured_at)
            if done % 256 == 0 or done == len(paths):
                notify(done, len(paths), "Checking new and changed files")
    return hashes


def _embed_new_content(
    index: ImageIndex,
    encoder: FileEncoder,
    to_encode: dict[str, list[tuple[FileInfo, bool]]],
    tally: _Tally,
    *,
    notify: ProgressFn,
    batch_size: int,
    save_every_batches: int,
    commit,
) -> None:
    # One file per distinct content is encoded; its duplicates become aliases in the same add_items call.
    if not to_encode:
        return
    group_of = {files[0][0].path: files for files in to_encode.values()}
    total = len(group_of)
    pending_vectors: list[np.ndarray] = []
    pending: list[tuple[FileInfo, bool]] = []
    batches_since_save = 0

    def flush() -> None:
        if pending:
            index.add_items(np.stack(pending_vectors), [info for info, _ in pending])
            for _, existed in pending:
                _count_change(tally, existed=existed)
            pending.clear()
            pending_vectors.clear()

    notify(0, total, "Embedding images")
    results = encoder.encode_image_files(list(group_of), batch_size=batch_size)
    for done, (path, vector, error) in enumerate(results, 1):
        files = group_of[path]
        if vector is None:
            for info, _existed in files:
                tally.skip(info.path, error or "could not be encoded")
            # A file that changed into something unreadable no longer matches its old vector.
            index.remove_paths([info.path for info, existed in files if existed])
        else:
            for entry in files:
                pending_vectors.append(vector)
                pending.append(entry)
        if done % batch_size == 0 or done == total:
            flush()
            batches_since_save += 1
            notify(done, total, "Embedding images")
            if batches_since_save >= save_every_batches and done < total:
                commit()
                batches_since_save = 0
    flush()


def add_images(
    index: ImageIndex, images: Sequence[tuple[str, Any]], encoder: Encoder, *, batch_size: int = 32, save: bool = True
) -> SyncReport:
    """Index uploaded PIL images under the given names (no files on disk; content hash = pixels).

    Same name with the same pixels: nothing to do; same pixels under another name: an alias, not re-encoded;
    same name with new pixels: replaced ("updated"). Returns the same report as `sync_folder` (removed = 0).
    """
    check_encoder(index, encoder)
    tally = _Tally()
    to_encode: list[tuple[FileInfo, Any, bool]] = []
    seen_hashes: set[str] = set()
    for name, image in images:
        if not isinstance(name, str) or not name.strip():
            raise ClipAppError("Every uploaded image needs a name to be stored under.")
        digest = image_sha256(image)
        previous = index.record(name)
        if previous is not None and previous.sha256 == digest:
            continue
        info = FileInfo(path=name, size=len(image.tobytes()), mtime=0.0, sha256=digest, source="upload")
        if digest not in seen_hashes and index.add_alias(info) is not None:
            _count_change(tally, existed=previous is not None)
            continue
        to_encode.append((info, image, previous is not None))
        seen_hashes.add(digest)
    unique: dict[str, Any] = {}  # content hash -> one image with it
    for info, image, _ in to_encode:
        unique.setdefault(info.sha256, image)
    hashes = list(unique)
    vectors_by_hash: dict[str, np.ndarray] = {}
    for start in range(0, len(hashes), batch_size):
        chunk = hashes[start : start + batch_size]
        for digest, vector in zip(chunk, encoder.encode_images([unique[h] for h in chunk]), strict=True):
            vectors_by_hash[digest] = vector
    if to_encode:
        index.add_items(
            np.stack([vectors_by_hash[info.sha256] for info, _, _ in to_encode]), [info for info, _, _ in to_encode]
        )
        for _, _, existed in to_encode:
            _count_change(tally, existed=existed)
    if save and index.path is not None:
        index.save()
    return tally.freeze(index.path_count)


# ---------------------------------------------------------------------------------------------------------------
# Progress
# ---------------------------------------------------------------------------------------------------------------
