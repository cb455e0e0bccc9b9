"""clipapp.app.sessions: per-session indexes and adapters are unloaded when idle (LRU with a cap) and session files
expire after the TTL."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clipapp.app.sessions import MY_UPLOADS, SessionStore
from clipapp.errors import ClipAppError
from clipapp.units import describe_duration, parse_duration
from tests.support.paths import EXAMPLES_DIR


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _store(tiny_service, tmp_path, **kwargs) -> SessionStore:
    return SessionStore(tiny_service, tmp_path, EXAMPLES_DIR, **kwargs)


def _upload(store: SessionStore, session: str, photos, n: int = 2) -> None:
    assert store.store_uploads(session, [str(p) for p in photos[:n]]) == []
    assert store.update(MY_UPLOADS, session).total == n


def test_open_indexes_are_capped_and_reopen_from_disk(tiny_service, tmp_path, photos):
    store = _store(tiny_service, tmp_path, max_open_indexes=2)
    for i, session in enumerate(["s1", "s2", "s3", "s4"]):
        _upload(store, session, photos, n=1 + i % 2)
        assert store.open_index_count() <= 2
    with store.searchable(MY_UPLOADS, "s1") as index:  # evicted above, opened again with its contents
        assert len(index) == 1
    assert store.open_index_count() == 2


def test_an_index_in_use_is_not_evicted(tiny_service, tmp_path, photos):
    store = _store(tiny_service, tmp_path, max_open_indexes=1)
    _upload(store, "s1", photos)
    with store.searchable(MY_UPLOADS, "s1") as held:
        _upload(store, "s2", photos)  # s2 is newer, but s1 is in use: s2 is the one unloaded
        assert store.open_index_count() == 1
        hits = held.search(tiny_service.encode_texts(["a cat"]), k=2)[0].hits
        assert len(hits) == 2
    with store.searchable(MY_UPLOADS, "s1") as again:
        assert again is held  # still the open one, never a second copy beside it


def test_session_files_expire_after_the_ttl_and_use_extends_it(tiny_service, tmp_path, photos):
    clock = Clock()
    store = _store(tiny_service, tmp_path, ttl_s=3600, sweep_every_s=0, clock=clock)
    _upload(store, "old", photos)
    _upload(store, "busy", photos)
    clock.now += 3000
    store.touch("busy")  # busy is used again; old is not
    assert store.expire() == []
    clock.now += 700  # old: 3700 s idle, busy: 700 s
    assert store.expire() == ["old"]
    assert not (tmp_path / "sessions" / "old").exists() and (tmp_path / "sessions" / "busy").exists()
    with store.searchable(MY_UPLOADS, "old") as index:  # an expired session starts empty
        assert len(index) == 0


def test_expiry_runs_on_its_own_as_sessions_are_used(tiny_service, tmp_path, photos):
    clock = Clock()
    store = _store(tiny_service, tmp_path, ttl_s=100, sweep_every_s=10, clock=clock)
    _upload(store, "a", photos, n=1)
    clock.now += 200
    store.touch("b")  # any use sweeps, at most every 10 s
    assert not (tmp_path / "sessions" / "a").exists()


def test_adapters_are_unloaded_when_idle_and_reload_from_disk(tiny_service, tmp_path):
    from clipapp.finetune.adapter import Adapter

    store = _store(tiny_service, tmp_path, max_loaded_adapters=2)
    dim = tiny_service.embed_dim
    for i in range(3):
        head = np.random.default_rng(i).normal(size=(2, dim)).astype(np.float32)
        store.save_adapter(f"s{i}", Adapter(f"adapter-{i}", ["a", "b"], tiny_service.spec, head, 100.0))
        assert store.loaded_adapter_count() <= 2
    again = store.adapter("s0", "adapter-0")  # unloaded above, read back from the session's folder
    np.testing.assert_allclose(again.head, np.random.default_rng(0).normal(size=(2, dim)), rtol=1e-6)
    assert store.loaded_adapter_count() == 2
    with pytest.raises(ClipAppError, match="is gone"):
        store.adapter("s9", "adapter-0")  # another session cannot reach it
    with pytest.raises(ClipAppError, match="adapter name"):
        store.adapter("s0", "../../etc/passwd")


def test_ttl_parsing():
    assert parse_duration("1d") == 86400 and parse_duration("90m") == 5400 and parse_duration("15") == 15
    for bad in ("soon", "-1h", "0"):
        with pytest.raises(ClipAppError):
            parse_duration(bad)
    assert describe_duration(86400) == "1 day" and describe_duration(7200) == "2 hours"


def test_session_folder_mtime_is_the_last_use(tiny_service, tmp_path):
    clock = Clock(2_000_000.0)
    store = _store(tiny_service, tmp_path, clock=clock)
    assert os.stat(store.touch("s1") / ".last-used").st_mtime == pytest.approx(2_000_000.0)
