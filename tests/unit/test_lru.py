"""clipapp.lru.LRU: the one bounded cache (service text embeddings, sessions' indexes and adapters)."""

from __future__ import annotations

from clipapp.lru import LRU


def test_least_recently_used_goes_first_and_get_refreshes():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.get("a") == 1  # "a" is now the most recent
    cache.put("c", 3)
    assert list(cache) == ["a", "c"] and len(cache) == 2 and "b" not in cache


def test_peek_does_not_refresh():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    assert cache.peek("a") == 1 and cache.peek("zz") is None
    cache.put("c", 3)
    assert list(cache) == ["b", "c"] and cache.items() == [("b", 2), ("c", 3)]


def test_evicted_and_discarded_entries_are_handed_to_on_evict():
    dropped = []
    cache: LRU[str, int] = LRU(1, on_evict=lambda key, value: dropped.append((key, value)))
    cache.put("a", 1)
    cache.put("b", 2)
    cache.discard("b")
    cache.discard("missing")
    assert dropped == [("a", 1), ("b", 2)] and len(cache) == 0


def test_pinned_entries_stay_until_trimmed_after_release():
    in_use = {"a"}
    cache: LRU[str, str] = LRU(1, pinned=lambda value: value in in_use)
    cache.put("a", "a")
    cache.put("b", "b")  # over capacity, and "a" is pinned: "b", the only unpinned entry, goes
    assert list(cache) == ["a"]
    cache.put("c", "c")
    assert list(cache) == ["a"]
    in_use.clear()
    cache.put("d", "d")
    assert list(cache) == ["d"]


def test_touch_marks_used():
    cache: LRU[str, int] = LRU(2)
    cache.put("a", 1)
    cache.put("b", 2)
    cache.touch("a")
    cache.touch("missing")
    cache.put("c", 3)
    assert list(cache) == ["a", "c"]
