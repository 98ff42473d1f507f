"""The registry's yes to a credential, kept a few seconds: ``--auth-cache-ttl``.

Every read asks the registry with the client's own credentials before a byte is served
(a manifest GET for a tag, a HEAD for a digest): that round trip bounded the gateway at
about 0.12x of nginx serving the same cached file (docs/benchmarks.md).  Here the answer
(the manifest descriptor the registry named, or "may push") is kept ``ttl`` seconds.

- **Keyed by who, where and what**: an HMAC-SHA256 of the exact ``Authorization``
  header under a random key made when the process starts (two passwords for one user
  name, or the same credential in another header form, are different keys; the header
  itself is never a key, and the digest is useless outside this process), the
  repository, the action (``pull`` or ``push``: a yes to one never answers the other)
  and, for a pull, the revision asked for.  One client's answer never serves another.
  A request without ``Authorization`` is one principal (anonymous at the registry, or
  the gateway's own identity with ``--lend-credentials``): the registry cannot tell such
  clients apart either.
- **Only yes is kept.**  A refusal, a missing repository or revision, an error: asked
  again every time.  So access granted at the registry works at once, and credentials
  the registry refuses add no entry (a spray of made-up credentials costs the registry
  what it cost before, and this cache nothing).
- **Bounded**: at most ``max_items`` answers, the least recently used dropped first
  (cachetools' ``TTLCache``, as ``ttlmap``): a registry that takes any credential (an
  open one) still cannot make a client grow it past that.
- **Revocation takes up to ``ttl``**: a credential revoked, a permission withdrawn or a
  tag moved or deleted at the registry is seen by this gateway within ``ttl`` seconds
  (on a token registry a token the registry client already holds is good until it
  expires as well, as before this cache).  Writes through this gateway (commits,
  branches, tags) drop the repository's answers at once (``forget``); another replica's
  writes are seen within ``ttl``.
- ``ttl`` 0 turns it off: every request asks the registry, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import time
from collections.abc import Callable, Hashable
from typing import Any

from cachetools import TTLCache

from ..core.config import AUTH_CACHE_TTL, AUTH_CACHE_TTL_MAX

PULL = "pull"
PUSH = "push"
MAX_ANSWERS = 8192  # entries kept, whatever the ttl: a few MiB at most
ANONYMOUS = b"anonymous"  # the principal of every request without Authorization


class AuthCache:
    """Thread-safe.  ``get`` / ``put`` by :meth:`key`; ``put`` takes the :attr:`epoch`
    read before the registry was asked, and keeps nothing if a write came in between
    (a slow answer from before a commit would otherwise outlive the commit's ``forget``).
    ``clock`` is for tests (default ``time.monotonic``)."""

    def __init__(
        self,
        ttl: float = AUTH_CACHE_TTL,
        max_items: int = MAX_ANSWERS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not 0 <= ttl <= AUTH_CACHE_TTL_MAX or max_items < 1:
            raise ValueError("an AuthCache needs 0 <= ttl <= AUTH_CACHE_TTL_MAX, max_items >= 1")
        self.ttl = ttl
        self.max_items = max_items
        self._secret = os.urandom(32)
        self._answers: TTLCache[Hashable, Any] | None = (
            TTLCache(max_items, ttl, timer=clock) if ttl > 0 else None
        )
        self._lock = threading.Lock()
        self._epoch = 0

    @property
    def enabled(self) -> bool:
        return self._answers is not None

    @property
    def epoch(self) -> int:
        return self._epoch

    def principal(self, authorization: str | None) -> bytes:
        """Who asks, as a key: the header's HMAC under this process's secret."""
        if not authorization or not authorization.strip():
            return ANONYMOUS
        header = authorization.strip().encode("utf-8", "surrogatepass")  # one key per header
        return hmac.new(self._secret, header, hashlib.sha256).digest()

    def key(
        self, authorization: str | None, repository: str, action: str, revision: str = ""
    ) -> tuple[bytes, str, str, str]:
        if action not in (PULL, PUSH):
            raise ValueError(f"unknown action {action!r}")
        return (self.principal(authorization), repository, action, revision)

    def get(self, key: tuple[bytes, str, str, str]) -> Any:
        """The kept answer, or None (none, expired, or the cache is off)."""
        if self._answers is None:
            return None
        with self._lock:
            return self._answers.get(key)

    def put(self, key: tuple[bytes, str, str, str], answer: Any, epoch: int) -> None:
        """Keep the registry's yes (never None) unless a write came after ``epoch``."""
        if self._answers is None or answer is None:
            return
        with self._lock:
            if epoch == self._epoch:
                self._answers[key] = answer

    def forget(self, repository: str) -> None:
        """Drop every answer about ``repository`` (its tags moved through this gateway),
        and every answer being fetched right now (see ``put``)."""
        with self._lock:
            self._epoch += 1
            if self._answers is None:
                return
            for key in [k for k in self._answers if k[1] == repository]:
                self._answers.pop(key, None)

    def __len__(self) -> int:
        if self._answers is None:
            return 0
        with self._lock:
            self._answers.expire()
            return len(self._answers)
