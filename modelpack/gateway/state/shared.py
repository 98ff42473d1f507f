"""What gateway replicas share or agree on, behind one small interface.

Between the requests of one upload the gateway keeps: LFS upload tickets (an href's
authority: the batch request's credentials, for one blob), Xet sessions (a write token's
credentials, repository and spent budget) and their scopes (the xorbs a client sent for a
repository and where they are, the file sizes preupload announced), where xorb chunk
ranges were published as files, and who may move a branch right now.  Replicas also
agree on each repository's write generation (a commit through one drops the answers
every replica's authorization cache kept about it) and on the audit trail's key (one
identity token is named alike in every replica's lines).  For Xet downloads they share the
read tokens, the reconstruction records of files uploaded through Xet (how to download
them: read/xet.py) and the key fetch URLs are signed with.

``InProcess`` keeps them in this process (published ranges in the node cache): one
gateway that needs nothing beside the registry, the embedded default.  ``RedisShared``
(``serve --redis URL``) keeps them in Redis, so replicas behind a plain round-robin
balancer each answer any request of an upload, and a branch moves only under a lock that
Redis decides: a lease that its holder's heartbeat renews and that ends by itself when the
holder dies.  Content is never kept here: xorbs and LFS objects are registry blobs.

Redis holds what an upload session holds: the client's ``Authorization`` for up to an
hour (keys name a sha256 of tokens and credentials, never the secrets).  Keep it private
to the gateways (a password or ACL user in the URL, ``rediss://`` across hosts).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import itertools
import os
import secrets
import socket
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ...errors import LeaseLostError, SharedStateUnavailableError
from ...extras import require
from ...storage._fsutil import atomic_write_bytes
from ..core.config import GatewayConfig
from .ttlmap import TTLMap

TICKET_TTL = 3600.0
# Outstanding LFS upload tickets: huggingface_hub asks for 256 objects per batch, so
# this is 32 such batches at once; each holds an Authorization header (under 8 KiB).
MAX_TICKETS = 8192
TOKEN_TTL = 3600.0
MAX_SESSIONS = 1024  # Xet write tokens alive at once (one per upload; the oldest go first)
# Xet read tokens alive at once (huggingface_hub asks one per repo revision; the oldest go)
MAX_READERS = 4096
MAX_ANNOUNCED = 1 << 16  # lfs sizes remembered per scope (the oldest go first)
# Xorbs one scope may have sent: 16 TiB of 64 MiB xorbs (a 405B bf16 model is 13,000).
MAX_SCOPE_XORBS = 1 << 18
LEASE = 15.0  # seconds a branch lock outlives the last heartbeat of its holder
# Set for requests on the download lane's event loop (gateway/lane.py): they ask Redis
# with this timeout, and a request it cannot answer then goes back to the threads.
ON_LANE: ContextVar[bool] = ContextVar("on_lane", default=False)
LANE_TIMEOUT = 0.5
LOCK_WAIT = 300.0  # seconds a commit waits for another commit to the same branch
# Xet download records and xorb chunk sizes in Redis: each use keeps them this long again, so
# those of files nobody downloads (a deleted repository's among them) go by themselves.
RECORD_TTL = 30 * 24 * 3600.0
GENERATION_TTL = 3600.0  # a repository's write generation (over AUTH_CACHE_TTL_MAX)

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Ticket:
    """An LFS upload href's authority: the batch request's credentials, for one blob."""

    authorization: str | None
    repo_id: str
    oid: str
    size: int


@dataclass(frozen=True)
class XetSession:
    """One Xet write token: its credentials, repository and scope."""

    token: str
    authorization: str | None
    repo_id: str
    expires: float
    scope: str


@dataclass(frozen=True)
class ReadToken:
    """One Xet read token: the credentials it stands for, the repository and the commit
    it was asked for.  Kept under ``token_key(token)``, which fetch URLs may name."""

    authorization: str | None
    repo_id: str
    expires: float
    revision: str = ""


class Lease(ABC):
    """The right to move one branch.  ``confirm`` right before a registry write that moves
    it (raises unless still held, and then holds it for a whole lease from now);
    ``held`` after the writes: held then means nobody else held it in between."""

    fence: int = 0

    @abstractmethod
    def confirm(self) -> None: ...

    @abstractmethod
    def held(self) -> bool: ...


def scope_of(authorization: str | None, repo_id: str) -> str:
    """A scope's name: the repository and a hash of the credentials (never the secret)."""
    return f"{hashlib.sha256((authorization or '').encode()).hexdigest()[:32]}:{repo_id}"


