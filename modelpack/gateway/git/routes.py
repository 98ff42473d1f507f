"""Git over HTTP: ``git clone|fetch|pull|push http://GATEWAY/ORG/NAME`` (and ``/datasets/...``).

Git's smart HTTP protocol (``info/refs``, ``git-upload-pack``, ``git-receive-pack``) is
dulwich's: its handlers read the client's request and write the answer, over the repo that
objects.py builds for this client.  A push's ref updates go to push.py.  git-lfs downloads
the LFS files at ``{repo}.git/info/lfs/objects/{oid}`` (the batch API in writes/uploads.py
hands out those URLs): the registry's blob, read with the client's credentials, verified.
Git is only told about credentials by a ``401`` with ``WWW-Authenticate``; every refusal
after that is an ``ERR`` line or a rejected ref, which git prints.
"""

from __future__ import annotations

import functools
import io
import logging
import tempfile
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import AuthenticationError, ModelpackError
from ...oci.digests import VerifyingReader
from ...oci.spec import Descriptor
from ..core.config import GatewayConfig
from ..core.gitobjects import dulwich
from ..core.http import Request, Response
from ..core.hub import (
    HubError,
    canonical_repo_id,
    repo_not_found,
    repo_spans,
    valid_repo_segments,
)
from ..read.hub_errors import hub_error
from ..read.models import Resolver
from ..writes.uploads import OID_RE, Uploads, blob_size
from .objects import GitObjects, GitRepo
from .push import GitPush, PushRefused

if TYPE_CHECKING:
    from dulwich.server import DictBackend

log = logging.getLogger("modelpack.gateway")
SERVICES = ("git-upload-pack", "git-receive-pack")
FETCH_REQUEST_MAX = 16 << 20  # a fetch's wants and haves (after gzip)
PUSH_BYTES_MAX = 1 << 30  # a push's pack (LFS files are not in it)
# A pushed pack is inflated into memory (dulwich's MemoryRepo): each object, and all of them,
# are bounded by the sizes their headers declare (a delta's by the size it makes), checked on
# the spooled pack before dulwich reads it.  A file git holds as itself is at most
# --inline-max bytes here, a tree of 100,000 files a few MB.
PUSH_OBJECT_MAX = 64 << 20
PUSH_INFLATED_MAX = 1 << 30
SPOOL_MEMORY = 8 << 20
PUSH_REFS_MAX = 1000  # ref updates in one push
CHUNK = 1 << 20


