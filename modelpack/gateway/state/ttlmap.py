"""A dict with a size cap and an age cap, for what requests make the gateway remember.

Upload tickets, Xet sessions, revision misses and credential checks are created by
clients; a plain dict of them is memory (and, kept forever, stale answers) that any
client can pile up.  Here an entry is gone ``ttl`` seconds after it was set, and past
``max_items`` the least recently used is dropped first.  cachetools' ``TTLCache`` does the
bookkeeping; this wrapper adds the lock it leaves to its callers and a typed interface.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TTLMap(Generic[K, V]):
    """Thread-safe; ``clock`` is for tests (default ``time.monotonic``)."""

    def __init__(
        self, max_items: int, ttl: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if max_items < 1 or ttl <= 0:
            raise ValueError("a TTLMap needs max_items >= 1 and ttl > 0")
        self.max_items = max_items
        self.ttl = ttl
        self._entries: TTLCache[K, V] = TTLCache(max_items, ttl, timer=clock)
        self._lock = threading.Lock()

    def set(self, key: K, value: V) -> None:
        with self._lock:
            self._entries[key] = value

    def get(self, key: K) -> V | None:
        with self._lock:
            return self._entries.get(key)

    def pop(self, key: K) -> V | None:
        with self._lock:
            return self._entries.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            self._entries.expire()
            return len(self._entries)
