"""Xet downloads, for files that were uploaded through Xet (writes/xet.py), so
huggingface_hub with hf_xet downloads them as it does from the hub: by reconstruction,
fetching only the xorb byte ranges the file is made of.

What the hub does and this copies (huggingface_hub's ``file_download.py`` and
``utils/_xet.py``, xet-core's ``remote_client.rs`` and ``cas_types``):

- ``resolve`` (HEAD) of such a file answers ``X-Xet-Hash`` (the file's Xet hash) and
  ``Link: <.../api/models/REPO/xet-read-token/COMMIT>; rel="xet-auth"``; ``tree`` and
  ``paths-info`` name the hash as ``xetHash`` (huggingface_hub then skips the HEAD and asks
  the read token of the commit).
- ``GET /api/models/REPO/xet-read-token/REV`` (read rights: the model is opened with the
  client's credentials) answers a CAS URL (``/api/modelpack/xet-read`` here), an opaque
  token standing for those credentials and that repository, and its expiry, in headers
  and JSON as the write token.
- ``GET CAS/v1/reconstructions/HASH`` (Range: a byte range of the file, as hf_xet asks
  256 MiB at a time) answers the terms (xorb, chunk range, unpacked length) that cover the
  range, ``offset_into_first_range``, and per xorb the ``fetch_info`` URLs with the byte
  ranges of those chunks.  ``/v2/reconstructions`` is a 501: hf_xet then uses v1.
- A ``fetch_info`` URL is fetched without the token (hf_xet's plain HTTP client, the hub's
  presigned S3 URLs), so it carries its own authority: an HMAC (the node cache's
  ``xet/fetch.key``) over the xorb, the byte range and an expiry.  Its ``Range`` must lie
  inside the signed range.

What a reconstruction is made of: writes/xet.py records, for each file it put together and
pushed, the terms of its shard (how to download it: the Xet hash, the size, the xorbs and
the terms), but only after the file's sha256 *and* its Xet hash (the Merkle hash of its
chunks, spec/hashing.md) were computed from the chunks and found to be the declared ones:
a client cannot name its bytes by someone else's hash.  The records are kept by
``state/shared.py`` (the node cache, or Redis for replicas and workers), so are the read
tokens and the key fetch URLs are signed with.  The xorbs are the ones kept in the node
cache (``xet/verified/``); with replicas each is also a registry blob of the file's
repository (the record names it): a replica answers reconstructions from the blob's chunk
sizes in Redis, and one that lacks the blob when a fetch URL asks for it fetches it from
there, checked against its digest and its name (a fetch URL names the read token it was
made for, by its sha256, so that replica asks the registry with the token's credentials),
keeps it as ``XORB.DIGEST`` and answers only from those bytes; ``--xet-cache-max`` bounds
what it keeps (``trim_store``).  A file without a record
(uploaded through LFS or inline, pulled with ``modelpack push``, or whose xorbs were
cleared from a single gateway) is served over plain HTTP only: serving it through Xet
would need Xet's content-defined chunker over its bytes, which hf_xet does not expose.
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from ...errors import (
    AuthenticationError,
    ModelpackError,
    NotFoundError,
    SharedStateUnavailableError,
)
from ...oci.digests import VerifyingReader
from ...oci.spec import Descriptor
from ...registry.client import RegistryRepository
from ...storage.diskspace import require_space
from ..core.config import GatewayConfig
from ..core.http import ClosingFile, Request, Response, parse_range
from ..core.hub import HubError, is_dataset
from ..core.xetformat import (
    FILE_TERMS_MAX,
    XORB_MAX,
    XetFormatError,
    XorbIndex,
    index_xorb,
    xorb_hash,
)
from ..state.access import Clients
from ..state.audit import node_key
from ..state.shared import TOKEN_TTL, ReadToken, Shared, token_key
from ..state.ttlmap import TTLMap
from .hub_errors import shared_state_guard
from .models import Model

log = logging.getLogger("modelpack.gateway")
PREFIX = ["api", "modelpack", "xet-read"]
HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")
RANGE_RE = re.compile(r"^([0-9]{1,15})-([0-9]{1,15})\Z")
SIGNED_RE = re.compile(r"^[0-9a-f]{64}\Z")
BLOB_RE = re.compile(r"^sha256:[0-9a-f]{64}\Z")
MAX_TOKENS = 4096  # read tokens this process issued and hands out again
PATHS_MAX = 100_000  # a commit's files named in audit lines (past this: the digest only)
URL_TTL = 3600  # seconds a fetch URL is good for (hf_xet asks the reconstruction again)
FETCH_MAX = XORB_MAX  # one signed range: at most a whole xorb
RECORDS_KEPT = 16  # reconstructions kept parsed (hf_xet asks 4 per GiB of a file)
INDEXES_KEPT = 256  # xorb chunk indexes kept (8,192 chunk offsets each at most)
CHECK_TTL = 60.0  # the registry's yes to "may this token read this file", kept this long
# Whether a file is offered through Xet, kept this long per process: every resolve (each
# download's HEAD and GET) and every tree entry asks, which with replicas is a Redis call.
OFFER_TTL = 10.0
OCTETS = "application/octet-stream"
UNKNOWN = "no Xet file {} that this token may read"


@dataclass(frozen=True)
class Reconstruction:
    """A file's terms in order and where each starts in the file (``starts[-1]``: size)."""

    file_hash: str
    sha256: str
    size: int
    terms: tuple[tuple[str, int, int, int], ...]  # (xorb, first chunk, end chunk, bytes)
    starts: tuple[int, ...]
    blobs: dict[str, tuple[str, int]]  # xorb -> its registry blob in the repository (replicas)