class GitRoutes:
    def __init__(self, config: GatewayConfig, resolver: Resolver, uploads: Uploads) -> None:
        self.config = config
        self.objects = GitObjects(resolver)
        self.push = GitPush(uploads)
        self.uploads = uploads

    def route(self, request: Request) -> tuple[str, Response] | None:
        s = request.segments
        for n in repo_spans(s):
            if len(s) <= n:
                continue
            rest, repo = s[n:], [*s[: n - 1], s[n - 1].removesuffix(".git")]
            if rest == ["info", "refs"]:
                return "git", self._guard(request, repo, "GET", self.refs)
            if len(rest) == 1 and rest[0] in SERVICES:
                return "git", self._guard(request, repo, "POST", self.service, rest[0])
            lfs = len(rest) == 4 and rest[:3] == ["info", "lfs", "objects"]
            if lfs and s[n - 1].endswith(".git") and OID_RE.match(rest[3]):
                return "lfs-download", self._guard(request, repo, "GET", self.lfs_object, rest[3])
        return None

    def _guard(self, request: Request, repo: list[str], method: str, handler, *args) -> Response:  # noqa: ANN001
        repo_id = "/".join(repo)
        request.audit.update(repo=repo_id)
        if request.method != method:
            raise HubError(405, f"{request.method} is not allowed here", None, {"Allow": method})
        if not valid_repo_segments(repo) or canonical_repo_id(repo_id) != repo_id:
            raise repo_not_found(repo_id, "repo ids are lower case on this gateway")
        try:
            return handler(request, repo_id, *args)
        except AuthenticationError as exc:
            # git sends credentials (a URL's, a helper's) only when asked this way.
            raise HubError(
                401, exc.message, None, {"WWW-Authenticate": 'Basic realm="modelpack"'}
            ) from None
        except ModelpackError as exc:
            log.warning("%s %s: %s", request.method, request.path, exc)
            raise hub_error(exc, repo_id) from None

    # -- the protocol -------------------------------------------------------------------

    def refs(self, request: Request, repo_id: str) -> Response:
        service = (request.query.get("service") or [""])[-1]
        if service not in SERVICES:
            raise HubError(403, "this gateway speaks git's smart HTTP protocol only (git >= 1.6.6)")
        request.audit["route"] = "git-refs"
        out = io.BytesIO()
        proto = dulwich("protocol").ReceivableProtocol(io.BytesIO().read, out.write)
        proto.write_pkt_line(f"# service={service}\n".encode())
        proto.write_pkt_line(None)
        try:
            backend, _ = self._backend(request, repo_id, service, history=False)
        except HubError as exc:
            if exc.status in (401, 403, 404):  # git says: credentials, forbidden, not found
                raise
            proto.write_pkt_line(f"ERR {exc.message}".encode())  # git: "remote error: ..."
            return _answer(f"application/x-{service}-advertisement", out)
        handler = _handler(service)(backend, ["/"], proto, stateless_rpc=True, advertise_refs=True)
        handler.handle()
        return _answer(f"application/x-{service}-advertisement", out)

    def service(self, request: Request, repo_id: str, service: str) -> Response:
        if request.environ.get("CONTENT_TYPE") != f"application/x-{service}-request":
            raise HubError(
                415, f"a {service} request has Content-Type application/x-{service}-request"
            )
        request.audit["route"] = "git-push" if service == "git-receive-pack" else "git-fetch"
        backend, repo = self._backend(request, repo_id, service)
        limit = PUSH_BYTES_MAX if service == "git-receive-pack" else FETCH_REQUEST_MAX
        out = io.BytesIO()
        self.uploads.workdir.mkdir(parents=True, exist_ok=True)
        with tempfile.SpooledTemporaryFile(SPOOL_MEMORY, dir=self.uploads.workdir) as spool:
            body = _body(request, limit)
            if service == "git-receive-pack":
                body = _checked_push(body, max(PUSH_OBJECT_MAX, self.config.inline_max), spool)
            proto = dulwich("protocol").ReceivableProtocol(body.read, out.write)
            try:
                if service == "git-upload-pack":
                    server = dulwich("server")
                    server.UploadPackHandler(backend, ["/"], proto, stateless_rpc=True).handle()
                else:
                    known = frozenset(repo.commits)  # the commits git was shown
                    handler = _receive_handler()
                    handler(backend, ["/"], proto, self.push, request, repo_id, known).handle()
            except dulwich("errors").GitProtocolError as exc:  # not git's words, or cut short
                raise HubError(400, f"not a {service} request git sends: {exc}") from None
        return _answer(f"application/x-{service}-result", out)

    def _backend(
        self, request: Request, repo_id: str, service: str, history: bool = True
    ) -> tuple[DictBackend, GitRepo]:
        """The repo dulwich serves; ``history``: every object the refs reach (a fetch's
        pack, a push's base), else the refs' commits alone (``info/refs``)."""
        repository = self.uploads.repository(repo_id, request)
        tags = repository.user_tags()
        if service == "git-receive-pack":
            self.uploads.check_push(repository, request)
        elif not tags:
            raise repo_not_found(repo_id)
        authorization = request.header("Authorization")
        repo = self.objects.repo(repo_id, authorization, tags, history)
        if service == "git-upload-pack" and repo.skipped and not repo.commits:
            raise HubError(409, f"{repo_id} was not made through this hub: git serves the "
                           "commits made through its hub API or git push")  # fmt: skip
        return dulwich("server").DictBackend({"/": repo.repo}), repo

    # -- git-lfs downloads --------------------------------------------------------------

    def lfs_object(self, request: Request, repo_id: str, oid: str) -> Response:
        """The registry's blob ``sha256:oid`` of this repository, verified as it streams."""
        request.audit.update(route="lfs-download", path=oid, digest=f"sha256:{oid}")
        repository = self.uploads.repository(repo_id, request)
        probe = Descriptor("application/octet-stream", f"sha256:{oid}", 0)
        size = blob_size(repository, probe)
        if size is None:
            raise HubError(404, f"{repo_id}: no LFS object {oid}", "EntryNotFound")
        desc = Descriptor("application/octet-stream", probe.digest, size)

        def stream() -> Iterator[bytes]:
            with repository.fetch(desc) as raw:
                reader = VerifyingReader(raw, desc.digest, size, f"{repo_id} LFS object {oid}")
                while data := reader.read(CHUNK):
                    yield data
                reader.verify()

        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
        return Response(200, headers, stream(), source="registry")


