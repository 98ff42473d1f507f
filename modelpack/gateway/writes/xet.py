"""A Xet CAS endpoint for uploads, so huggingface_hub with hf_xet uploads as it does to
the hub: each file a shard describes is put back together from its xorbs and pushed
to the registry as a blob (its sha256 = the raw layer a commit then names).

The client asks ``/api/models/REPO/xet-write-token/REV`` (with its hub token: the
gateway checks push rights at the registry) and gets a CAS URL under this gateway
and an opaque access token standing for the request's credentials.  hf_xet then
sends ``GET /v1/chunks/default/HASH`` (global dedup: always 404 here), ``POST
/v1/xorbs/default/HASH`` (chunks; kept in the node cache) and ``POST /v1/shards``
(the files).

The threat: anyone with push rights to some repository gets a token, xorbs are named
by the client, and a shard is a list of chunk ranges.  Unchecked, xorbs are one
namespace for every user (stored under a name they do not hash to, replaced by the
next upload, probed through ``was_inserted``, named in user B's shard to publish user
A's bytes into B's repository), and a few kilobytes of shard repeating one chunk make
the gateway spool and push terabytes.  So a xorb is kept only under the Merkle hash
of its chunks and never replaced; what a client sent is recorded in its *scope* (its
credentials and the repository its token was issued for: tokens come and go, hf_xet
asks again when one expires) and ``was_inserted`` answers for that scope alone; a
shard may use the xorbs its scope sent, or chunk ranges already published as a file
in a repository the same credentials can read (asked at the registry); and each file
is measured from the chunk headers before a byte is spooled, bounded by
``xet_file_max``, by the sizes preupload announced and by the token's
``xet_session_max``, then hashed and published only if its sha256 is the one declared.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import itertools
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ...errors import AuthenticationError, DiskFullError, ModelpackError, NotFoundError
from ...oci.spec import Descriptor
from ...registry.client import RegistryClient, RegistryRepository
from ...storage.diskspace import disk_full_errors, require_space
from ..core.config import GatewayConfig
from ..core.http import Request, Response
from ..core.hub import HubError
from ..state.access import Clients
from ..state.spools import claimed_folder, sweep
from ..state.ttlmap import TTLMap
from .xetformat import (
    FileInfo,
    Term,
    XetFormatError,
    XorbIndex,
    index_xorb,
    parse_shard,
    read_chunks,
    xorb_hash,
)

log = logging.getLogger("modelpack.gateway")
TOKEN_TTL = 3600
MAX_SESSIONS = 1024  # Xet write tokens alive at once (one per upload; the oldest go first)
MAX_ANNOUNCED = 1 << 16  # lfs sizes remembered per scope (the oldest go first)
XORB_MAX = 80 * 1024 * 1024  # the spec caps serialized xorbs at 64 MiB
SHARD_MAX = 64 * 1024 * 1024  # xet-core's shard target size
HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")
PREFIX = ["api", "modelpack", "xet"]
OCTETS = "application/octet-stream"
# One answer whether the xorb is stored or not: the refusal is no oracle either.
NOT_YOURS = "the shard names xorb {}, never uploaded by this client for this repository"


@dataclass
class Scope:
    """What one client (its Authorization) sent for one repository."""

    xorbs: set[str] = field(default_factory=set)
    # The lfs file sizes preupload announced, newest last, at most MAX_ANNOUNCED: a
    # preupload may list 100,000 files, and a scope in use never expires.
    sizes: dict[int, None] = field(default_factory=dict)
    used: float = field(default_factory=time.time)


@dataclass
class Session:
    """One Xet token: its credentials, repository and scope, and what it has spent."""

    authorization: str | None
    repo_id: str
    expires: float
    scope: Scope
    received: int = 0  # xorb bytes
    published: int = 0  # bytes of the files its shards put together


class Xet:
    def __init__(self, config: GatewayConfig, clients: Clients) -> None:
        self.config = config
        self.clients = clients
        self.root = config.settings.home / "xet"
        # A new name: xorbs an older gateway kept unchecked are never trusted.
        self.store = self.root / "verified"
        self.spool = self.root / "spool"
        sweep(self.spool)  # files a killed worker left (state/spools.py)
        self.sessions: TTLMap[str, Session] = TTLMap(MAX_SESSIONS, TOKEN_TTL)
        self._scopes: dict[tuple[str | None, str], Scope] = {}
        self._lock = threading.Lock()

    # -- the hub side -----------------------------------------------------------

    def write_token(self, request: Request, repo_id: str, base: str) -> Response:
        """What the hub answers: JSON (hf_xet reads it) and the same in headers
        (huggingface_hub reads those)."""
        token = secrets.token_urlsafe(32)
        expires = int(time.time()) + TOKEN_TTL
        authorization = request.header("Authorization")
        with self._lock:
            scope = self._scope(authorization, repo_id)
        self.sessions.set(token, Session(authorization, repo_id, expires, scope))
        url = f"{base}/{'/'.join(PREFIX)}"
        headers = {
            "X-Xet-Cas-Url": url,
            "X-Xet-Access-Token": token,
            "X-Xet-Token-Expiration": str(expires),
        }
        return Response.json({"accessToken": token, "exp": expires, "casUrl": url}, 200, headers)

    def announce(self, authorization: str | None, repo_id: str, sizes: list[int]) -> None:
        """Preupload's lfs file sizes: a shard of this scope may publish only those."""
        if sizes:
            with self._lock:
                known = self._scope(authorization, repo_id).sizes
                for size in sizes[-MAX_ANNOUNCED:]:
                    known.pop(size, None)
                    known[size] = None
                for size in list(itertools.islice(known, max(0, len(known) - MAX_ANNOUNCED))):
                    del known[size]

    def _scope(self, authorization: str | None, repo_id: str) -> Scope:
        """The scope of these credentials and repository (under the lock); idle scopes
        go after a token's lifetime, so a live token's scope is always kept."""
        now = time.time()
        for key in [k for k, s in self._scopes.items() if s.used + TOKEN_TTL < now]:
            del self._scopes[key]
        scope = self._scopes.setdefault((authorization, repo_id), Scope())
        scope.used = now
        return scope

    # -- the CAS side -----------------------------------------------------------

    def route(self, request: Request) -> tuple[str, Response] | None:
        s = request.segments
        if s[: len(PREFIX)] != PREFIX:
            return None
        rest = s[len(PREFIX) :]
        xorb = rest[:3] == ["v1", "xorbs", "default"] and len(rest) == 4
        route = "xet-xorb" if xorb else "xet-shard" if rest == ["v1", "shards"] else "xet"
        # The audit trail names the token's user, never the token (the Authorization here).
        request.audit.update(route=route, credentials=None)
        session = self._session(request)
        request.audit.update(credentials=session.authorization, repo=session.repo_id)
        if rest[:2] == ["v1", "chunks"] and len(rest) == 4:  # prefix default(-merkledb)
            raise HubError(404, "no global deduplication on this gateway")
        if xorb and request.method == "POST":
            request.audit["digest"] = rest[3]
            return "xet-xorb", self._xorb(request, session, rest[3])
        if rest == ["v1", "shards"] and request.method == "POST":
            return "xet-shard", self._shard(request, session)
        raise HubError(404, "Not Found")

    def _session(self, request: Request) -> Session:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        session = self.sessions.get(token.strip()) if scheme.lower() == "bearer" else None
        if session is not None:
            with self._lock:
                session.scope.used = time.time()
        if session is None or session.expires < time.time():
            raise HubError(401, "unknown or expired Xet token; ask xet-write-token again")
        return session

    def _body(self, request: Request, limit: int) -> bytes:
        try:
            length = int(request.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise HubError(413, f"over {limit} bytes")
        stream = request.environ["wsgi.input"]
        data = stream.read(length) if length else stream.read(limit + 1)
        if len(data) > limit:
            raise HubError(413, f"over {limit} bytes")
        return data

    def _xorb(self, request: Request, session: Session, name: str) -> Response:
        """Kept only when its chunks hash to ``name``, and never over a stored copy
        (the same chunks, maybe compressed otherwise: the first stays)."""
        if not HASH_RE.match(name):
            raise HubError(400, "a xorb hash is 64 hex digits")
        spent = session.received
        left = self.config.xet_session_max - spent
        self.store.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=self.store, prefix=".part-") as part:
            try:
                # The node cache keeps its reserve: xorbs are kept before any shard uses them.
                require_space(self.store, XORB_MAX, "a xorb")
                with disk_full_errors(self.store, "a xorb"):
                    received = self._copy_body(request, part, min(XORB_MAX, left))
                    part.flush()
            except DiskFullError:
                raise HubError(507, "not enough space on the gateway for this xorb") from None
            finally:
                with self._lock:
                    session.received += part.tell()
            if received > left:
                raise HubError(413, self._spent("xorbs", spent + received))
            if received > XORB_MAX:
                raise HubError(413, f"a xorb is at most {XORB_MAX} bytes")
            try:
                computed = xorb_hash(part, index_xorb(part))
            except XetFormatError as exc:
                raise HubError(400, f"xorb {name}: {exc.message}") from None
            if computed != name:
                raise HubError(400, f"the xorb's chunks hash to {computed}, not {name}")
            with contextlib.suppress(FileExistsError):
                os.link(part.name, self.store / name)
        with self._lock:
            inserted = name not in session.scope.xorbs
            session.scope.xorbs.add(name)
        return Response.json({"was_inserted": inserted})

    def _spent(self, what: str, amount: int) -> str:
        return (
            f"this Xet token's {what} would come to {amount} bytes, over the gateway's "
            f"limit of {self.config.xet_session_max} per upload session (--xet-session-max)"
        )

    @staticmethod
    def _copy_body(request: Request, out: BinaryIO, limit: int) -> int:
        """The request body to ``out`` in pieces; stops one piece past ``limit`` and
        answers how many bytes it read (more than ``limit``: the body was too long)."""
        stream, total = request.environ["wsgi.input"], 0
        try:
            remaining = int(request.environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            remaining = -1
        if remaining > limit:
            return remaining
        while remaining != 0 and total <= limit:
            data = stream.read(1 << 20 if remaining < 0 else min(1 << 20, remaining))
            if not data:
                break
            total += len(data)
            out.write(data)
            remaining -= len(data) if remaining > 0 else 0
        return total

    def _shard(self, request: Request, session: Session) -> Response:
        data = self._body(request, SHARD_MAX)
        _, client = self.clients.for_header(session.authorization)
        repository = RegistryRepository(client, self.config.repository(session.repo_id))
        try:
            shard = _Shard(self, session, client)
            files = parse_shard(data)
            if any(info.sha256 is None for info in files):
                raise XetFormatError("a file of the shard has no sha256 (metadata extension)")
            # One file at a time, each sha256 once: a shard of 16,384 files naming one
            # file, or files that fail their sha256, costs one registry lookup, not one
            # per file before the first is checked.
            done: set[str] = set()
            for info in files:
                if info.sha256 in done:
                    continue
                done.add(str(info.sha256))
                if repository.exists(Descriptor(OCTETS, f"sha256:{info.sha256}", info.size)):
                    continue
                size = shard.measure(info)
                self._charge(session, size)
                self._publish(repository, info, size, shard)
        except XetFormatError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
            raise HubError(400, exc.message) from None
        except DiskFullError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise HubError(
                507, "not enough space on the gateway for a file of this shard"
            ) from None
        except ModelpackError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise HubError(502, "the registry refused a file of this shard") from None
        return Response.json({"result": 1})

    def _charge(self, session: Session, size: int) -> None:
        """Reserve ``size`` bytes of the token's budget before a byte of them is spooled."""
        with self._lock:
            if session.published + size > self.config.xet_session_max:
                raise HubError(413, self._spent("files", session.published + size))
            session.published += size

    def _publish(
        self, repository: RegistryRepository, info: FileInfo, size: int, shard: _Shard
    ) -> None:
        """Put the file together from its xorbs into a spool file, check its sha256,
        push it, and record which chunk ranges it published where."""
        hasher = hashlib.sha256()
        with (
            claimed_folder(self.spool, "file-") as work,
            open(work / "file", "w+b") as out,
            disk_full_errors(work, "a file of a Xet upload"),
        ):
            require_space(work, size, "a file of a Xet upload")
            with contextlib.ExitStack() as files:
                # A file may have 262,144 terms: the xorb a run of terms reads stays open
                # (one open at a time), not opened again per term.
                opened: tuple[str, BinaryIO] | None = None  # the xorb the last term read
                for term in info.terms:
                    if opened is None or opened[0] != term.xorb:
                        files.close()
                        opened = (
                            term.xorb,
                            files.enter_context(open(self.store / term.xorb, "rb")),
                        )
                    for chunk in read_chunks(
                        opened[1], shard.index(term.xorb), term.start, term.end
                    ):
                        hasher.update(chunk)
                        out.write(chunk)
            out.flush()
            if hasher.hexdigest() != info.sha256:
                raise XetFormatError("a file of the shard does not hash to its declared sha256")
            desc = Descriptor(OCTETS, f"sha256:{info.sha256}", size)
            if not repository.exists(desc):
                out.seek(0)
                repository.push(desc, out)
        self._record(shard.session.repo_id, desc, info.terms)

    # -- where chunk ranges were published ---------------------------------------

    def _record(self, repo_id: str, desc: Descriptor, terms: tuple[Term, ...]) -> None:
        """``published/XORB``: one JSON line per chunk range that is now part of a file
        in a repository, so a later upload may build on it where it can read that file."""
        folder = self.root / "published"
        folder.mkdir(parents=True, exist_ok=True)
        # Each file's ranges merged per xorb (at most one line per run of chunks), each
        # record file read once and appended to once: a file may have 262,144 terms, and
        # reading the growing record file per term (under the lock every Xet request
        # takes) was quadratic: hours for one 12 MiB shard.
        for xorb, ranges in _merged_ranges(terms).items():
            path = folder / xorb
            lines = [
                json.dumps(
                    {
                        "repo": repo_id,
                        "digest": desc.digest,
                        "size": desc.size,
                        "start": start,
                        "end": end,
                    },
                    sort_keys=True,
                )  # fmt: skip
                for start, end in ranges
            ]
            with self._lock:
                known = set(self._records(path))
                new = [line for line in lines if line not in known]
                if new:
                    with open(path, "a", encoding="utf-8") as out:
                        out.write("".join(line + "\n" for line in new))

    @staticmethod
    def _records(path: Path) -> list[str]:
        try:
            return path.read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []

    def published(self, xorb: str) -> list[dict]:
        """The chunk ranges of ``xorb`` published as files, as recorded."""
        found = []
        for line in self._records(self.root / "published" / xorb):
            with contextlib.suppress(ValueError):
                found.append(json.loads(line))
        return found


class _Shard:
    """One shard request: which xorbs its client may use, and their indexes."""

    def __init__(self, xet: Xet, session: Session, client: RegistryClient) -> None:
        self.xet = xet
        self.session = session
        self.client = client
        self._indexes: dict[str, XorbIndex] = {}
        self._readable: dict[tuple[str, str], bool] = {}
        self._covered: dict[str, list[list[int]]] = {}  # per xorb, once per shard

    def measure(self, info: FileInfo) -> int:
        """The file's size from the chunk headers of the xorbs it names (each term's
        declared size checked), refused past the limits before anything is spooled."""
        total, limit = 0, self.xet.config.xet_file_max
        for term in info.terms:
            if not self.may_use(term):
                raise XetFormatError(NOT_YOURS.format(term.xorb))
            size = self.index(term.xorb).size(term.start, term.end)
            if size != term.size:
                raise XetFormatError(
                    f"a term of the shard declares {term.size} bytes, its chunks hold {size}"
                )
            total += size
            if total > limit:
                raise HubError(
                    413, f"a file of the shard is over the gateway's per-file limit of "
                    f"{limit} bytes (--xet-file-max)")  # fmt: skip
        sizes = self.session.scope.sizes
        if sizes and total not in sizes:
            raise XetFormatError(f"a file of the shard is {total} bytes; preupload announced none")
        return total

    def index(self, xorb: str) -> XorbIndex:
        if xorb not in self._indexes:
            try:
                with open(self.xet.store / xorb, "rb") as stream:
                    self._indexes[xorb] = index_xorb(stream)
            except FileNotFoundError:
                raise XetFormatError(NOT_YOURS.format(xorb)) from None
        return self._indexes[xorb]

    def may_use(self, term: Term) -> bool:
        """A xorb this scope sent, or chunk ranges covered by files published in
        repositories these credentials can read (the registry is asked only about
        records that would extend the range covered so far)."""
        if term.xorb in self.session.scope.xorbs:
            return True
        covered = self._coverage(term.xorb)
        at = bisect.bisect_right(covered, [term.start, 1 << 62]) - 1
        return at >= 0 and covered[at][0] <= term.start and term.end <= covered[at][1]

    def _coverage(self, xorb: str) -> list[list[int]]:
        """The chunk ranges of ``xorb`` these credentials may use, merged and sorted:
        worked out once per shard (a shard may have millions of terms), the registry
        asked only about records that would add to what is covered so far."""
        if xorb in self._covered:
            return self._covered[xorb]
        records = sorted(
            ((_int(r.get("start")), _int(r.get("end")), r) for r in self.xet.published(xorb)),
            key=lambda item: (item[0], -item[1]),
        )
        merged: list[list[int]] = []
        for start, end, record in records:
            if start < 0 or end <= start:
                continue
            if merged and start <= merged[-1][1]:
                if end > merged[-1][1] and self._can_read(record):
                    merged[-1][1] = end
            elif self._can_read(record):
                merged.append([start, end])
        self._covered[xorb] = merged
        return merged

    def _can_read(self, record: dict) -> bool:
        repo, digest, size = record.get("repo"), record.get("digest"), record.get("size")
        if not isinstance(repo, str) or not isinstance(digest, str) or not isinstance(size, int):
            return False
        key = (repo, digest)
        if key not in self._readable:
            repository = RegistryRepository(self.client, self.xet.config.repository(repo))
            try:
                self._readable[key] = repository.exists(Descriptor(OCTETS, digest, size))
            except (AuthenticationError, NotFoundError):
                self._readable[key] = False
        return self._readable[key]


def _merged_ranges(terms: tuple[Term, ...]) -> dict[str, list[tuple[int, int]]]:
    """Each xorb's chunk ranges among ``terms``, overlapping and adjacent ones merged."""
    by_xorb: dict[str, list[tuple[int, int]]] = {}
    for term in terms:
        by_xorb.setdefault(term.xorb, []).append((term.start, term.end))
    merged: dict[str, list[tuple[int, int]]] = {}
    for xorb, ranges in by_xorb.items():
        out: list[list[int]] = []
        for start, end in sorted(ranges):
            if out and start <= out[-1][1]:
                out[-1][1] = max(out[-1][1], end)
            else:
                out.append([start, end])
        merged[xorb] = [(start, end) for start, end in out]
    return merged


def _int(value: object) -> int:
    return value if isinstance(value, int) else -1
