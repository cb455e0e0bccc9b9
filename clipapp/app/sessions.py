"""What the server keeps per browser session, with bounded memory and disk: the search indexes it has open and the
adapters fine-tuned in each session. No Gradio here: the web UI and the HTTP API both call this.

Memory: open indexes and loaded adapters sit in two LRU caches with a cap each; the least recently used one that
nobody is using is dropped when a new one is opened, and opened again from disk on its next use.
Disk: each session's uploads, index and adapters live under `<state>/sessions/<session>/`, and a session folder
unused for `ttl_s` (`--session-ttl`, a day by default) is deleted, checked at most every `sweep_every_s`.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence

from clipapp.app import actions
from clipapp.errors import ClipAppError
from clipapp.images.decode import IMAGE_EXTENSIONS, load_image
from clipapp.index import ImageIndex, SyncReport
from clipapp.lru import LRU
from clipapp.model.service import ClipService
from clipapp.storage import file_sha256
from clipapp.units import describe_duration

log = logging.getLogger(__name__)

EXAMPLES = "examples"
MY_UPLOADS = "my uploads"
MAX_UPLOADS_PER_CALL = 500
DEFAULT_TTL_S = 24 * 3600
MAX_OPEN_INDEXES = 32  # an index of a few uploads holds ~1 MB; the shared ones are reopened in milliseconds
LAST_USED = ".last-used"  # in each session folder: its modification time is the session's last use
MAX_LOADED_ADAPTERS = 16  # a head adapter is kilobytes, a partial one a copy of visual blocks (tens of MB)


@dataclass
class _Open:
    index: ImageIndex
    lock: threading.RLock = field(default_factory=threading.RLock)
    users: int = 0  # callers inside `use_index`; an entry in use is never evicted


class SessionStore:
    """The indexes and adapters of every session; thread-safe.

    Sources: the built-in examples and the server folders the operator allowed are shared by everyone; each
    session's uploads ("my uploads") go to an index of its own."""

    def __init__(
        self,
        service: ClipService,
        state_dir: Path,
        examples_dir: Path,
        allowed_roots: Sequence[Path] = (),
        *,
        ttl_s: float = DEFAULT_TTL_S,
        max_open_indexes: int = MAX_OPEN_INDEXES,
        max_loaded_adapters: int = MAX_LOADED_ADAPTERS,
        sweep_every_s: Optional[float] = None,
        clock: Callable[[], float] = time.time,
    ):
        self.service = service
        self.state_dir = Path(state_dir)
        self.examples_dir = Path(examples_dir)
        self.allowed_roots = tuple(Path(p) for p in allowed_roots)
        self.ttl_s = float(ttl_s)
        self.sweep_every_s = min(self.ttl_s / 4, 600.0) if sweep_every_s is None else float(sweep_every_s)
        self.clock = clock
        # An index in use is never evicted; an evicted one is closed (its SQLite connection goes with it).
        self._indexes: LRU[Path, _Open] = LRU(
            max(1, int(max_open_indexes)),
            pinned=lambda entry: entry.users > 0,
            on_evict=lambda _, entry: entry.index.close(),
        )
        self._adapters: LRU[Path, object] = LRU(max(1, int(max_loaded_adapters)))
        self._guard = threading.Lock()
        self._last_sweep = float("-inf")
        self._model_tag = hashlib.sha1(service.spec.encode()).hexdigest()[:10]

    # -- names and folders ------------------------------------------------------------------------------------
    @property
    def sessions_dir(self) -> Path:
        return self.state_dir / "sessions"

    def sources(self) -> list[str]:
        return [EXAMPLES, *(str(root) for root in self.allowed_roots), MY_UPLOADS]

    def shared(self, source: str) -> str:
        """`source`, checked as the /v1 API may read it: one of the shared indexes, never a browser session's
        uploads (the API has no session)."""
        if source == MY_UPLOADS:
            shared = ", ".join(s for s in self.sources() if s != MY_UPLOADS)
            raise ClipAppError(f"'my uploads' belongs to a browser session; the API reads the shared indexes: {shared}")
        return source

    def session_dir(self, session: str) -> Path:
        if not session or not session.replace("-", "").replace("_", "").isalnum():
            raise ClipAppError("No browser session: reload the page.")
        return self.sessions_dir / session

    def touch(self, session: str) -> Path:
        """Mark the session as in use now (its expiry counts from here); returns its folder."""
        folder = self.session_dir(session)
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / LAST_USED
        marker.touch()
        now = self.clock()
        os.utime(marker, (now, now))
        self.maybe_expire()
        return folder

    def folder_and_index_path(self, source: str, session: str) -> tuple[Path, Path]:
        """Resolve a source name to (image folder, index folder); only the listed sources are accepted."""
        if source == EXAMPLES:
            return self.examples_dir, self.state_dir / "indexes" / f"examples-{self._model_tag}"
        if source == MY_UPLOADS:
            base = self.session_dir(session)
            return base / "images", base / f"index-{self._model_tag}"
        for root in self.allowed_roots:
            if source == str(root):
                digest = hashlib.sha1(str(root).encode()).hexdigest()[:10]
                return root, self.state_dir / "indexes" / f"{root.name or 'root'}-{digest}-{self._model_tag}"
        raise ClipAppError(
            f"{source!r} is not an index this server offers: choose one of {', '.join(self.sources())}. "
            "Server folders must be allowed with --allowed-root."
        )

    # -- indexes ----------------------------------------------------------------------------------------------
    def open_index_count(self) -> int:
        with self._guard:
            return len(self._indexes)

    @contextmanager
    def use_index(self, index_path: Path) -> Iterator[ImageIndex]:
        """The open index at `index_path`, held under its lock for the duration (opened or created if needed)."""
        with self._guard:
            entry = self._indexes.get(index_path)
            if entry is None:
                entry = _Open(ImageIndex.open_or_create(index_path, self.service.spec, self.service.embed_dim))
                entry.users += 1  # before it joins the cache: the new entry is pinned from the start
                self._indexes.put(index_path, entry)
            else:
                entry.users += 1
                self._indexes.trim()
        try:
            with entry.lock:
                yield entry.index
        finally:
            with self._guard:
                entry.users -= 1
                self._indexes.trim()

    def update(self, source: str, session: str, progress=None) -> SyncReport:
        """Bring the source's index up to date with its folder; the report of `actions.sync_index`."""
        folder, index_path = self.folder_and_index_path(source, session)
        if source == MY_UPLOADS:
            self.touch(session)
        folder.mkdir(parents=True, exist_ok=True)
        with self.use_index(index_path) as index:
            return actions.sync_index(self.service, index, folder, progress=progress)

    @contextmanager
    def searchable(self, source: str, session: str) -> Iterator[ImageIndex]:
        """The index for `source`, built on first use so every source works without a manual build."""
        folder, index_path = self.folder_and_index_path(source, session)
        if source == MY_UPLOADS:
            self.touch(session)
        with self.use_index(index_path) as index:
            if len(index) == 0:
                folder.mkdir(parents=True, exist_ok=True)
                actions.sync_index(self.service, index, folder)
            yield index

    def store_uploads(self, session: str, files: Sequence[str], names: Optional[Sequence[str]] = None) -> list[str]:
        """Copy valid uploaded images into the session's folder; returns problems for the ones refused."""
        if len(files) > MAX_UPLOADS_PER_CALL:
            raise ClipAppError(f"{len(files)} files uploaded; at most {MAX_UPLOADS_PER_CALL} per call.")
        target = self.touch(session) / "images"
        target.mkdir(parents=True, exist_ok=True)
        problems = []
        for i, path in enumerate(files):
            source = Path(path)
            try:
                load_image(source, limits=self.service.limits)  # validate before keeping anything
            except ClipAppError as exc:
                problems.append(str(exc))
                continue
            suffix = source.suffix.lower() if source.suffix.lower() in IMAGE_EXTENSIONS else ".png"
            stem = Path(names[i] if names else source.name).stem[:80]
            shutil.copyfile(source, target / f"{stem}-{file_sha256(str(source))[:8]}{suffix}")
        return problems

    # -- adapters ---------------------------------------------------------------------------------------------
    def adapter_path(self, session: str, name: str) -> Path:
        if not name or not name.replace("-", "").replace("_", "").isalnum():
            raise ClipAppError(f"{name!r} is not an adapter name.")
        return self.session_dir(session) / "adapters" / name

    def save_adapter(self, session: str, adapter) -> tuple[Path, Path]:
        """Keep a fine-tuned adapter as this session's (on disk, and loaded while it is in use)."""
        path = self.adapter_path(session, adapter.name)
        self.touch(session)
        path.parent.mkdir(parents=True, exist_ok=True)
        files = adapter.save(path)
        with self._guard:
            self._adapters.put(path, adapter)
        return files

    def adapter(self, session: str, name: str):
        """The session's adapter `name`, from memory or loaded again from disk."""
        from clipapp.finetune.adapter import load_adapter

        path = self.adapter_path(session, name)
        self.touch(session)
        with self._guard:
            loaded = self._adapters.get(path)
            if loaded is not None:
                return loaded
        try:
            adapter = load_adapter(path, expected_spec=self.service.spec)
        except ClipAppError:
            raise ClipAppError(
                f"The fine-tuned adapter {name!r} of this session is gone (sessions are kept "
                f"{describe_duration(self.ttl_s)}); fine-tune again."
            ) from None
        with self._guard:
            self._adapters.put(path, adapter)
        return adapter

    def loaded_adapter_count(self) -> int:
        with self._guard:
            return len(self._adapters)

    # -- expiry -----------------------------------------------------------------------------------------------
    def maybe_expire(self) -> list[str]:
        now = self.clock()
        if now - self._last_sweep < self.sweep_every_s:
            return []
        self._last_sweep = now
        return self.expire(now)

    def expire(self, now: Optional[float] = None) -> list[str]:
        """Delete session folders unused for `ttl_s` (and forget what was open from them); returns their names."""
        now = self.clock() if now is None else now
        if not self.sessions_dir.is_dir():
            return []
        removed = []
        for folder in self.sessions_dir.iterdir():
            try:  # the marker's time, set on each use (the folder's own changes whenever a file is added)
                marker = folder / LAST_USED
                idle = now - (marker.stat() if marker.exists() else folder.stat()).st_mtime
            except FileNotFoundError:
                continue
            if not folder.is_dir() or idle < self.ttl_s:
                continue
            with self._guard:
                if any(p.is_relative_to(folder) and e.users for p, e in self._indexes.items()):
                    continue  # in use right now: it is not idle
                for path in [p for p in self._indexes if p.is_relative_to(folder)]:
                    self._indexes.discard(path)
                for path in [p for p in self._adapters if p.is_relative_to(folder)]:
                    self._adapters.discard(path)
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder.name)
        if removed:
            log.info("Removed %d session folder(s) idle for more than %s.", len(removed), describe_duration(self.ttl_s))
        return removed