def token_key(token: str) -> str:
    """What a token is kept under: its sha256, never the token."""
    return hashlib.sha256(token.encode()).hexdigest()


class Shared(ABC):
    """The interface; ``replicated`` says whether other processes see the same state
    (then content a later request needs must be in the registry, not in this cache)."""

    replicated = False

    # -- LFS upload tickets ------------------------------------------------------

    @abstractmethod
    def issue_ticket(self, ticket: Ticket) -> str:
        """A new opaque key for ``ticket``, good for TICKET_TTL; past MAX_TICKETS the
        oldest go first."""

    @abstractmethod
    def ticket(self, key: str) -> Ticket | None: ...

    @abstractmethod
    def ticket_used(self, key: str) -> None: ...

    # -- Xet sessions and scopes ---------------------------------------------------

    @abstractmethod
    def new_session(self, authorization: str | None, repo_id: str) -> XetSession:
        """A new token for these credentials and repository, good for TOKEN_TTL; past
        MAX_SESSIONS the oldest go first."""

    @abstractmethod
    def session(self, token: str) -> XetSession | None:
        """The live session of ``token`` (its scope then counts as in use)."""

    @abstractmethod
    def spend(self, session: XetSession, what: str, amount: int, limit: int | None) -> int | None:
        """Add ``amount`` to the session's ``what`` ("received", "published"), atomically;
        the new total, or None (and nothing added) when it would pass ``limit``."""

    @abstractmethod
    def keep_xorb(self, scope: str, name: str, location: str) -> bool | None:
        """Record that ``scope`` sent xorb ``name`` (kept at ``location``: "DIGEST SIZE" of
        its registry blob in the scope's repository, or "" in this cache).  True if new
        for the scope, False if it had it (the first location stays), None when the scope
        already holds MAX_SCOPE_XORBS."""

    @abstractmethod
    def xorb(self, scope: str, name: str) -> str | None:
        """The location ``scope`` recorded for xorb ``name``; None if it never sent it."""

    @abstractmethod
    def announce(self, scope: str, sizes: list[int]) -> None:
        """Preupload's lfs file sizes for this scope (the newest MAX_ANNOUNCED kept)."""

    @abstractmethod
    def announced(self, scope: str, size: int) -> bool:
        """Whether a file of ``size`` may be published: announced, or nothing was."""

    @abstractmethod
    def publish(self, xorb: str, lines: list[str]) -> None:
        """Record chunk ranges of ``xorb`` now part of a file (one JSON line each)."""

    @abstractmethod
    def published(self, xorb: str) -> list[str]: ...

    # -- Xet reads ---------------------------------------------------------------

    @abstractmethod
    def new_reader(self, token: str, reader: ReadToken) -> None:
        """Keep ``reader`` under ``token_key(token)`` for TOKEN_TTL; past MAX_READERS
        the oldest go first."""

    @abstractmethod
    def reader(self, key: str) -> ReadToken | None:
        """The live read token kept under ``key`` (``token_key`` of the token)."""

    @abstractmethod
    def keep_paths(self, repo_id: str, commit: str, paths: str) -> None:
        """A commit's files as JSON (sha256 -> path) for TOKEN_TTL: audit lines name them."""

    @abstractmethod
    def paths(self, repo_id: str, commit: str) -> str | None: ...

    @abstractmethod
    def keep_reconstruction(
        self, repo_id: str, file_hash: str, sha256: str, terms: str, file: str
    ) -> None:
        """A file's reconstruction record (JSON, under its Xet hash) and its summary (JSON,
        under its sha256), kept for good: the same bytes always chunk alike.  With
        replicas, per repository: the record names the blobs of ``repo_id``."""

    @abstractmethod
    def reconstruction(self, repo_id: str, file_hash: str) -> str | None: ...

    @abstractmethod
    def xet_file(self, repo_id: str, sha256: str) -> str | None: ...

    def fetch_key(self) -> bytes | None:
        """The key every replica signs Xet fetch URLs with; None where the node cache's
        own key file serves (one gateway)."""
        return None

    def keep_xorb_index(self, digest: str, packed: bytes) -> None:
        """The chunk sizes (``XorbIndex.packed``) of the xorb that is registry blob
        ``digest``, kept where replicas that lack it answer reconstructions from them; one
        gateway has the xorb itself."""
        return None

    def xorb_index(self, digest: str) -> bytes | None:
        return None

    # -- branches ----------------------------------------------------------------

    @abstractmethod
    def branch(self, repository: str, branch: str) -> contextlib.AbstractContextManager[Lease]:
        """Held while a commit reads a branch's head and moves it (and while a branch,
        tag or repository is created): one holder at a time, in all replicas."""

    # -- the authorization cache -------------------------------------------------

    def generation(self, repository: str) -> str | None:
        """The repository's write generation (state/authcache.py): a new one after every
        write through a replica, a random one made by the first read of a repository
        that has none (None only if Redis lost it again meanwhile).  One gateway keeps
        none (its cache drops the answers itself)."""
        return None

    def new_generation(self, repository: str) -> None:
        """A write through this replica moved ``repository``'s tags."""
        return None

    def generation_reader(self) -> Callable[[str], Awaitable[str | None]] | None:
        """``generation`` for an event loop (the download lane's), whose client connects
        in the loop that awaits it; None where there is nothing to ask (one gateway)."""
        return None

    # -- the audit trail ---------------------------------------------------------

    def audit_key(self) -> bytes | None:
        """The key every replica fingerprints identity tokens with in the audit trail
        (state/audit.py), so one token is named alike in every replica's lines; None
        where the node cache's own key file serves (one gateway)."""
        return None

    def check(self) -> None:
        """Raise SharedStateUnavailableError when the shared state cannot be reached."""
        return None


