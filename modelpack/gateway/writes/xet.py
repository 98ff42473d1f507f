"""A Xet CAS endpoint for uploads, so huggingface_hub with hf_xet uploads as it does to
the hub: each file a shard describes is put back together from its xorbs and pushed
to the registry as a blob (its sha256 = the raw layer a commit then names).

The client asks ``/api/models/REPO/xet-write-token/REV`` (with its hub token: the
gateway checks push rights at the registry) and gets a CAS URL under this gateway
and an opaque access token standing for the request's credentials.  hf_xet then
sends ``GET /v1/chunks/default/HASH`` (global dedup: always 404 here), ``POST
/v1/xorbs/default/HASH`` (chunks; kept in the node cache, and with replicas also as a
registry blob, so the replica that gets the shard can fetch it) and ``POST /v1/shards``
(the files).  Tokens, scopes and published ranges are ``state/shared.py``'s: in this
process, or in Redis where replicas share them.

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
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import (
    AuthenticationError,
    DiskFullError,
    ModelpackError,
    NotFoundError,
    SharedStateUnavailableError,
)
from ...oci.digests import sha256_file
from ...oci.spec import Descriptor
from ...registry.client import RegistryClient, RegistryRepository
from ...storage.diskspace import disk_full_errors, require_space
from ..core.config import GatewayConfig
from ..core.http import Request, Response
from ..core.hub import HubError
from ..core.xetformat import (
    XORB_MAX,
    FileInfo,
    Term,
    XetFormatError,
    XorbIndex,
    chunk_hash,
    file_hash,
    index_xorb,
    parse_shard,
    read_chunks,
    xorb_hash,
)
from ..read.hub_errors import shared_state_guard
from ..read.xet import fetch_xorb, keep_blob_copy, record_reconstruction, trim_store
from ..state.access import Clients
from ..state.shared import MAX_SCOPE_XORBS, Shared, XetSession, scope_of
from ..state.spools import claimed_folder, sweep

log = logging.getLogger("modelpack.gateway")
SHARD_MAX = 64 * 1024 * 1024  # xet-core's shard target size
HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")
PREFIX = ["api", "modelpack", "xet"]
OCTETS = "application/octet-stream"
# One answer whether the xorb is stored or not: the refusal is no oracle either.
NOT_YOURS = "the shard names xorb {}, never uploaded by this client for this repository"


class Xet:
    """The CAS routes.  Sessions, scopes and published ranges are kept by ``shared``
    (state/shared.py: in this process, or in Redis for replicas); xorbs in the node cache
    (``xet/verified/``) and, when replicas share the state, as registry blobs in the
    repository their token was issued for, so any replica can put a file together."""

    def __init__(self, config: GatewayConfig, clients: Clients, shared: Shared) -> None:
        self.config = config
        self.clients = clients
        self.shared = shared
        self.root = config.settings.home / "xet"
        # A new name: xorbs an older gateway kept unchecked are never trusted.
        self.store = self.root / "verified"
        self.spool = self.root / "spool"
        sweep(self.spool)  # files a killed worker left (state/spools.py)

    # -- the hub side -----------------------------------------------------------

    def write_token(self, request: Request, repo_id: str, base: str) -> Response:
        """What the hub answers: JSON (hf_xet reads it) and the same in headers
        (huggingface_hub reads those)."""
        session = self.shared.new_session(request.header("Authorization"), repo_id)
        expires = int(session.expires)
        url = f"{base}/{'/'.join(PREFIX)}"
        headers = {
            "X-Xet-Cas-Url": url,
            "X-Xet-Access-Token": session.token,
            "X-Xet-Token-Expiration": str(expires),
        }
        document = {"accessToken": session.token, "exp": expires, "casUrl": url}
        return Response.json(document, 200, headers)

    def announce(self, authorization: str | None, repo_id: str, sizes: list[int]) -> None:
        """Preupload's lfs file sizes: a shard of this scope may publish only those."""
        self.shared.announce(scope_of(authorization, repo_id), sizes)

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
            return "xet-xorb", self._guarded(request, self._xorb, request, session, rest[3])
        if rest == ["v1", "shards"] and request.method == "POST":
            return "xet-shard", self._guarded(request, self._shard, request, session)
        raise HubError(404, "Not Found")

    @staticmethod
    def _guarded(request: Request, handler, *args) -> Response:  # noqa: ANN001
        with shared_state_guard(request):
            return handler(*args)

    def _session(self, request: Request) -> XetSession:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        token = token.strip()
        session = None
        if scheme.lower() == "bearer" and token:
            session = self._guarded(request, self.shared.session, token)
        if session is None:
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

    def _repository(self, session: XetSession, repo_id: str | None = None) -> RegistryRepository:
        _, client = self.clients.for_header(session.authorization)
        return RegistryRepository(client, self.config.repository(repo_id or session.repo_id))

    def _xorb(self, request: Request, session: XetSession, name: str) -> Response:
        """Kept only when its chunks hash to ``name``, and never over a stored copy
        (the same chunks, maybe compressed otherwise: the first stays).  With replicas,
        also a registry blob in the token's repository: the shard may reach another."""
        if not HASH_RE.match(name):
            raise HubError(400, "a xorb hash is 64 hex digits")
        self.store.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=self.store, prefix=".part-") as part:
            try:
                # The node cache keeps its reserve: xorbs are kept before any shard uses them.
                require_space(self.store, XORB_MAX, "a xorb")
                with disk_full_errors(self.store, "a xorb"):
                    received = self._copy_body(request, part, XORB_MAX, hasher)
                    part.flush()
            except DiskFullError:
                raise HubError(507, "not enough space on the gateway for this xorb") from None
            finally:
                # What was read counts, kept or not: a refused body is no free upload.
                total = self.shared.spend(session, "received", part.tell(), None)
            if total is None:
                raise HubError(401, "unknown or expired Xet token; ask xet-write-token again")
            if total > self.config.xet_session_max:
                raise HubError(413, self._spent("xorbs", total))
            if received > XORB_MAX:
                raise HubError(413, f"a xorb is at most {XORB_MAX} bytes")
            try:
                index = index_xorb(part)
                computed = xorb_hash(part, index)
            except XetFormatError as exc:
                raise HubError(400, f"xorb {name}: {exc.message}") from None
            if computed != name:
                raise HubError(400, f"the xorb's chunks hash to {computed}, not {name}")
            location = ""
            if self.shared.replicated:
                desc = Descriptor(OCTETS, f"sha256:{hasher.hexdigest()}", received)
                # Its chunk sizes, under the blob: replicas without it answer from those.
                self.shared.keep_xorb_index(desc.digest, index.packed())
                try:
                    self._push(self._repository(session), desc, Path(part.name))
                except ModelpackError as exc:
                    log.warning("%s %s: %s", request.method, request.path, exc)
                    raise HubError(502, "the registry refused this xorb") from None
                location = f"{desc.digest} {desc.size}"
                # These bytes, whatever copy of the xorb this replica had: what fetch URLs
                # naming this blob are signed over (read/xet.py's blob_copy).
                keep_blob_copy(Path(part.name), self.store, name, desc.digest)
            with contextlib.suppress(FileExistsError):
                os.link(part.name, self.store / name)
        if self.shared.replicated:  # every xorb kept is a registry blob too: trimmed
            trim_store(self.store, self.config.xet_cache_max)
        inserted = self.shared.keep_xorb(session.scope, name, location)
        if inserted is None:
            raise HubError(413, f"this client sent {MAX_SCOPE_XORBS} xorbs for this repository "
                           "within the hour, the most one upload may")  # fmt: skip
        return Response.json({"was_inserted": inserted})

    @staticmethod
    def _push(repository: RegistryRepository, desc: Descriptor, path: Path) -> None:
        if not repository.exists(desc):
            with open(path, "rb") as content:
                repository.push(desc, content)

    def _spent(self, what: str, amount: int | None = None) -> str:
        total = f"{amount} bytes" if amount is not None else "more"
        return (
            f"this Xet token's {what} would come to {total}, over the gateway's "
            f"limit of {self.config.xet_session_max} bytes per upload session (--xet-session-max)"
        )

    @staticmethod
    def _copy_body(request: Request, out: BinaryIO, limit: int, hasher: Any) -> int:
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
            hasher.update(data)
            remaining -= len(data) if remaining > 0 else 0
        return total

    def _shard(self, request: Request, session: XetSession) -> Response:
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
        except SharedStateUnavailableError:
            raise
        except ModelpackError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise HubError(502, "the registry refused a file of this shard") from None
        return Response.json({"result": 1})

    def _charge(self, session: XetSession, size: int) -> None:
        """Reserve ``size`` bytes of the token's budget before a byte of them is spooled."""
        limit = self.config.xet_session_max
        if self.shared.spend(session, "published", size, limit) is None:
            raise HubError(413, self._spent("files"))

    def _publish(
        self, repository: RegistryRepository, info: FileInfo, size: int, shard: _Shard
    ) -> None:
        """Put the file together from its xorbs into a spool file, check its sha256,
        push it, and record which chunk ranges it published where; and, when its chunks
        also hash to the Xet hash the shard declares, how to download it through Xet
        (read/xet.py)."""
        hasher = hashlib.sha256()
        leaves: list[tuple[bytes, int]] = []  # the chunks' Merkle leaves: the Xet hash
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
                            files.enter_context(open(shard.local(term.xorb), "rb")),
                        )
                    for chunk in read_chunks(
                        opened[1], shard.index(term.xorb), term.start, term.end
                    ):
                        hasher.update(chunk)
                        leaves.append(chunk_hash(chunk))
                        out.write(chunk)
            out.flush()
            if hasher.hexdigest() != info.sha256:
                raise XetFormatError("a file of the shard does not hash to its declared sha256")
            desc = Descriptor(OCTETS, f"sha256:{info.sha256}", size)
            if not repository.exists(desc):
                out.seek(0)
                repository.push(desc, out)
        blobs = self._record(shard, desc, info.terms)
        if file_hash(leaves) == info.file_hash and recordable(size, len(info.terms)):
            terms = [(t.xorb, t.start, t.end, t.size) for t in info.terms]
            record_reconstruction(self.shared, shard.session.repo_id, info.file_hash,
                                  str(info.sha256), size, terms, blobs)  # fmt: skip
        else:
            log.warning("a file of a shard (sha256 %s) does not hash to its declared Xet hash "
                        "%s: served over plain HTTP only", info.sha256, info.file_hash)  # fmt: skip

    # -- where chunk ranges were published ---------------------------------------

    def _record(
        self, shard: _Shard, desc: Descriptor, terms: tuple[Term, ...]
    ) -> dict[str, tuple[str, int]]:
        """One JSON line per chunk range that is now part of a file in a repository, so a
        later upload may build on it where it can read that file.  With replicas the line
        also names the xorb's blob in that repository (copied there if it came from
        another), where a replica without the xorb fetches it; those blobs are returned
        (xorb -> digest, size), for the file's Xet download record."""
        # Each file's ranges merged per xorb (at most one line per run of chunks): a file
        # may have 262,144 terms.
        blobs: dict[str, tuple[str, int]] = {}
        for xorb, ranges in _merged_ranges(terms).items():
            where = shard.blob_here(xorb) if self.shared.replicated else None
            if where:
                blobs[xorb] = where
            lines = [
                json.dumps(
                    {
                        "repo": shard.session.repo_id,
                        "digest": desc.digest,
                        "size": desc.size,
                        "start": start,
                        "end": end,
                        **({"xorb": where[0], "xorbSize": where[1]} if where else {}),
                    },
                    sort_keys=True,
                )  # fmt: skip
                for start, end in ranges
            ]
            self.shared.publish(xorb, lines)
        return blobs

    def published(self, xorb: str) -> list[dict]:
        """The chunk ranges of ``xorb`` published as files, as recorded."""
        found = []
        for line in self.shared.published(xorb):
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    found.append(record)
        return found


