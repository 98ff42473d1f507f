"""A Xet CAS endpoint for uploads, so huggingface_hub with hf_xet uploads as it does to
the hub: each file a shard describes is put back together from its xorbs and pushed
to the registry as a blob (its sha256 = the raw layer a commit then names).

The client asks ``/api/models/REPO/xet-write-token/REV`` (with its hub token: the
gateway checks push rights at the registry) and gets a CAS URL under this gateway
and an opaque access token standing for the request's credentials.  hf_xet then
sends ``GET /v1/chunks/default/HASH`` (global dedup: always 404 here), ``POST
/v1/xorbs/default/HASH`` (chunks; kept in the node cache) and ``POST /v1/shards``
(the files).  Xorb hashes are not
recomputed: what a commit publishes is checked by its sha256, computed here
while the file is put together.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import secrets
import tempfile
import time
from dataclasses import dataclass

from ..errors import ModelpackError
from ..oci.spec import Descriptor
from ..registry.client import RegistryRepository
from .access import Clients
from .config import GatewayConfig
from .http import Request, Response
from .hub import HubError
from .ttlmap import TTLMap
from .xetformat import FileInfo, XetFormatError, parse_shard, xorb_chunks

log = logging.getLogger("modelpack.gateway")
TOKEN_TTL = 3600
MAX_SESSIONS = 1024  # Xet write tokens alive at once (one per upload; the oldest go first)
XORB_MAX = 80 * 1024 * 1024  # the spec caps serialized xorbs at 64 MiB
SHARD_MAX = 64 * 1024 * 1024
HASH_RE = re.compile(r"^[0-9a-f]{64}$")
PREFIX = ["api", "modelpack", "xet"]


@dataclass(frozen=True)
class Session:
    authorization: str | None
    repo_id: str
    expires: float


class Xet:
    def __init__(self, config: GatewayConfig, clients: Clients) -> None:
        self.config = config
        self.clients = clients
        self.root = config.settings.home / "xet"
        self.sessions: TTLMap[str, Session] = TTLMap(MAX_SESSIONS, TOKEN_TTL)

    # -- the hub side -----------------------------------------------------------

    def write_token(self, request: Request, repo_id: str, base: str) -> Response:
        """What the hub answers: JSON (hf_xet reads it) and the same in headers
        (huggingface_hub reads those)."""
        token = secrets.token_urlsafe(32)
        expires = int(time.time()) + TOKEN_TTL
        self.sessions.set(token, Session(request.header("Authorization"), repo_id, expires))
        url = f"{base}/{'/'.join(PREFIX)}"
        headers = {
            "X-Xet-Cas-Url": url,
            "X-Xet-Access-Token": token,
            "X-Xet-Token-Expiration": str(expires),
        }
        return Response.json({"accessToken": token, "exp": expires, "casUrl": url}, 200, headers)

    # -- the CAS side -----------------------------------------------------------

    def route(self, request: Request) -> tuple[str, Response] | None:
        s = request.segments
        if s[: len(PREFIX)] != PREFIX:
            return None
        rest = s[len(PREFIX) :]
        session = self._session(request)
        if rest[:2] == ["v1", "chunks"] and len(rest) == 4:  # prefix default(-merkledb)
            raise HubError(404, "no global deduplication on this gateway")
        if rest[:3] == ["v1", "xorbs", "default"] and len(rest) == 4 and request.method == "POST":
            return "xet-xorb", self._xorb(request, rest[3])
        if rest == ["v1", "shards"] and request.method == "POST":
            return "xet-shard", self._shard(request, session)
        raise HubError(404, "Not Found")

    def _session(self, request: Request) -> Session:
        scheme, _, token = (request.header("Authorization") or "").partition(" ")
        session = self.sessions.get(token.strip()) if scheme.lower() == "bearer" else None
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

    def _xorb(self, request: Request, name: str) -> Response:
        if not HASH_RE.match(name):
            raise HubError(400, "a xorb hash is 64 hex digits")
        target = self.root / "xorbs" / name
        inserted = not target.exists()
        target.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=target.parent, prefix=".part-", delete=False) as out:
            try:
                self._copy_body(request, out, XORB_MAX)
            except BaseException:
                out.close()
                os.unlink(out.name)
                raise
        os.replace(out.name, target)  # content-addressed: a second copy is the same
        return Response.json({"was_inserted": inserted})

    @staticmethod
    def _copy_body(request: Request, out, limit: int) -> None:  # noqa: ANN001
        """The request body to ``out`` in pieces, refused past ``limit``."""
        stream, total = request.environ["wsgi.input"], 0
        try:
            remaining = int(request.environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            remaining = -1
        if remaining > limit:
            raise HubError(413, f"over {limit} bytes")
        while remaining != 0:
            data = stream.read(1 << 20 if remaining < 0 else min(1 << 20, remaining))
            if not data:
                break
            total += len(data)
            if total > limit:
                raise HubError(413, f"over {limit} bytes")
            out.write(data)
            remaining -= len(data) if remaining > 0 else 0

    def _shard(self, request: Request, session: Session) -> Response:
        data = self._body(request, SHARD_MAX)
        try:
            files = parse_shard(data)
            _, client = self.clients.for_header(session.authorization)
            repository = RegistryRepository(client, self.config.repository(session.repo_id))
            for info in files:
                self._publish(repository, info)
        except XetFormatError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc.message)
            raise HubError(400, exc.message) from None
        except ModelpackError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise HubError(502, "the registry refused a file of this shard") from None
        return Response.json({"result": 1})

    def _publish(self, repository: RegistryRepository, info: FileInfo) -> None:
        """Put the file together from its xorbs into a spool file, then push it; a
        file the repository has already (by the sha256 the shard declares) is left:
        hf_xet may name xorbs of earlier uploads for it without sending them."""
        if info.sha256 and repository.exists(
            Descriptor("application/octet-stream", f"sha256:{info.sha256}", info.size)
        ):
            return
        spool = self.root / "spool"
        spool.mkdir(parents=True, exist_ok=True)
        hasher = hashlib.sha256()
        with tempfile.NamedTemporaryFile(dir=spool, prefix="file-") as out:
            for term in info.terms:
                path = self.root / "xorbs" / term.xorb
                if not path.is_file():
                    raise XetFormatError(f"the shard names xorb {term.xorb}, never uploaded here")
                with open(path, "rb") as stream:
                    for chunk in xorb_chunks(stream, term.start, term.end):
                        hasher.update(chunk)
                        out.write(chunk)
            out.flush()
            size = out.tell()
            if info.sha256 and hasher.hexdigest() != info.sha256:
                raise XetFormatError("a file of the shard does not hash to its declared sha256")
            desc = Descriptor("application/octet-stream", "sha256:" + hasher.hexdigest(), size)
            if not repository.exists(desc):
                out.seek(0)
                repository.push(desc, out)