# -- what writes/xet.py records -----------------------------------------------------------


def record_reconstruction(
    shared: Shared,
    repo_id: str,
    file_hash: str,
    sha256: str,
    size: int,
    terms: list[tuple[str, int, int, int]],
    blobs: dict[str, tuple[str, int]],
) -> None:
    """Called once a file put together from a shard's terms was hashed to its declared
    sha256 and Xet hash: how to download it through Xet from ``repo_id`` (``blobs``: where
    replicas find each xorb in that repository, empty for one gateway).  A later upload's
    terms may replace these; with replicas only one to the same repository (the blobs are
    that repository's: another's upload of the same bytes names blobs this one lacks)."""
    xorbs = sorted({term[0] for term in terms})
    kept = {xorb: list(blobs[xorb]) for xorb in xorbs if xorb in blobs}
    compact = {"separators": (",", ":")}
    shared.keep_reconstruction(
        repo_id,
        file_hash,
        sha256,
        json.dumps({"sha256": sha256, "size": size, "terms": terms, "blobs": kept}, **compact),
        json.dumps({"hash": file_hash, "size": size, "xorbs": xorbs, "blobs": kept}, **compact),
    )


def blob_copy(store: Path, xorb: str, digest: str) -> Path:
    """Where the node cache keeps ``xorb`` as the bytes of registry blob ``digest``.  Two
    copies of one xorb may be serialized otherwise (compressed or not: both hash to its
    name) and ``store / xorb`` is whichever a replica got first, so with replicas a fetch
    URL, signed with byte offsets of its blob, is answered from this copy only."""
    return store / f"{xorb}.{digest.removeprefix('sha256:')}"


def keep_blob_copy(path: Path, store: Path, xorb: str, digest: str) -> Path:
    """``path`` (a xorb whose bytes are blob ``digest``) also as its ``blob_copy``."""
    copy = blob_copy(store, xorb, digest)
    with contextlib.suppress(FileExistsError):
        os.link(path, copy)
    return copy


# One download of a xorb at a time (per lock): many fetch URLs of a xorb a replica lacks,
# asked at once, wait for the first download instead of each spooling 80 MiB more.
_FETCHING = [threading.Lock() for _ in range(64)]