# -- one process ------------------------------------------------------------------


@dataclass
class _Scope:
    xorbs: dict[str, str] = field(default_factory=dict)
    # The lfs file sizes preupload announced, newest last, at most MAX_ANNOUNCED: a
    # preupload may list 100,000 files, and a scope in use never expires.
    sizes: dict[int, None] = field(default_factory=dict)
    used: float = field(default_factory=time.time)


@dataclass
class _Session:
    session: XetSession
    spent: dict[str, int] = field(default_factory=dict)


class _LocalLease(Lease):
    def confirm(self) -> None:
        return None

    def held(self) -> bool:
        return True


class InProcess(Shared):
    """Today's state of a single gateway: TTLMaps and dicts under a lock, threading locks
    per branch, published ranges as files under ``root`` (the node cache's ``xet/``,
    so they outlive a restart)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._tickets: TTLMap[str, Ticket] = TTLMap(MAX_TICKETS, TICKET_TTL)
        self._sessions: TTLMap[str, _Session] = TTLMap(MAX_SESSIONS, TOKEN_TTL)
        self._readers: TTLMap[str, ReadToken] = TTLMap(MAX_READERS, TOKEN_TTL)
        self._paths: TTLMap[tuple[str, str], str] = TTLMap(MAX_READERS, TOKEN_TTL)
        self._scopes: dict[str, _Scope] = {}
        self._branches: dict[tuple[str, str], threading.Lock] = {}
        self._lock = threading.Lock()

    def issue_ticket(self, ticket: Ticket) -> str:
        key = secrets.token_urlsafe(32)
        self._tickets.set(key, ticket)
        return key

    def ticket(self, key: str) -> Ticket | None:
        return self._tickets.get(key)

    def ticket_used(self, key: str) -> None:
        self._tickets.pop(key)

    def new_session(self, authorization: str | None, repo_id: str) -> XetSession:
        token = secrets.token_urlsafe(32)
        scope = scope_of(authorization, repo_id)
        session = XetSession(token, authorization, repo_id, time.time() + TOKEN_TTL, scope)
        with self._lock:
            self._scope(scope)
        self._sessions.set(token, _Session(session))
        return session

    def session(self, token: str) -> XetSession | None:
        found = self._sessions.get(token)
        if found is None or found.session.expires < time.time():
            return None
        with self._lock:
            self._scope(found.session.scope)
        return found.session

    def spend(self, session: XetSession, what: str, amount: int, limit: int | None) -> int | None:
        found = self._sessions.get(session.token)
        with self._lock:
            spent = found.spent if found is not None else {}
            total = spent.get(what, 0) + amount
            if limit is not None and total > limit:
                return None
            spent[what] = total
            return total

    def _scope(self, name: str) -> _Scope:
        """The scope ``name`` (under the lock); idle scopes go after a token's lifetime,
        so a live token's scope is always kept."""
        now = time.time()
        for key in [k for k, s in self._scopes.items() if s.used + TOKEN_TTL < now]:
            del self._scopes[key]
        scope = self._scopes.setdefault(name, _Scope())
        scope.used = now
        return scope

    def keep_xorb(self, scope: str, name: str, location: str) -> bool | None:
        with self._lock:
            xorbs = self._scope(scope).xorbs
            if name in xorbs:
                return False
            if len(xorbs) >= MAX_SCOPE_XORBS:
                return None
            xorbs[name] = location
            return True

    def xorb(self, scope: str, name: str) -> str | None:
        with self._lock:
            return self._scope(scope).xorbs.get(name)

    def announce(self, scope: str, sizes: list[int]) -> None:
        if not sizes:
            return
        with self._lock:
            known = self._scope(scope).sizes
            for size in sizes[-MAX_ANNOUNCED:]:
                known.pop(size, None)
                known[size] = None
            for size in list(itertools.islice(known, max(0, len(known) - MAX_ANNOUNCED))):
                del known[size]

    def announced(self, scope: str, size: int) -> bool:
        with self._lock:
            sizes = self._scope(scope).sizes
            return not sizes or size in sizes

    def publish(self, xorb: str, lines: list[str]) -> None:
        folder = self.root / "published"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / xorb
        with self._lock:
            known = set(self._read(path))
            new = [line for line in dict.fromkeys(lines) if line not in known]
            if new:
                with open(path, "a", encoding="utf-8") as out:
                    out.write("".join(line + "\n" for line in new))

    def published(self, xorb: str) -> list[str]:
        return self._read(self.root / "published" / xorb)

    @staticmethod
    def _read(path: Path) -> list[str]:
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def new_reader(self, token: str, reader: ReadToken) -> None:
        self._readers.set(token_key(token), reader)

    def reader(self, key: str) -> ReadToken | None:
        found = self._readers.get(key)
        return found if found is not None and found.expires >= time.time() else None

    def keep_paths(self, repo_id: str, commit: str, paths: str) -> None:
        self._paths.set((repo_id, commit), paths)

    def paths(self, repo_id: str, commit: str) -> str | None:
        return self._paths.get((repo_id, commit))

    def keep_reconstruction(
        self, repo_id: str, file_hash: str, sha256: str, terms: str, file: str
    ) -> None:
        # One gateway: its records name no blob (the xorbs are its own), so one record per
        # file serves every repository holding it.  Files in the node cache, as before
        # there was a choice: they outlive a restart.
        atomic_write_bytes(self.root / "reconstructions" / file_hash, terms.encode())
        atomic_write_bytes(self.root / "files" / sha256, file.encode())

    def reconstruction(self, repo_id: str, file_hash: str) -> str | None:
        return _text(self.root / "reconstructions" / file_hash)

    def xet_file(self, repo_id: str, sha256: str) -> str | None:
        return _text(self.root / "files" / sha256)

    @contextlib.contextmanager
    def branch(self, repository: str, branch: str) -> Iterator[Lease]:
        with self._lock:
            lock = self._branches.setdefault((repository, branch), threading.Lock())
        with lock:
            yield _LocalLease()


