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
pushed, the terms of its shard (``xet/files/SHA256``: the Xet hash, the size, the xorbs;
``xet/reconstructions/HASH``: the terms), but only after the file's sha256 *and* its Xet
hash (the Merkle hash of its chunks, spec/hashing.md) were computed from the chunks and
found to be the declared ones: a client cannot name its bytes by someone else's hash.
The xorbs are the ones kept in the node cache (``xet/verified/``).  A file without a
record (uploaded through LFS or inline, pulled with ``modelpack push``, or whose xorbs
were cleared) is served over plain HTTP only, as before; so are all files of a gateway
whose state is shared (``--redis``, ``--workers``): records and xorbs are this node's.
"""

from __future__ import annotations

import bisect
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
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from ...errors import AuthenticationError, NotFoundError
from ...oci.spec import Descriptor
from ...registry.client import RegistryRepository
from ..core.config import GatewayConfig
from ..core.http import ClosingFile, Request, Response, parse_range
from ..core.hub import HubError, is_dataset
from ..core.xetformat import FILE_TERMS_MAX, XetFormatError, XorbIndex, index_xorb
from ..state.access import Clients
from ..state.audit import node_key
from ..state.shared import Shared
from ..state.ttlmap import TTLMap
from .models import Model

log = logging.getLogger("modelpack.gateway")
PREFIX = ["api", "modelpack", "xet-read"]
HASH_RE = re.compile(r"^[0-9a-f]{64}\Z")
RANGE_RE = re.compile(r"^([0-9]{1,15})-([0-9]{1,15})\Z")
SIGNED_RE = re.compile(r"^[0-9a-f]{64}\Z")
TOKEN_TTL = 3600.0
MAX_TOKENS = 4096  # read tokens alive at once (huggingface_hub asks one per repo revision)
URL_TTL = 3600  # seconds a fetch URL is good for (hf_xet asks the reconstruction again)
FETCH_MAX = 80 * 1024 * 1024  # one signed range: at most a whole xorb (writes' XORB_MAX)
RECORDS_KEPT = 16  # reconstructions kept parsed (hf_xet asks 4 per GiB of a file)
INDEXES_KEPT = 256  # xorb chunk indexes kept (8,192 chunk offsets each at most)
CHECK_TTL = 60.0  # the registry's yes to "may this token read this file", kept this long
OCTETS = "application/octet-stream"
UNKNOWN = "no Xet file {} that this token may read"


@dataclass(frozen=True)
class ReadToken:
    authorization: str | None
    repo_id: str
    expires: float
    revision: str = ""  # the commit the token was asked for
    paths: dict[str, str] = field(default_factory=dict)  # sha256 -> a path, for audit lines


@dataclass(frozen=True)
class Reconstruction:
    """A file's terms in order and where each starts in the file (``starts[-1]``: size)."""

    file_hash: str
    sha256: str
    size: int
    terms: tuple[tuple[str, int, int, int], ...]  # (xorb, first chunk, end chunk, bytes)
    starts: tuple[int, ...]


# -- what writes/xet.py records -----------------------------------------------------------


def record_reconstruction(
    root: Path, file_hash: str, sha256: str, size: int, terms: list[tuple[str, int, int, int]]
) -> None:
    """Called once a file put together from a shard's terms was hashed to its declared
    sha256 and Xet hash: how to download it through Xet.  Written whole or not at all;
    the same bytes always chunk alike, so a later upload's terms may replace these."""
    xorbs = sorted({term[0] for term in terms})
    _write(root / "reconstructions" / file_hash, {"sha256": sha256, "size": size, "terms": terms})
    _write(root / "files" / sha256, {"hash": file_hash, "size": size, "xorbs": xorbs})


def _write(path: Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".part-", delete=False) as out:
        json.dump(document, out, separators=(",", ":"))
    os.replace(out.name, path)


