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
  expires as well, as before this cache).  Each replica keeps its own answers, each for
  at most ``ttl`` from when it asked, so every replica sees a revocation within ``ttl``.
- **Writes drop the repository's answers, in every replica.**  A write through this
  gateway (commits, branches, tags) drops them here at once (``forget``).  With replicas
  (``--redis``) it also puts a new random *generation* for the repository in Redis
  (state/shared.py); every kept answer carries the generation read before the registry
  was asked, and is served only while Redis still holds that one (a repository never
  written gets a random one at its first read, so nothing is kept under none, and Redis
  losing its data after a write cannot bring an answer from before it back): a read on any replica
  after a commit through another asks the registry again (one Redis GET per kept
  answer served, instead of the registry's round trip).  While Redis does not answer,
  nothing is kept or served from here (every request asks the registry, as with ``ttl``
  0) and Redis is asked again after ``SHARED_RETRY`` seconds.  The download lane
  (gateway/lane.py) asks without blocking its loop, one GET per repository for all the
  requests that arrived before it was sent, and hands each request its answer
  (``GENERATIONS``, an error included): each still sees every write answered before it
  asked.
- **Asked once by concurrent requests** (``answer``): requests that miss one key at once
  (a client's parallel downloads, every request in flight when an answer ends) wait for
  the first one's registry answer and take it; if it kept nothing (a refusal, an error, a
  write meanwhile) each then asks for itself, as before; if it is still not there
  ``ASK_WAIT`` seconds after it was asked (a registry request stuck), one of them asks in
  its place and the rest wait for that one.  Nobody waits when nothing could be kept
  (Redis not answering).
- **Asked again before it ends, when in use** (the download lane): an answer served in
  the last ``1 - REFRESH_AT`` of its ``ttl`` is claimed once (``served``) and asked of
  the registry again in the background, so a download in steady use never finds it expired
  (at its end every request in flight went back to the threads, each asking the registry:
  the lane's p99).  It is still never served past ``ttl``: a refused or failed refresh
  keeps nothing, and the old answer ends on time.
- ``ttl`` 0 turns it off: every request asks the registry, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Callable, Hashable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from cachetools import TTLCache

from ...errors import SharedStateUnavailableError
from ..core.config import AUTH_CACHE_TTL, AUTH_CACHE_TTL_MAX
from .shared import Shared

log = logging.getLogger("modelpack.gateway")
# Generations read from Redis for a request, by repository (an error, if the read failed):
# set by the download lane (module docstring); None elsewhere.
GENERATIONS: ContextVar[dict[str, object] | None] = ContextVar("generations", default=None)
# Whether the kept answer the download lane just served is due to be asked again
# (``AuthCache.served``): set False by the lane before it calls the app.
REFRESH_DUE: ContextVar[bool] = ContextVar("refresh_due", default=False)

PULL = "pull"
PUSH = "push"
MAX_ANSWERS = 8192  # entries kept, whatever the ttl: a few MiB at most
ANONYMOUS = b"anonymous"  # the principal of every request without Authorization
SHARED_RETRY = 5.0  # seconds without Redis (no answers kept) after it failed to answer
_UNKNOWN = object()  # a generation Redis did not say: nothing kept with it
ASK_WAIT = 3.0  # seconds a registry answer is waited for by others than its asker
REFRESH_AT = 0.75  # of ttl: an answer served after this is asked again in the background


# What an answer is kept with (``AuthCache.stamp``): this process's write epoch, and with
# replicas the repository's generation in Redis (None: never written through a replica).
Stamp = tuple[int, object]


@dataclass
class _Kept:
    """An answer, the generation it was kept under, and when (the cache's clock)."""

    answer: Any
    generation: object
    since: float
    refresh_claimed: bool = False


def _current(kept: _Kept | None, stamp: Stamp) -> bool:
    """Whether ``kept`` may be served now: kept under the generation ``stamp`` read, and
    that one known (the one rule of ``lookup`` and ``served``)."""
    return kept is not None and stamp[1] is not _UNKNOWN and kept.generation == stamp[1]


class AuthCache:
    """Thread-safe.  ``lookup`` by :meth:`key` gives the kept answer and the stamp a fresh
    one is ``put`` with (read before the registry is asked: ``put`` keeps nothing if a
    write came in between, here or on another replica, since a slow answer from before a
    commit would otherwise outlive the commit's ``forget``).  ``get`` is ``lookup``'s
    answer and ``epoch`` a stamp for one gateway.  ``shared``: the replicas' state
    (state/shared.py), whose generations make a write through one replica drop the
    answers of all.  ``clock`` is for tests (default ``time.monotonic``)."""

    def __init__(
        self,
        ttl: float = AUTH_CACHE_TTL,
        max_items: int = MAX_ANSWERS,
        clock: Callable[[], float] = time.monotonic,
        shared: Shared | None = None,
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
        # Also with ttl 0: this replica's writes must still drop the others' answers.
        self._shared = shared if shared is not None and shared.replicated else None
        self._shared_retry = 0.0
        self._clock = clock
        # Keys being asked of the registry: set when answered, and since when (monotonic).
        self._asking: dict[tuple[bytes, str, str, str], tuple[threading.Event, float]] = {}

    @property
    def enabled(self) -> bool:
        return self._answers is not None

    @property
    def epoch(self) -> Stamp:
        """A stamp without a generation: good for one gateway; with replicas nothing is
        kept with it (use ``lookup`` or ``stamp``)."""
        return (self._epoch, None if self._shared is None else _UNKNOWN)

    def stamp(self, repository: str) -> Stamp:
        """What an answer about ``repository`` that is asked of the registry now is
        ``put`` with."""
        epoch = self._epoch  # before the generation: a write meanwhile moves one of them
        return (epoch, self._generation(repository))

    def _generation(self, repository: str) -> object:
        if self._shared is None:
            return None
        if self._clock() < self._shared_retry:
            return _UNKNOWN
        read = GENERATIONS.get()
        try:
            if read is not None and repository in read:
                if isinstance(kept := read[repository], SharedStateUnavailableError):
                    raise kept
                return _UNKNOWN if kept is None else kept
            generation = self._shared.generation(repository)
            if read is not None:
                read[repository] = generation
            return _UNKNOWN if generation is None else generation  # keep nothing under none
        except SharedStateUnavailableError as exc:
            self._shared_retry = self._clock() + SHARED_RETRY
            log.warning("authorization cache: %s; every request asks the registry", exc)
            return _UNKNOWN

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

    def lookup(self, key: tuple[bytes, str, str, str]) -> tuple[Any, Stamp]:
        """The kept answer (None: none, expired, the cache is off, or the repository was
        written since, through this replica or another) and the stamp to ``put`` a fresh
        one with."""
        if self._answers is None:
            return None, (self._epoch, _UNKNOWN)
        stamp = self.stamp(key[1])
        with self._lock:
            kept = self._answers.get(key)
        return (kept.answer if _current(kept, stamp) else None), stamp

    def served(self, key: tuple[bytes, str, str, str]) -> Any:
        """``get`` for the download lane, which answers from kept answers only: the first
        time an answer past ``REFRESH_AT`` of its ttl is served, ``REFRESH_DUE`` is set, for
        the lane to have the registry asked again (``put`` replaces it) before it ends."""
        if self._answers is None:
            return None
        stamp = self.stamp(key[1])
        with self._lock:
            kept = self._answers.get(key)
            if not _current(kept, stamp):
                return None
            if not kept.refresh_claimed and self._clock() - kept.since >= self.ttl * REFRESH_AT:
                kept.refresh_claimed = True  # one asker per answer
                REFRESH_DUE.set(True)
        return kept.answer

    def answer(
        self, key: tuple[bytes, str, str, str], ask: Callable[[], Any], fresh: bool = False
    ) -> Any:
        """The kept answer, else ``ask()``'s (the registry's), kept.  Concurrent misses of
        ``key`` ask once: the others wait for that answer and ask themselves if it kept
        nothing; one still waiting ``ASK_WAIT`` s after it was asked (a registry request
        stuck) asks in its place, the others waiting for it in turn.  ``fresh``: ask even
        if an answer is kept."""
        if fresh:
            return self._asked(key, ask, self.stamp(key[1]))
        while True:
            kept, stamp = self.lookup(key)
            if kept is not None:
                return kept
            if self._answers is None or stamp[1] is _UNKNOWN:  # nothing would be kept to share
                return self._asked(key, ask, stamp)
            now = time.monotonic()  # not the TTL's clock: a wait must end in real time
            mine = (threading.Event(), now)
            with self._lock:
                asking = self._asking.get(key)
                if asking is None or asking[1] + ASK_WAIT <= now:  # none, or stuck: this one
                    self._asking[key] = asking = mine
            if asking is mine:
                try:
                    return self._asked(key, ask, stamp)
                finally:
                    with self._lock:
                        if self._asking.get(key) is mine:
                            del self._asking[key]
                    mine[0].set()
            if asking[0].wait(asking[1] + ASK_WAIT - now):
                kept, stamp = self.lookup(key)
                return kept if kept is not None else self._asked(key, ask, stamp)
            # not answered ASK_WAIT s after it was asked: the next turn asks in its place

    def _asked(self, key: tuple[bytes, str, str, str], ask: Callable[[], Any], stamp: Stamp) -> Any:
        answer = ask()
        self.put(key, answer, stamp)
        return answer

    def get(self, key: tuple[bytes, str, str, str]) -> Any:
        """The kept answer, or None (see ``lookup``)."""
        return self.lookup(key)[0]

    def put(self, key: tuple[bytes, str, str, str], answer: Any, stamp: Stamp) -> None:
        """Keep the registry's yes (never None) unless a write came after ``stamp``."""
        if self._answers is None or answer is None or stamp[1] is _UNKNOWN:
            return
        with self._lock:
            if stamp[0] == self._epoch:
                self._answers[key] = _Kept(answer, stamp[1], self._clock())

    def forget(self, repository: str) -> None:
        """Drop every answer about ``repository`` (its tags moved through this gateway),
        and every answer being fetched right now (see ``put``); with replicas, theirs too
        (a new generation).  Never raises: the write it follows is done."""
        with self._lock:
            self._epoch += 1
            if self._answers is not None:
                for key in [k for k in self._answers if k[1] == repository]:
                    self._answers.pop(key, None)
        if self._shared is not None:
            try:
                self._shared.new_generation(repository)
            except SharedStateUnavailableError as exc:
                log.warning("authorization cache: %s; other replicas may serve answers about "
                            "%s kept before this write for up to %g s", exc, repository,
                            AUTH_CACHE_TTL_MAX)  # fmt: skip

    def __len__(self) -> int:
        if self._answers is None:
            return 0
        with self._lock:
            self._answers.expire()
            return len(self._answers)