def _text(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, ValueError):
        return None


# -- replicas: Redis ----------------------------------------------------------------

# A record (hash) with a lifetime, listed in an index (sorted set, in the order records
# were put, by a counter) of at most ARGV[2] entries: past that the oldest go first (expired
# ones are the oldest, so they go before any live record).
# KEYS[1] index, KEYS[2] record, KEYS[3] counter; ARGV: ttl ms, cap, then field, value pairs.
_PUT_CAPPED = """
redis.call('HSET', KEYS[2], unpack(ARGV, 3))
redis.call('PEXPIRE', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[3]), KEYS[2])
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
if excess > 0 then
  local old = redis.call('ZPOPMIN', KEYS[1], excess)
  for i = 1, #old, 2 do redis.call('DEL', old[i]) end
end
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[3], ARGV[1])
return 1
"""

# KEYS[1] session; ARGV: field, amount, limit (-1: none).  -2: no session, -1: over.
_SPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -2 end
local total = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0') + tonumber(ARGV[2])
if tonumber(ARGV[3]) >= 0 and total > tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], string.format('%.0f', total))
return total
"""

# KEYS[1] the scope's xorbs; ARGV: name, location, cap, ttl ms.  1 new, 0 known, -1 full.
_KEEP_XORB = """
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] the scope's sizes (sorted set, by a counter); KEYS[2] the counter;
# ARGV: ttl ms, cap, then sizes.
_ANNOUNCE = """
for i = 3, #ARGV do
  redis.call('ZADD', KEYS[1], redis.call('INCR', KEYS[2]), ARGV[i])
end
redis.call('ZREMRANGEBYRANK', KEYS[1], 0, -tonumber(ARGV[2]) - 1)
redis.call('PEXPIRE', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[1])
return 1
"""