def fetch_xorb(
    repository: RegistryRepository, store: Path, xorb: str, desc: Descriptor, limit: int
) -> Path:
    """A xorb's registry blob into the node cache's ``store`` (also as ``store / xorb`` when
    that is missing): its digest checked as it arrives, its chunks hashed again to its name
    before it is kept, then ``store`` trimmed to ``limit`` bytes.  Answers its
    ``blob_copy``."""
    if desc.size > XORB_MAX:
        raise XetFormatError(f"xorb {xorb} is over {XORB_MAX} bytes")
    copy = blob_copy(store, xorb, desc.digest)
    with _FETCHING[int(xorb[:8], 16) % len(_FETCHING)]:
        if copy.is_file():
            return copy
        store.mkdir(parents=True, exist_ok=True)
        require_space(store, desc.size, "a xorb")
        with tempfile.NamedTemporaryFile(dir=store, prefix=".part-") as part:
            with repository.fetch(desc) as stream:
                reader = VerifyingReader(stream, desc.digest, desc.size, f"xorb {xorb}")
                while data := reader.read(1 << 20):
                    part.write(data)
                reader.verify()
            part.flush()
            if xorb_hash(part, index_xorb(part)) != xorb:
                raise XetFormatError(f"the registry's copy of xorb {xorb} is not that xorb")
            with contextlib.suppress(FileExistsError):
                os.link(part.name, store / xorb)
            copy = keep_blob_copy(Path(part.name), store, xorb, desc.digest)
        trim_store(store, limit)
        return copy


def trim_store(store: Path, limit: int) -> int:
    """With replicas every xorb in ``store`` is also a registry blob, fetched again when
    needed: past ``limit`` bytes the least recently used go (a file's names together: a
    xorb and its blob copies are hard links), oldest first.  Answers the bytes freed."""
    if limit <= 0:
        return 0
    files: dict[int, tuple[int, float, list[str]]] = {}
    with contextlib.suppress(FileNotFoundError), os.scandir(store) as entries:
        for entry in entries:
            if entry.name.startswith("."):  # a download or upload being written
                continue
            with contextlib.suppress(FileNotFoundError):
                stat = entry.stat(follow_symlinks=False)
                files.setdefault(stat.st_ino, (stat.st_size, stat.st_mtime, []))[2].append(
                    entry.path
                )
    total = sum(size for size, _, _ in files.values())
    freed = 0
    for size, _, paths in sorted(files.values(), key=lambda item: item[1]):
        if total - freed <= limit:
            break
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
        freed += size
    return freed


def used(path: Path) -> None:
    """Mark a kept xorb as just used: ``trim_store`` removes the least recently used."""
    with contextlib.suppress(OSError):
        os.utime(path)


def _blobs(found: object) -> dict[str, tuple[str, int]]:
    """A record's ``blobs``, the malformed entries left out."""
    blobs: dict[str, tuple[str, int]] = {}
    if isinstance(found, dict):
        for xorb, where in found.items():
            if (HASH_RE.match(str(xorb)) and isinstance(where, list) and len(where) == 2
                    and isinstance(where[0], str) and BLOB_RE.match(where[0])
                    and isinstance(where[1], int) and 0 < where[1] <= XORB_MAX):  # fmt: skip
                blobs[xorb] = (where[0], where[1])
    return blobs