@functools.cache
def _receive_handler() -> type:
    """dulwich's receive-pack, whose ref updates are hub commits (push.py); made on first
    use, as dulwich is imported then."""

    class Receive(dulwich("server").ReceivePackHandler):
        def __init__(
            self,
            backend,  # noqa: ANN001
            args,  # noqa: ANN001
            proto,  # noqa: ANN001
            push: GitPush,
            request: Request,
            repo_id: str,
            known: frozenset[str],
        ) -> None:
            super().__init__(backend, args, proto, stateless_rpc=True)
            self._push, self._request, self._repo_id = push, request, repo_id
            self._known = known

        def _receive_max_input_size(self) -> int | None:
            return PUSH_BYTES_MAX

        def _on_update(self, ref_name: bytes, old_sha: bytes, new_sha: bytes) -> bytes | None:
            try:
                commit = self._push.update(self._request, self._repo_id, self.repo.object_store,
                                           ref_name.decode("utf-8", "replace"), old_sha.decode(),
                                           new_sha.decode(), self._known)  # fmt: skip
            except PushRefused as exc:
                return str(exc).encode()
            except HubError as exc:
                return exc.message.encode()
            except ModelpackError as exc:
                log.warning("git push to %s %s: %s", self._repo_id, ref_name, exc)
                return hub_error(exc, self._repo_id).message.encode()
            self._request.audit.update(revision=ref_name.decode(), commit=commit)
            return None

    return Receive


def _handler(service: str) -> Any:
    server = dulwich("server")
    return server.UploadPackHandler if service == "git-upload-pack" else server.ReceivePackHandler


def _answer(content_type: str, out: io.BytesIO) -> Response:
    return Response(
        200, {"Content-Type": content_type, "Cache-Control": "no-cache"}, out.getvalue()
    )


class _Bounded:
    """A request body read as a stream, refused past ``limit`` bytes."""

    def __init__(self, stream: Any, limit: int) -> None:
        self.stream, self.left = stream, limit

    def read(self, n: int = -1) -> bytes:
        want = self.left + 1 if n is None or n < 0 else min(n, self.left + 1)
        data = self.stream.read(want) if want else b""
        self.left -= len(data)
        if self.left < 0:
            raise HubError(413, "the git request is larger than this gateway takes")
        return data


def _body(request: Request, limit: int) -> Any:
    """The request body, gunzipped when git sent it so (it does for large fetches), as a
    stream of at most ``limit`` bytes either way."""
    stream = _Bounded(request.environ["wsgi.input"], limit)
    if request.header("Content-Encoding") != "gzip":
        return stream
    return _Bounded(_Gunzip(stream), limit)