def _guarded(method: F) -> F:
    @functools.wraps(method)
    def call(self: RedisShared, *args: Any, **kwargs: Any) -> Any:
        with self.guard():
            return method(self, *args, **kwargs)

    return call  # type: ignore[return-value]


class RedisShared(Shared):
    """The same state in Redis, for replicas (docs/gateway.md, Running several replicas).
    Every key starts with ``prefix`` (the registry and namespace served), so gateways of
    other registries can share one Redis."""

    replicated = True

    def __init__(self, url: str, prefix: str, lease: float = LEASE) -> None:
        module = require("redis", purpose="serve --redis", extra="serve", package="redis")
        self.errors = (module.exceptions.RedisError, OSError)
        self.lock_errors = (module.exceptions.LockError,)
        self.threads_redis = module.Redis.from_url(
            url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30
        )
        self.lane_redis = module.Redis.from_url(
            url, socket_timeout=LANE_TIMEOUT, socket_connect_timeout=LANE_TIMEOUT,
            health_check_interval=30,
        )  # fmt: skip
        self.url = url
        kwargs = self.threads_redis.connection_pool.connection_kwargs
        self.where = kwargs.get("path") or f"{kwargs.get('host')}:{kwargs.get('port')}"
        self.prefix = f"modelpack:{prefix}:"
        self.lease = lease
        self._put = self.redis.register_script(_PUT_CAPPED)
        self._spend = self.redis.register_script(_SPEND)
        self._keep = self.redis.register_script(_KEEP_XORB)
        self._announce = self.redis.register_script(_ANNOUNCE)

    @property
    def redis(self) -> Any:
        """The client for this request: one that gives up after ``LANE_TIMEOUT`` on the
        download lane's event loop (``ON_LANE``), where a stalled Redis would hold every
        download of the process, else the threads' one."""
        return self.lane_redis if ON_LANE.get() else self.threads_redis

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Redis errors as the library's: one line, the request may be sent again."""
        try:
            yield
        except self.lock_errors:
            raise  # not an outage: the lease's own answer (confirm says what it means)
        except self.errors as exc:
            raise SharedStateUnavailableError(
                f"the gateways' shared state (Redis at {self.where}) did not answer: "
                f"{type(exc).__name__}",
                hint="check that Redis runs and --redis names it",
            ) from None

    @_guarded
    def fence(self) -> int:
        """A number that grows with every branch lock taken (a fencing token)."""
        return int(self.redis.incr(self._k("fence")))

    @_guarded
    def check(self) -> None:
        self.redis.ping()

    @_guarded
    def generation(self, repository: str) -> str | None:
        # None never stands for "no write yet": answers kept under it would match again
        # once Redis lost the key (a restart, a flush, an eviction) after a write.
        name = self._k("generation", repository)
        if (value := self.redis.get(name)) is None:
            self.redis.set(name, secrets.token_hex(8), nx=True, px=int(GENERATION_TTL * 1000))
            value = self.redis.get(name)  # whichever replica's SET came first
        return None if value is None else value.decode()

    def generation_reader(self) -> Callable[[str], Awaitable[str | None]]:
        client = require("redis.asyncio", purpose="serve --redis", extra="serve",
                         package="redis").Redis.from_url(
            self.url, socket_timeout=LANE_TIMEOUT, socket_connect_timeout=LANE_TIMEOUT
        )  # fmt: skip

        async def read(repository: str) -> str | None:
            name = self._k("generation", repository)
            with self.guard():
                if (value := await client.get(name)) is None:  # as ``generation``
                    fresh = secrets.token_hex(8)
                    await client.set(name, fresh, nx=True, px=int(GENERATION_TTL * 1000))
                    value = await client.get(name)
            return None if value is None else value.decode()

        return read

    @_guarded
    def new_generation(self, repository: str) -> None:
        # Random, not a counter: a Redis that lost its data cannot hand out an old value
        # again.  It outlives every answer kept under the one before it (at most
        # AUTH_CACHE_TTL_MAX seconds old), so an expired generation matches no answer.
        name = self._k("generation", repository)
        self.redis.set(name, secrets.token_hex(8), px=int(GENERATION_TTL * 1000))

    @_guarded
    def audit_key(self) -> bytes | None:
        return self._random_key("audit-key")

    def _random_key(self, what: str) -> bytes | None:
        """32 random bytes the first replica to ask puts there (SET NX), for good."""
        name = self._k(what)
        value = self.redis.get(name)
        if value is None:
            self.redis.set(name, secrets.token_bytes(32), nx=True)
            value = self.redis.get(name)
        return bytes(value) if value is not None and len(value) == 32 else None

    # -- tickets -------------------------------------------------------------------

    @_guarded
    def issue_ticket(self, ticket: Ticket) -> str:
        key = secrets.token_urlsafe(32)
        fields = {"authorization": ticket.authorization or "", "anonymous": int(not ticket.authorization),
                  "repo": ticket.repo_id, "oid": ticket.oid, "size": ticket.size}  # fmt: skip
        self._put_record(
            "tickets", self._k("ticket", token_key(key)), fields, TICKET_TTL, MAX_TICKETS
        )
        return key

    def _put_record(self, index: str, record: str, fields: dict, ttl: float, cap: int) -> None:
        pairs = [str(v) for item in fields.items() for v in item]
        keys = [self._k(index), record, self._k(index + "-n")]
        self._put(keys=keys, args=[int(ttl * 1000), cap, *pairs])

    @_guarded
    def ticket(self, key: str) -> Ticket | None:
        found = self._record(self._k("ticket", token_key(key)))
        if not found:
            return None
        try:
            return Ticket(None if found.get("anonymous") == "1" else found["authorization"],
                          found["repo"], found["oid"], int(found["size"]))  # fmt: skip
        except (KeyError, ValueError):
            return None

    def _record(self, key: str) -> dict[str, str]:
        raw = self.redis.hgetall(key)
        return {k.decode(): v.decode() for k, v in raw.items()}

    @_guarded
    def ticket_used(self, key: str) -> None:
        record = self._k("ticket", token_key(key))
        self.redis.delete(record)
        self.redis.zrem(self._k("tickets"), record)

    # -- Xet -----------------------------------------------------------------------

    @_guarded
    def new_session(self, authorization: str | None, repo_id: str) -> XetSession:
        token = secrets.token_urlsafe(32)
        scope = scope_of(authorization, repo_id)
        session = XetSession(token, authorization, repo_id, time.time() + TOKEN_TTL, scope)
        fields = {"authorization": authorization or "", "anonymous": int(not authorization),
                  "repo": repo_id, "expires": session.expires, "scope": scope}  # fmt: skip
        self._put_record("xet:sessions", self._k("xet:session", token_key(token)), fields,
                         TOKEN_TTL, MAX_SESSIONS)  # fmt: skip
        self._touch(scope)
        return session

    @_guarded
    def session(self, token: str) -> XetSession | None:
        found = self._record(self._k("xet:session", token_key(token)))
        try:
            session = XetSession(
                token,
                None if found.get("anonymous") == "1" else found["authorization"],
                found["repo"],
                float(found["expires"]),
                found["scope"],
            )
        except (KeyError, ValueError):
            return None
        if session.expires < time.time():
            return None
        self._touch(session.scope)
        return session

    def _touch(self, scope: str) -> None:
        """A scope in use lives a token's lifetime past its last use, as in one process."""
        with self.redis.pipeline(transaction=False) as pipe:
            for part in ("xorbs", "sizes", "sizes-n"):
                pipe.pexpire(self._k("xet:scope", scope, part), int(TOKEN_TTL * 1000))
            pipe.execute()

    @_guarded
    def spend(self, session: XetSession, what: str, amount: int, limit: int | None) -> int | None:
        key = self._k("xet:session", token_key(session.token))
        found = int(self._spend(keys=[key], args=[what, amount, -1 if limit is None else limit]))
        # -1: over the limit; -2: the session was dropped meanwhile (past MAX_SESSIONS)
        return None if found < 0 else found

    @_guarded
    def keep_xorb(self, scope: str, name: str, location: str) -> bool | None:
        key = self._k("xet:scope", scope, "xorbs")
        found = self._keep(keys=[key], args=[name, location, MAX_SCOPE_XORBS,
                                             int(TOKEN_TTL * 1000)])  # fmt: skip
        return None if found == -1 else bool(found)

    @_guarded
    def xorb(self, scope: str, name: str) -> str | None:
        value = self.redis.hget(self._k("xet:scope", scope, "xorbs"), name)
        return None if value is None else value.decode()

    @_guarded
    def announce(self, scope: str, sizes: list[int]) -> None:
        if not sizes:
            return
        keys = [self._k("xet:scope", scope, "sizes"), self._k("xet:scope", scope, "sizes-n")]
        for start in range(max(0, len(sizes) - MAX_ANNOUNCED), len(sizes), 4096):
            batch = sizes[start : start + 4096]
            self._announce(keys=keys, args=[int(TOKEN_TTL * 1000), MAX_ANNOUNCED, *batch])

    @_guarded
    def announced(self, scope: str, size: int) -> bool:
        key = self._k("xet:scope", scope, "sizes")
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.zcard(key)
            pipe.zscore(key, str(size))
            count, score = pipe.execute()
        return count == 0 or score is not None

    @_guarded
    def publish(self, xorb: str, lines: list[str]) -> None:
        if lines:
            self.redis.sadd(self._k("xet:published", xorb), *lines)

    @_guarded
    def published(self, xorb: str) -> list[str]:
        return sorted(m.decode() for m in self.redis.smembers(self._k("xet:published", xorb)))

    # -- Xet reads -------------------------------------------------------------------

    @_guarded
    def new_reader(self, token: str, reader: ReadToken) -> None:
        fields = {"authorization": reader.authorization or "",
                  "anonymous": int(not reader.authorization), "repo": reader.repo_id,
                  "expires": reader.expires, "revision": reader.revision}  # fmt: skip
        self._put_record("xet:readers", self._k("xet:reader", token_key(token)), fields,
                         TOKEN_TTL, MAX_READERS)  # fmt: skip

    @_guarded
    def reader(self, key: str) -> ReadToken | None:
        found = self._record(self._k("xet:reader", key))
        try:
            reader = ReadToken(None if found.get("anonymous") == "1" else found["authorization"],
                               found["repo"], float(found["expires"]), found["revision"])  # fmt: skip
        except (KeyError, ValueError):
            return None
        return reader if reader.expires >= time.time() else None

    @_guarded
    def keep_paths(self, repo_id: str, commit: str, paths: str) -> None:
        self.redis.set(self._k("xet:paths", repo_id, commit), paths, px=int(TOKEN_TTL * 1000))

    @_guarded
    def paths(self, repo_id: str, commit: str) -> str | None:
        value = self.redis.get(self._k("xet:paths", repo_id, commit))
        return None if value is None else value.decode()

    @_guarded
    def keep_reconstruction(
        self, repo_id: str, file_hash: str, sha256: str, terms: str, file: str
    ) -> None:
        # Per repository: a record names that repository's blobs.
        ttl = int(RECORD_TTL * 1000)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(self._k("xet:reconstruction", repo_id, file_hash), terms, px=ttl)
            pipe.set(self._k("xet:file", repo_id, sha256), file, px=ttl)
            pipe.execute()

    @_guarded
    def reconstruction(self, repo_id: str, file_hash: str) -> str | None:
        value = self.redis.getex(self._k("xet:reconstruction", repo_id, file_hash),
                                 px=int(RECORD_TTL * 1000))  # fmt: skip
        return None if value is None else value.decode()

    @_guarded
    def xet_file(self, repo_id: str, sha256: str) -> str | None:
        value = self.redis.getex(self._k("xet:file", repo_id, sha256), px=int(RECORD_TTL * 1000))
        return None if value is None else value.decode()

    @_guarded
    def fetch_key(self) -> bytes | None:
        return self._random_key("xet:fetch-key")

    @_guarded
    def keep_xorb_index(self, digest: str, packed: bytes) -> None:
        self.redis.set(self._k("xet:xorb-index", digest), packed, px=int(RECORD_TTL * 1000))

    @_guarded
    def xorb_index(self, digest: str) -> bytes | None:
        value = self.redis.getex(self._k("xet:xorb-index", digest), px=int(RECORD_TTL * 1000))
        return None if value is None else bytes(value)

    # -- branches ------------------------------------------------------------------

    @contextlib.contextmanager
    def branch(self, repository: str, branch: str) -> Iterator[Lease]:
        lease = _RedisLease(self, self._k("branch", repository, branch))
        lease.acquire()
        try:
            yield lease
        finally:
            lease.release()