class XetReads:
    """The read token, the reconstructions and the xorb ranges (see the module)."""

    def __init__(self, config: GatewayConfig, clients: Clients, shared: Shared) -> None:
        self.config = config
        self.clients = clients
        self.root = config.settings.home / "xet"
        self.store = self.root / "verified"  # writes/xet.py keeps the xorbs here
        # Records and xorbs are this node's: replicas (or workers) would send a client
        # to one that lacks them, so with shared state every file is plain HTTP.
        self.enabled = not shared.replicated
        self.tokens: TTLMap[str, ReadToken] = TTLMap(MAX_TOKENS, TOKEN_TTL)
        self.issued: TTLMap[tuple[str | None, str, str], str] = TTLMap(MAX_TOKENS, TOKEN_TTL)
        self.checked: TTLMap[tuple[str, str], bool] = TTLMap(MAX_TOKENS, CHECK_TTL)
        self._key: bytes | None = None
        self._records: OrderedDict[str, Reconstruction] = OrderedDict()
        self._indexes: OrderedDict[str, XorbIndex] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = node_key(self.root / "fetch.key")
        return self._key

    # -- the hub side ---------------------------------------------------------------

    def file_hash(self, sha256: str | None, size: int | None) -> str | None:
        """The Xet hash to offer for a file, when it was uploaded through Xet here and
        every xorb it is made of is still in the node cache; else None (plain HTTP)."""
        if not self.enabled or not sha256 or size is None:
            return None
        try:
            found = json.loads((self.root / "files" / sha256).read_text())
            file_hash, xorbs = found["hash"], found["xorbs"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if found.get("size") != size or not isinstance(file_hash, str):
            return None
        if not HASH_RE.match(file_hash) or not isinstance(xorbs, list):
            return None
        if not all(isinstance(x, str) and HASH_RE.match(x) and (self.store / x).is_file()
                   for x in xorbs):  # fmt: skip
            return None
        return file_hash

    def headers(self, request: Request, model: Model, sha256: str | None, size: int | None):
        """resolve's Xet headers for a file (none for a plain HTTP one)."""
        file_hash = self.file_hash(sha256, size)
        if file_hash is None:
            return {}
        # A dataset's id is datasets/ORG/NAME; its routes are /api/datasets/ORG/NAME
        # (/api/models/datasets/... names no repository: core/hub.py's api_repo_path).
        parts = model.repo_id.split("/")
        kind = "datasets" if is_dataset(model.repo_id) else "models"
        repo = "/".join(quote(part, safe="") for part in parts[kind == "datasets" :])
        url = f"{request.base_url(self.config)}/api/{kind}/{repo}/xet-read-token/{model.commit}"
        return {"X-Xet-Hash": file_hash, "Link": f'<{url}>; rel="xet-auth"'}

    def with_hashes(self, entries: list[dict]) -> list[dict]:
        """tree / paths-info entries, ``xetHash`` beside the ``lfs`` of Xet files."""
        for entry in entries:
            lfs = entry.get("lfs")
            if isinstance(lfs, dict) and (h := self.file_hash(lfs.get("oid"), lfs.get("size"))):
                entry["xetHash"] = h
        return entries

    def read_token(self, request: Request, model: Model) -> Response:
        """The model was opened with the request's credentials: they may read it."""
        if not self.enabled:
            raise HubError(404, "this gateway serves no Xet downloads (its state is shared)")
        # One token per credentials and revision while it has 10 minutes left: asking again
        # (hf_xet asks per file) neither fills the table nor drops another client's token.
        key = (request.header("Authorization"), model.repo_id, model.commit)
        issued = self.issued.get(key)
        found = self.tokens.get(issued) if issued else None
        if found is not None and found.expires > time.time() + 600:
            token, expires = issued, found.expires
        else:
            token = secrets.token_urlsafe(32)
            expires = time.time() + TOKEN_TTL
            paths = {f.sha256: f.path for f in (model.view.files or {}).values() if f.sha256}
            self.tokens.set(token, ReadToken(key[0], model.repo_id, expires, model.commit, paths))
            self.issued.set(key, token)
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
            return route, self._fetch(request, rest[2])
        if rest[:2] == ["v2", "reconstructions"]:
            # hf_xet asks v2 first and uses v1 after a 501 (remote_client.rs).
            raise HubError(501, "use /v1/reconstructions")
        if reconstruction:
            token = self._token(request)
            request.audit.update(credentials=token.authorization, repo=token.repo_id)
            return route, self._reconstruction(request, token, rest[2])
        raise HubError(404, "Not Found")

    def _token(self, request: Request) -> ReadToken:
        scheme, _, value = (request.header("Authorization") or "").partition(" ")
        found = self.tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if found is None or found.expires < time.time():
            raise HubError(401, "unknown or expired Xet token; ask xet-read-token again")
        return found

    def _reconstruction(self, request: Request, token: ReadToken, file_hash: str) -> Response:
        if not self.enabled or not HASH_RE.match(file_hash):
            raise HubError(404, UNKNOWN.format(file_hash))
        record = self._record(file_hash)
        # The same answer whether the hash is unknown or not this token's to read.
        if record is None or not self._may_read(token, record):
            raise HubError(404, UNKNOWN.format(file_hash))
        span = parse_range(request.header("Range"), record.size)  # past the end: 416
        first, last = span if span else (0, record.size - 1)
        # The file read, as a resolve GET is: its path, sha256 and the bytes asked for.
        request.audit.update(path=token.paths.get(record.sha256), revision=token.revision,
                             digest=f"sha256:{record.sha256}",
                             bytes=max(0, last - first + 1))  # fmt: skip
        if record.size == 0:
            return Response.json({"offset_into_first_range": 0, "terms": [], "fetch_info": {}})
        try:
            cas = f"{request.base_url(self.config)}/{'/'.join(PREFIX)}"
            return Response.json(self._answer(record, first, last, cas))
        except (OSError, XetFormatError) as exc:  # a xorb cleared since the HEAD
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise HubError(404, UNKNOWN.format(file_hash)) from None

    def _answer(self, record: Reconstruction, first: int, last: int, cas: str) -> dict:
        """The terms covering bytes ``first..last`` (inclusive), cut to whole chunks, and
        per xorb the merged chunk ranges with signed URLs of their bytes.

        Each xorb's index is read once per answer: a file's terms may cycle through more
        xorbs than INDEXES_KEPT, and asking the shared cache per term would then parse a
        xorb's (up to 8,192) chunk headers again for each of up to 262,144 terms."""
        indexes: dict[str, XorbIndex] = {}

        def index_of(xorb: str) -> XorbIndex:
            if xorb not in indexes:
                indexes[xorb] = self._index(xorb)
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
        fetch_info = {}
        for xorb, spans in ranges.items():
            index = indexes[xorb]
            fetch_info[xorb] = [
                {
                    "range": {"start": start, "end": end},
                    "url": self._url(
                        cas, xorb, index.offsets[start], index.offsets[end] - 1, expires
                    ),
                    "url_range": {"start": index.offsets[start], "end": index.offsets[end] - 1},
                }
                for start, end in _merged(spans)
            ]
        return {"offset_into_first_range": offset, "terms": terms, "fetch_info": fetch_info}

    def _url(self, cas: str, xorb: str, first: int, last: int, expires: int) -> str:
        signature = self._sign(xorb, first, last, expires)
        return f"{cas}/v1/fetch/{xorb}?r={first}-{last}&e={expires}&s={signature}"

    def _sign(self, xorb: str, first: int, last: int, expires: int) -> str:
        message = f"{xorb}:{first}:{last}:{expires}".encode()
        return hmac.new(self.key, message, hashlib.sha256).hexdigest()

    def _fetch(self, request: Request, xorb: str) -> Response:
        """A signed byte range of a xorb; the Range asked must lie inside it."""
        query = {name: (request.query.get(name) or [""])[-1] for name in ("r", "e", "s")}
        signed, expiry = RANGE_RE.match(query["r"]), query["e"]
        if (not HASH_RE.match(xorb) or not signed or not expiry.isdigit() or len(expiry) > 12
                or not SIGNED_RE.match(query["s"])):  # fmt: skip
            raise HubError(403, "not a signed Xet fetch URL")
        first, last, expires = int(signed.group(1)), int(signed.group(2)), int(expiry)
        if not hmac.compare_digest(self._sign(xorb, first, last, expires), query["s"]):
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
            file = ClosingFile(self.store / xorb, "r")
        except FileNotFoundError:
            raise HubError(404, f"xorb {xorb} is no longer on this gateway") from None
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

    # -- records, indexes and the registry's yes ---------------------------------------

    def _record(self, file_hash: str) -> Reconstruction | None:
        with self._lock:
            if file_hash in self._records:
                self._records.move_to_end(file_hash)
                return self._records[file_hash]
        try:
            found = json.loads((self.root / "reconstructions" / file_hash).read_text())
            sha256, size = str(found["sha256"]), int(found["size"])
            terms = tuple((str(x), int(s), int(e), int(n)) for x, s, e, n in found["terms"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if len(terms) > FILE_TERMS_MAX or not HASH_RE.match(sha256):
            return None
        starts = [0]
        for term in terms:
            starts.append(starts[-1] + term[3])
        if starts[-1] != size:
            return None
        record = Reconstruction(file_hash, sha256, size, terms, tuple(starts))
        with self._lock:
            self._records[file_hash] = record
            while len(self._records) > RECORDS_KEPT:
                self._records.popitem(last=False)
        return record

    def _index(self, xorb: str) -> XorbIndex:
        with self._lock:
            if xorb in self._indexes:
                self._indexes.move_to_end(xorb)
                return self._indexes[xorb]
        with open(self.store / xorb, "rb") as stream:
            index = index_xorb(stream)
        with self._lock:
            self._indexes[xorb] = index
            while len(self._indexes) > INDEXES_KEPT:
                self._indexes.popitem(last=False)
        return index

    def _may_read(self, token: ReadToken, record: Reconstruction) -> bool:
        """Whether the token's repository holds the file, asked at the registry with the
        token's credentials (kept CHECK_TTL seconds per token and file)."""
        key = (hashlib.sha256(f"{token.authorization}\0{token.repo_id}".encode()).hexdigest(),
               record.sha256)  # fmt: skip
        found = self.checked.get(key)
        if found is None:
            _, client = self.clients.for_header(token.authorization)
            repository = RegistryRepository(client, self.config.repository(token.repo_id))
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