class _Shard:
    """One shard request: which xorbs its client may use, their indexes, and where a
    replica that lacks one fetches it."""

    def __init__(self, xet: Xet, session: XetSession, client: RegistryClient) -> None:
        self.xet = xet
        self.session = session
        self.client = client
        self._indexes: dict[str, XorbIndex] = {}
        self._readable: dict[tuple[str, str], bool] = {}
        self._covered: dict[str, list[list[int]]] = {}  # per xorb, once per shard
        self._sources: dict[str, list[tuple[str, str, int]]] = {}  # (repo, digest, size)
        self._own: dict[str, str | None] = {}

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
        if not self.xet.shared.announced(self.session.scope, total):
            raise XetFormatError(f"a file of the shard is {total} bytes; preupload announced none")
        return total

    def index(self, xorb: str) -> XorbIndex:
        if xorb not in self._indexes:
            with open(self.local(xorb), "rb") as stream:
                self._indexes[xorb] = index_xorb(stream)
        return self._indexes[xorb]

    def own(self, xorb: str) -> str | None:
        """Where this scope's copy of ``xorb`` is ("DIGEST SIZE", "" in this cache);
        None when the scope never sent it."""
        if xorb not in self._own:
            self._own[xorb] = self.xet.shared.xorb(self.session.scope, xorb)
        return self._own[xorb]

    def local(self, xorb: str) -> Path:
        """The xorb in this node cache: the same bytes a scope sent or a published file
        used, fetched from the registry when another replica received them."""
        path = self.xet.store / xorb
        if path.exists():
            return path
        candidates: list[tuple[str, str, int]] = []
        own = self.own(xorb)
        if own:
            digest, _, size = own.partition(" ")
            candidates.append((self.session.repo_id, digest, int(size)))
        self._coverage(xorb)
        candidates += self._sources.get(xorb, [])
        for repo, digest, size in candidates:
            with contextlib.suppress(ModelpackError, XetFormatError, OSError, ValueError):
                repository = RegistryRepository(self.client, self.xet.config.repository(repo))
                desc = Descriptor(OCTETS, digest, size)
                limit = self.xet.config.xet_cache_max if self.xet.shared.replicated else 0
                return fetch_xorb(repository, self.xet.store, xorb, desc, limit)
        raise XetFormatError(NOT_YOURS.format(xorb))

    def blob_here(self, xorb: str) -> tuple[str, int]:
        """The xorb as a blob of this session's repository (digest, size): its own copy,
        else the local one pushed there, so that whoever may read files published here
        can fetch what they are made of from here."""
        own = self.own(xorb)
        if own:
            digest, _, size = own.partition(" ")
            return digest, int(size)
        path = self.local(xorb)
        digest, size = sha256_file(str(path))
        self.xet._push(self.xet._repository(self.session), Descriptor(OCTETS, digest, size), path)
        keep_blob_copy(path, self.xet.store, xorb, digest)
        self.xet.shared.keep_xorb_index(digest, self.index(xorb).packed())
        return digest, size

    def may_use(self, term: Term) -> bool:
        """A xorb this scope sent, or chunk ranges covered by files published in
        repositories these credentials can read (the registry is asked only about
        records that would extend the range covered so far)."""
        if self.own(term.xorb) is not None:
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
                if end > merged[-1][1] and self._can_read(record, xorb):
                    merged[-1][1] = end
            elif self._can_read(record, xorb):
                merged.append([start, end])
        self._covered[xorb] = merged
        return merged

    def _can_read(self, record: dict, xorb: str) -> bool:
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
        readable = self._readable[key]
        source, source_size = record.get("xorb"), record.get("xorbSize")
        if readable and isinstance(source, str) and isinstance(source_size, int):
            # Where a replica that lacks the xorb fetches it, with the same credentials.
            self._sources.setdefault(xorb, []).append((repo, source, source_size))
        return readable


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


def recordable(size: int, terms: int) -> bool:
    """Whether a file of ``size`` bytes in ``terms`` terms is recorded for Xet downloads:
    hf_xet's chunks are at least 8 KiB (a file's last may be less), so a real file has at
    most about size / 8 KiB terms; a shard of many tiny terms would make every answer about
    the file cost the gateway dearly (it is still stored, and downloads over HTTP)."""
    return terms <= size // 4096 + 64