class _RedisLease(Lease):
    """redis-py's Lock (SET NX PX, token-checked Lua for extend and release) as a lease:
    a heartbeat thread renews it every third of LEASE while the holder lives; a holder
    killed (SIGKILL, a lost node) stops renewing and the lock ends LEASE seconds later.
    The token carries a fencing number (INCR) and who holds it (host, pid)."""

    def __init__(self, shared: RedisShared, name: str) -> None:
        self.shared = shared
        self.name = name
        self.lock = shared.redis.lock(
            name, timeout=shared.lease, sleep=0.05, blocking_timeout=LOCK_WAIT,
            thread_local=False, raise_on_release_error=False,
        )  # fmt: skip
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def acquire(self) -> None:
        fence = self.shared.fence()
        token = f"{fence}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(8)}"
        with self.shared.guard():
            if not self.lock.acquire(token=token):
                raise LeaseLostError(
                    f"another commit to this branch has held it for over {LOCK_WAIT:.0f} s",
                    hint="try again later",
                )
        self.fence = fence
        self._beat = threading.Thread(target=self._renew, name="branch-lease", daemon=True)
        self._beat.start()

    def _renew(self) -> None:
        while not self._stop.wait(self.shared.lease / 3):
            with contextlib.suppress(Exception):  # a missed beat: the next one, or confirm
                self.lock.reacquire()

    def confirm(self) -> None:
        try:
            with self.shared.guard():
                self.lock.reacquire()  # token-checked: only while still ours, a whole lease
        except self.shared.lock_errors:
            raise LeaseLostError(
                "the lock on this branch ended before the commit moved it (this gateway "
                f"stalled for over {self.shared.lease:.0f} s); nothing was moved",
                hint="commit again",
            ) from None

    def held(self) -> bool:
        with self.shared.guard():
            return bool(self.lock.owned())

    def release(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        with contextlib.suppress(Exception):  # a lease that ended ends by itself
            self.lock.release()


def open_shared(config: GatewayConfig) -> Shared:
    """Redis when ``--redis`` names one (replicas), else this process's own state."""
    if config.redis:
        prefix = f"{config.host}/{config.namespace}" if config.namespace else config.host
        return RedisShared(config.redis, prefix)
    return InProcess(config.settings.home / "xet")