class _Gunzip:
    """A gzip stream read inflated, a bounded piece at a time."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.inflater, self.pending = (
            stream,
            zlib.decompressobj(16 + zlib.MAX_WBITS),
            b"",
        )

    def read(self, n: int = -1) -> bytes:
        n = CHUNK if n is None or n < 0 else max(1, n)  # _Bounded asks for at most limit + 1
        out = []
        while n > 0 and not self.inflater.eof:
            data = self.inflater.unconsumed_tail or self.stream.read(CHUNK)
            if not data:
                raise HubError(400, "the git request's gzip body ends early")
            try:
                piece = self.inflater.decompress(data, n)
            except zlib.error:
                raise HubError(400, "the git request's gzip body does not inflate") from None
            out.append(piece)
            n -= len(piece)
        return b"".join(out)


def _checked_push(body: Any, object_max: int, spool: Any) -> Any:
    """A receive-pack request (its commands, then its pack) spooled, once every object of
    the pack was found to inflate to at most ``object_max`` bytes and all of them to at most
    :data:`PUSH_INFLATED_MAX`: dulwich holds them all in memory.  A malformed pack is left
    for dulwich to refuse in git's words."""
    commands = io.BytesIO()
    for _ in range(PUSH_REFS_MAX + 1):  # the commands (pkt-lines) up to the flush
        size = body.read(4)
        commands.write(size)
        if len(size) < 4 or size == b"0000":
            break
        try:
            length = int(size, 16)
        except ValueError:
            break
        commands.write(body.read(max(0, length - 4)))
    else:
        raise HubError(413, f"more than {PUSH_REFS_MAX} refs in one push")
    while data := body.read(CHUNK):
        spool.write(data)
    spool.seek(0)
    refusal = None
    try:
        _check_pack(spool, object_max)
    except _Malformed:
        pass  # dulwich says what is wrong with it
    except _TooLarge as exc:
        refusal = str(exc)
    spool.seek(0)
    return _Joined(commands.getvalue(), spool, refusal)


class _Malformed(Exception):
    pass


class _TooLarge(OSError):
    """What dulwich answers as ``unpack <why>`` (git: ``remote unpack failed: <why>``)."""


def _varint(f: Any) -> int:
    value, shift = 0, 0
    while True:
        byte = f.read(1)
        if not byte or shift > 63:
            raise _Malformed
        value |= (byte[0] & 0x7F) << shift
        shift += 7
        if not byte[0] & 0x80:
            return value


def _check_pack(f: Any, object_max: int) -> None:
    header = f.read(12)
    if len(header) < 12 or header[:4] != b"PACK":
        raise _Malformed
    total = 0
    for _ in range(int.from_bytes(header[8:12], "big")):
        byte = f.read(1)
        if not byte:
            raise _Malformed
        kind, size, shift = (byte[0] >> 4) & 7, byte[0] & 0x0F, 4
        while byte[0] & 0x80:
            byte = f.read(1)
            if not byte or shift > 63:
                raise _Malformed
            size |= (byte[0] & 0x7F) << shift
            shift += 7
        if kind == 6:  # OFS_DELTA: the base's offset
            _varint(f)
        elif kind == 7:  # REF_DELTA: the base's id
            f.read(20)
        inflater, made, start = zlib.decompressobj(), 0, b""
        data = f.read(CHUNK)
        while True:
            if not data:
                raise _Malformed
            try:
                piece = inflater.decompress(data, CHUNK)
            except zlib.error:
                raise _Malformed from None
            made += len(piece)
            if len(start) < 20:
                start += piece[:20]
            if made > size:
                raise _Malformed  # more than its header says: dulwich refuses it
            if inflater.eof:
                f.seek(-len(inflater.unused_data), 1)
                break
            data = inflater.unconsumed_tail or f.read(CHUNK)
        makes = size
        if kind in (6, 7):  # a delta: the size of the object it makes, after its base's
            delta = io.BytesIO(start)
            _varint(delta)
            makes = max(size, _varint(delta))
        total += makes
        if makes > object_max or total > PUSH_INFLATED_MAX:
            raise _TooLarge(f"the pushed objects inflate to more than this gateway takes "
                            f"({object_max} bytes an object, {PUSH_INFLATED_MAX} in all): "
                            "track large files with git-lfs")  # fmt: skip


class _Joined:
    """``head`` bytes, then ``tail``'s; reading past ``head`` raises ``refusal`` if any."""

    def __init__(self, head: bytes, tail: Any, refusal: str | None = None) -> None:
        self.head, self.tail, self.refusal = io.BytesIO(head), tail, refusal

    def read(self, n: int = -1) -> bytes:
        data = self.head.read(n)
        if self.refusal and (n is None or n < 0 or len(data) < n):
            if data:
                return data
            raise _TooLarge(self.refusal)
        if n is None or n < 0:
            return data + self.tail.read()
        return data + self.tail.read(n - len(data)) if len(data) < n else data
