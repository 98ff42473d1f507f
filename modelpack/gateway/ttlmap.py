"""A dict with a size cap and an age cap, for what requests make the gateway remember.

Upload tickets, Xet sessions, revision misses and credential checks are created by
clients; a plain dict of them is memory (and, kept forever, stale answers) that any
client can pile up.  Here an entry is gone ``ttl`` seconds after it was set, and past
``max_items`` the oldest is dropped first.  Setting a key again makes it the newest.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

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
        self._clock = clock
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()  # oldest first
        self._lock = threading.Lock()

    def set(self, key: K, value: V) -> None:
        now = self._clock()
        with self._lock:
            self._entries.pop(key, None)
            self._entries[key] = (now + self.ttl, value)
            self._expire(now)
            while len(self._entries) > self.max_items:
                self._entries.popitem(last=False)

    def get(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            return entry[1]

    def pop(self, key: K) -> V | None:
        with self._lock:
            entry = self._entries.pop(key, None)
        return entry[1] if entry is not None and entry[0] > self._clock() else None

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock())
            return len(self._entries)

    def _expire(self, now: float) -> None:
        """Entries are in the order they were set, so the expired ones are in front."""
        while self._entries:
            key, (expires, _) = next(iter(self._entries.items()))
            if expires > now:
                return
            del self._entries[key]