class XetReads:
    """The read token, the reconstructions and the xorb ranges (see the module)."""

    def __init__(self, config: GatewayConfig, clients: Clients, shared: Shared) -> None:
        self.config = config
        self.clients = clients
        self.shared = shared
        self.root = config.settings.home / "xet"
        self.store = self.root / "verified"  # writes/xet.py keeps the xorbs here
        # With replicas every kept xorb is a registry blob too: the store is trimmed.
        self.cache_max = config.xet_cache_max if shared.replicated else 0
        # The tokens this process issued, handed out again (token, expiry).
        self.issued: TTLMap[tuple[str | None, str, str], tuple[str, float]] = TTLMap(
            MAX_TOKENS, TOKEN_TTL
        )
        self.checked: TTLMap[tuple[str, str], bool] = TTLMap(MAX_TOKENS, CHECK_TTL)
        # (repo, sha256, size) -> the Xet hash offered, "" for none (plain HTTP).
        self.offered: TTLMap[tuple[str, str, int], str] = TTLMap(MAX_TOKENS, OFFER_TTL)
        self._key: bytes | None = None
        self._key_read = 0.0  # time.monotonic() when the key was last read
        self._records: OrderedDict[str, Reconstruction] = OrderedDict()
        self._indexes: OrderedDict[str, XorbIndex] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def key(self) -> bytes:
        """The key fetch URLs are signed with, as last read."""
        return self._key if self._key is not None else self._read_key()

    def _read_key(self) -> bytes:
        """The key as the shared state has it now: after Redis lost its data (restarted
        without it, flushed) the next replica to ask puts a new one there, which a replica
        that read the old one must use as well (else each refuses the other's URLs)."""
        self._key = self.shared.fetch_key() or node_key(self.root / "fetch.key")
        self._key_read = time.monotonic()
        return self._key

    # -- the hub side ---------------------------------------------------------------

    def file_hash(self, sha256: str | None, size: int | None, repo_id: str) -> str | None:
        """The Xet hash to offer for a file of ``repo_id``, when it was uploaded through Xet
        (with replicas: to that repository) and every xorb it is made of is in the node
        cache or named in the registry; else None (plain HTTP, also while the shared state
        is out of reach).  Kept OFFER_TTL seconds: a file whose xorbs went meanwhile gets
        the 404 a reconstruction answers for a xorb gone since the HEAD."""
        if not sha256 or size is None or not HASH_RE.match(sha256):
            return None
        key = (repo_id, sha256, size)
        found = self.offered.get(key)
        if found is None:
            found = self._offer(sha256, size, repo_id) or ""
            self.offered.set(key, found)
        return found or None

    def _offer(self, sha256: str, size: int, repo_id: str) -> str | None:
        try:
            found = json.loads(self.shared.xet_file(repo_id, sha256) or "null")
            file_hash, xorbs = found["hash"], found["xorbs"]
        except (SharedStateUnavailableError, ValueError, KeyError, TypeError):
            return None
        if found.get("size") != size or not isinstance(file_hash, str):
            return None
        if not HASH_RE.match(file_hash) or not isinstance(xorbs, list):
            return None
        blobs = _blobs(found.get("blobs"))
        if not all(isinstance(x, str) and HASH_RE.match(x)
                   and (x in blobs or (self.store / x).is_file()) for x in xorbs):  # fmt: skip
            return None
        return file_hash

    def headers(self, request: Request, model: Model, sha256: str | None, size: int | None):
        """resolve's Xet headers for a file (none for a plain HTTP one)."""
        file_hash = self.file_hash(sha256, size, model.repo_id)
        if file_hash is None:
            return {}
        # A dataset's id is datasets/ORG/NAME; its routes are /api/datasets/ORG/NAME
        # (/api/models/datasets/... names no repository: core/hub.py's api_repo_path).
        parts = model.repo_id.split("/")
        kind = "datasets" if is_dataset(model.repo_id) else "models"
        repo = "/".join(quote(part, safe="") for part in parts[kind == "datasets" :])
        url = f"{request.base_url(self.config)}/api/{kind}/{repo}/xet-read-token/{model.commit}"
        return {"X-Xet-Hash": file_hash, "Link": f'<{url}>; rel="xet-auth"'}

    def with_hashes(self, entries: list[dict], repo_id: str) -> list[dict]:
        """tree / paths-info entries, ``xetHash`` beside the ``lfs`` of Xet files."""
        for entry in entries:
            lfs = entry.get("lfs")
            if isinstance(lfs, dict) and (
                h := self.file_hash(lfs.get("oid"), lfs.get("size"), repo_id)
            ):
                entry["xetHash"] = h
        return entries

    def read_token(self, request: Request, model: Model) -> Response:
        """The model was opened with the request's credentials: they may read it."""
        # One token per credentials and revision while it has 10 minutes left: asking again
        # (hf_xet asks per file) neither fills the table nor drops another client's token.
        key = (request.header("Authorization"), model.repo_id, model.commit)
        with shared_state_guard(request):
            issued = self.issued.get(key)
            if (issued is not None and issued[1] > time.time() + 600
                    and self.shared.reader(token_key(issued[0])) is not None):  # fmt: skip
                token, expires = issued
            else:
                token, expires = secrets.token_urlsafe(32), time.time() + TOKEN_TTL
                if self.shared.paths(model.repo_id, model.commit) is None:
                    paths = {f.sha256: f.path for f in (model.view.files or {}).values()
                             if f.sha256}  # fmt: skip
                    paths = dict(list(paths.items())[:PATHS_MAX])
                    self.shared.keep_paths(model.repo_id, model.commit, json.dumps(paths))
                reader = ReadToken(key[0], model.repo_id, expires, model.commit)
                self.shared.new_reader(token, reader)
                self.issued.set(key, (token, expires))
        url = f"{request.base_url(self.config)}/{'/'.join(PREFIX)}"
        headers = {
            "X-Xet-Cas-Url": url,
            "X-Xet-Access-Token": token,
            "X-Xet-Token-Expiration": str(int(expires)),
        }
        document = {"accessToken": token, "exp": int(expires), "casUrl": url}
        return Response.json(document, 200, headers)

    # -- the CAS side ---------------------------------------------------------------

    def route(self, request: Request) -> tuple[str, Response] | None:
        s = request.segments
        if s[: len(PREFIX)] != PREFIX:
            return None
        rest = s[len(PREFIX) :]
        fetch = rest[:2] == ["v1", "fetch"] and len(rest) == 3
        reconstruction = rest[:2] == ["v1", "reconstructions"] and len(rest) == 3
        # Only a reconstruction is a file read (a download line); anything else its own route.
        route = "xet-fetch" if fetch else "xet-reconstruction" if reconstruction else "xet-other"
        request.audit.update(route=route, credentials=None)
        if request.method not in ("GET", "HEAD"):
            raise HubError(405, f"{request.method} is not allowed here", None,
                           {"Allow": "GET, HEAD"})  # fmt: skip
        if fetch:
            request.audit["digest"] = rest[2]
            with shared_state_guard(request):
                return route, self._fetch(request, rest[2])
        if rest[:2] == ["v2", "reconstructions"]:
            # hf_xet asks v2 first and uses v1 after a 501 (remote_client.rs).
            raise HubError(501, "use /v1/reconstructions")
        if reconstruction:
            with shared_state_guard(request):
                token, reader = self._token(request)
                request.audit.update(credentials=reader.authorization, repo=reader.repo_id)
                return route, self._reconstruction(request, token, reader, rest[2])
        raise HubError(404, "Not Found")

    def _token(self, request: Request) -> tuple[str, ReadToken]:
        scheme, _, value = (request.header("Authorization") or "").partition(" ")
        value = value.strip()
        found = self.shared.reader(token_key(value)) if scheme.lower() == "bearer" else None
        if found is None:
            raise HubError(401, "unknown or expired Xet token; ask xet-read-token again")
        return value, found

    def _reconstruction(
        self, request: Request, token: str, reader: ReadToken, file_hash: str
    ) -> Response:
        if not HASH_RE.match(file_hash):
            raise HubError(404, UNKNOWN.format(file_hash))
        record = self._record(file_hash, reader.repo_id)
        # The same answer whether the hash is unknown or not this token's to read.
        if record is None or not self._may_read(reader, record):
            raise HubError(404, UNKNOWN.format(file_hash))
        span = parse_range(request.header("Range"), record.size)  # past the end: 416
        first, last = span if span else (0, record.size - 1)
        # The file read, as a resolve GET is: its path, sha256 and the bytes asked for.
        request.audit.update(path=self._path(reader, record.sha256), revision=reader.revision,
                             digest=f"sha256:{record.sha256}",
                             bytes=max(0, last - first + 1))  # fmt: skip
        if record.size == 0:
            return Response.json({"offset_into_first_range": 0, "terms": [], "fetch_info": {}})
        try:
            cas = f"{request.base_url(self.config)}/{'/'.join(PREFIX)}"
            return Response.json(self._answer(record, first, last, cas, token, reader))
        except (OSError, XetFormatError, ModelpackError) as exc:  # a xorb gone since the HEAD
            if isinstance(exc, SharedStateUnavailableError):
                raise
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise HubError(404, UNKNOWN.format(file_hash)) from None

    def _path(self, reader: ReadToken, sha256: str) -> str | None:
        try:
            found = json.loads(self.shared.paths(reader.repo_id, reader.revision) or "{}")
        except ValueError:
            return None
        path = found.get(sha256) if isinstance(found, dict) else None
        return path if isinstance(path, str) else None

    def _answer(
        self, record: Reconstruction, first: int, last: int, cas: str, token: str,
        reader: ReadToken,
    ) -> dict:  # fmt: skip
        """The terms covering bytes ``first..last`` (inclusive), cut to whole chunks, and
        per xorb the merged chunk ranges with signed URLs of their bytes.

        Each xorb's index is read once per answer: a file's terms may cycle through more
        xorbs than INDEXES_KEPT, and asking the shared cache per term would then parse a
        xorb's (up to 8,192) chunk headers again for each of up to 262,144 terms."""
        indexes: dict[str, XorbIndex] = {}

        def index_of(xorb: str) -> XorbIndex:
            if xorb not in indexes:
                indexes[xorb] = self._index(xorb, record.blobs.get(xorb), reader)
            return indexes[xorb]

        at = bisect.bisect_right(record.starts, first) - 1
        terms, ranges, offset = [], {}, 0
        while at < len(record.terms) and record.starts[at] <= last:
            xorb, start, end, _ = record.terms[at]
            index = index_of(xorb)
            base = record.starts[at] - index.unpacked[start]  # file position of chunk 0
            if record.starts[at] < first:  # the first term: from the chunk holding ``first``
                start = bisect.bisect_right(index.unpacked, first - base, start, end) - 1
                offset = first - base - index.unpacked[start]
            if record.starts[at + 1] - 1 > last:  # the last: to the chunk holding ``last``
                end = bisect.bisect_right(index.unpacked, last - base, start, end)
            size = index.unpacked[end] - index.unpacked[start]
            terms.append({"hash": xorb, "unpacked_length": size,
                          "range": {"start": start, "end": end}})  # fmt: skip
            ranges.setdefault(xorb, []).append([start, end])
            at += 1
        expires = int(time.time()) + URL_TTL
        self._read_key()  # signed with the key every replica reads now
        fetch_info = {}
        for xorb, spans in ranges.items():
            index = indexes[xorb]
            # Where a replica without the xorb finds it: the blob, read with this token's
            # credentials (the URL names the token by its sha256, never the token).
            blob = record.blobs.get(xorb)
            source = (blob[0].removeprefix("sha256:"), blob[1], token_key(token)) if blob else None
            fetch_info[xorb] = [
                {
                    "range": {"start": start, "end": end},
                    "url": self._url(
                        cas, xorb, index.offsets[start], index.offsets[end] - 1, expires, source
                    ),  # fmt: skip
                    "url_range": {"start": index.offsets[start], "end": index.offsets[end] - 1},
                }
                for start, end in _merged(spans)
            ]
        return {"offset_into_first_range": offset, "terms": terms, "fetch_info": fetch_info}

    def _url(self, cas: str, xorb: str, first: int, last: int, expires: int,
             source: tuple[str, int, str] | None) -> str:  # fmt: skip
        signature = self._sign(xorb, first, last, expires, source)
        url = f"{cas}/v1/fetch/{xorb}?r={first}-{last}&e={expires}&s={signature}"
        if source is not None:
            url += f"&b={source[0]}&n={source[1]}&g={source[2]}"
        return url

    def _sign(self, xorb: str, first: int, last: int, expires: int,
              source: tuple[str, int, str] | None) -> str:  # fmt: skip
        message = f"{xorb}:{first}:{last}:{expires}"
        if source is not None:
            message += ":{}:{}:{}".format(*source)
        return hmac.new(self.key, message.encode(), hashlib.sha256).hexdigest()

    def _fetch(self, request: Request, xorb: str) -> Response:
        """A signed byte range of a xorb; the Range asked must lie inside it."""
        names = ("r", "e", "s", "b", "n", "g")
        query = {name: (request.query.get(name) or [""])[-1] for name in names}
        signed, expiry = RANGE_RE.match(query["r"]), query["e"]
        if (not HASH_RE.match(xorb) or not signed or not expiry.isdigit() or len(expiry) > 12
                or not SIGNED_RE.match(query["s"])):  # fmt: skip
            raise HubError(403, "not a signed Xet fetch URL")
        source = None
        if query["b"] or query["n"] or query["g"]:
            if (not HASH_RE.match(query["b"]) or not HASH_RE.match(query["g"])
                    or not query["n"].isdigit() or len(query["n"]) > 12):  # fmt: skip
                raise HubError(403, "not a signed Xet fetch URL")
            source = (query["b"], int(query["n"]), query["g"])
        first, last, expires = int(signed.group(1)), int(signed.group(2)), int(expiry)
        if not hmac.compare_digest(self._sign(xorb, first, last, expires, source), query["s"]):
            # Signed with a key put in the shared state since this replica read it: read
            # again, at most once a second (a flood of forged URLs costs no more).
            if time.monotonic() - self._key_read < 1 or self._key == self._read_key():
                raise HubError(403, "not a signed Xet fetch URL")
            if not hmac.compare_digest(self._sign(xorb, first, last, expires, source),
                                       query["s"]):  # fmt: skip
                raise HubError(403, "not a signed Xet fetch URL")
        if expires < time.time():
            raise HubError(403, "this Xet fetch URL has expired; ask the reconstruction again")
        if last < first or last - first + 1 > FETCH_MAX:
            raise HubError(403, "not a signed Xet fetch URL")
        asked = _one_range(request.header("Range"))
        if asked is None:
            asked = (first, last)
        if not first <= asked[0] <= asked[1] <= last:
            raise HubError(416, f"the Range must lie within bytes {first}-{last}", None,
                           {"Content-Range": f"bytes */{last + 1}"})  # fmt: skip
        try:
            path = self._local(xorb, source)
            file = ClosingFile(path, "r")
        except FileNotFoundError:
            raise HubError(404, f"xorb {xorb} is no longer on this gateway") from None
        if self.cache_max:
            used(path)
        size = os.fstat(file.fileno()).st_size
        if asked[1] >= size:
            file.close()
            raise HubError(416, "past the xorb's end", None, {"Content-Range": f"bytes */{size}"})
        headers = {
            "Content-Type": OCTETS,
            "Content-Range": f"bytes {asked[0]}-{asked[1]}/{size}",
            "Cache-Control": "private, max-age=0",
        }
        length = asked[1] - asked[0] + 1
        return Response(206, headers, file=file, offset=asked[0], length=length, source="xet")

    def _local(self, xorb: str, source: tuple[str, int, str] | None) -> Path:
        """The xorb in the node cache: with replicas the copy that is the signed URL's
        registry blob (the bytes it was signed over), fetched with its read token's
        credentials when this replica lacks it."""
        if source is None:
            return self.store / xorb
        path = blob_copy(self.store, xorb, source[0])
        if path.is_file():
            return path
        reader = self.shared.reader(source[2])
        if reader is None:
            raise HubError(403, "this Xet fetch URL's token has expired; ask the "
                           "reconstruction again")  # fmt: skip
        try:
            return self._from_registry(xorb, (f"sha256:{source[0]}", source[1]), reader)
        except (ModelpackError, XetFormatError, OSError) as exc:
            if isinstance(exc, SharedStateUnavailableError):
                raise
            log.warning("xorb %s from the registry: %s", xorb, exc)
            raise HubError(404, f"xorb {xorb} is no longer on this gateway") from None

    def _from_registry(self, xorb: str, blob: tuple[str, int], reader: ReadToken) -> Path:
        _, client = self.clients.for_header(reader.authorization)
        repository = RegistryRepository(client, self.config.repository(reader.repo_id))
        desc = Descriptor(OCTETS, blob[0], blob[1])
        return fetch_xorb(repository, self.store, xorb, desc, self.cache_max)

    # -- records, indexes and the registry's yes ---------------------------------------

    def _record(self, file_hash: str, repo_id: str) -> Reconstruction | None:
        key = f"{repo_id}\0{file_hash}"
        with self._lock:
            if key in self._records:
                self._records.move_to_end(key)
                return self._records[key]
        try:
            found = json.loads(self.shared.reconstruction(repo_id, file_hash) or "null")
            sha256, size = str(found["sha256"]), int(found["size"])
            terms = tuple((str(x), int(s), int(e), int(n)) for x, s, e, n in found["terms"])
        except (ValueError, KeyError, TypeError):
            return None
        if len(terms) > FILE_TERMS_MAX or not HASH_RE.match(sha256):
            return None
        starts = [0]
        for term in terms:
            starts.append(starts[-1] + term[3])
        if starts[-1] != size:
            return None
        blobs = _blobs(found.get("blobs"))
        record = Reconstruction(file_hash, sha256, size, terms, tuple(starts), blobs)
        with self._lock:
            self._records[key] = record
            while len(self._records) > RECORDS_KEPT:
                self._records.popitem(last=False)
        return record

    def _index(self, xorb: str, blob: tuple[str, int] | None, reader: ReadToken) -> XorbIndex:
        """The chunk offsets fetch URLs are signed with: of the record's blob with replicas
        (``blob_copy``: the bytes any replica answers them from), else of the one copy."""
        path = self.store / xorb if blob is None else blob_copy(self.store, xorb, blob[0])
        with self._lock:
            if path.name in self._indexes:
                self._indexes.move_to_end(path.name)
                return self._indexes[path.name]
        # The blob's chunk sizes, kept by the replica that received or pushed it: a
        # reconstruction is answered without fetching the xorb first.
        packed = None if blob is None or path.is_file() else self.shared.xorb_index(blob[0])
        if packed is not None:
            index = XorbIndex.from_packed(packed)
        else:
            if not path.is_file() and blob is not None:
                path = self._from_registry(xorb, blob, reader)
            with open(path, "rb") as stream:
                index = index_xorb(stream)
        with self._lock:
            self._indexes[path.name] = index
            while len(self._indexes) > INDEXES_KEPT:
                self._indexes.popitem(last=False)
        return index

    def _may_read(self, reader: ReadToken, record: Reconstruction) -> bool:
        """Whether the token's repository holds the file, asked at the registry with the
        token's credentials (kept CHECK_TTL seconds per token and file)."""
        key = (hashlib.sha256(f"{reader.authorization}\0{reader.repo_id}".encode()).hexdigest(),
               record.sha256)  # fmt: skip
        found = self.checked.get(key)
        if found is None:
            _, client = self.clients.for_header(reader.authorization)
            repository = RegistryRepository(client, self.config.repository(reader.repo_id))
            try:
                found = repository.exists(
                    Descriptor(OCTETS, f"sha256:{record.sha256}", record.size)
                )
            except (AuthenticationError, NotFoundError):
                found = False
            self.checked.set(key, found)
        return found


def _merged(spans: list[list[int]]) -> list[tuple[int, int]]:
    out: list[list[int]] = []
    for start, end in sorted(spans):
        if out and start <= out[-1][1]:
            out[-1][1] = max(out[-1][1], end)
        else:
            out.append([start, end])
    return [(start, end) for start, end in out]


def _one_range(header: str | None) -> tuple[int, int] | None:
    """``bytes=A-B`` (both given) -> (A, B); None when absent; 416 for anything else."""
    if not header:
        return None
    kind, _, spec = header.strip().partition("=")
    match = RANGE_RE.match(spec.strip()) if kind.strip().lower() == "bytes" else None
    if not match or int(match.group(2)) < int(match.group(1)):
        raise HubError(416, "one range bytes=A-B is served here")
    return int(match.group(1)), int(match.group(2))
