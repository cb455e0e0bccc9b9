"""`LRU`: a mapping that keeps at most `capacity` entries, dropping the least recently used first; the one bounded
cache behind the service's text embeddings and the sessions' open indexes and loaded adapters.

Not thread-safe: each owner already holds a lock around its cache and more (e.g. the sessions' use counts).
`functools.lru_cache` does not fit these: entries are added by hand, some must be closed when dropped, and some
may not be dropped while in use.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Generic, Optional, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class LRU(Generic[K, V]):
    """Least recently used entries go first once there are more than `capacity`.

    on_evict(key, value): called for every entry dropped (by the cap or by `discard`), e.g. to close it.
    pinned(value): an entry for which it returns True is never dropped by the cap (it is in use); the cache can
    then stay over capacity until `trim` is called again.
    """

    def __init__(
        self,
        capacity: int,
        *,
        on_evict: Optional[Callable[[K, V], None]] = None,
        pinned: Optional[Callable[[V], bool]] = None,
    ) -> None:
        self.capacity = int(capacity)
        self._entries: OrderedDict[K, V] = OrderedDict()
        self._on_evict = on_evict
        self._pinned = pinned

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return key in self._entries

    def __iter__(self) -> Iterator[K]:
        return iter(list(self._entries))  # a copy: callers discard while iterating

    def items(self) -> list[tuple[K, V]]:
        """(key, value) pairs, least recently used first, without marking them used."""
        return list(self._entries.items())

    def get(self, key: K) -> Optional[V]:
        """The value, marked as just used; None if absent."""
        if key not in self._entries:
            return None
        self._entries.move_to_end(key)
        return self._entries[key]

    def peek(self, key: K) -> Optional[V]:
        """The value without marking it used; None if absent."""
        return self._entries.get(key)

    def put(self, key: K, value: V) -> None:
        """Add or replace `key` as the most recently used, then drop old entries beyond the capacity."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        self.trim()

    def touch(self, key: K) -> None:
        """Mark `key` as just used (no-op when absent)."""
        if key in self._entries:
            self._entries.move_to_end(key)

    def discard(self, key: K) -> None:
        """Drop `key` (passing it to on_evict) if present."""
        if key in self._entries:
            self._drop(key)

    def trim(self) -> None:
        """Drop the least recently used unpinned entries until the capacity holds."""
        for key in list(self._entries):
            if len(self._entries) <= self.capacity:
                return
            if self._pinned is None or not self._pinned(self._entries[key]):
                self._drop(key)

    def _drop(self, key: K) -> None:
        value = self._entries.pop(key)
        if self._on_evict is not None:
            self._on_evict(key, value)
