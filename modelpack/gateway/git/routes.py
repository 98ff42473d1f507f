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
import zlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ...errors import AuthenticationError, ModelpackError
from ...oci.digests import VerifyingReader
from ...oci.spec import Descriptor
from ..core.config import GatewayConfig
from ..core.gitobjects import dulwich
from ..core.http import Request, Response
from ..core.hub import HubError, canonical_repo_id, repo_not_found, repo_spans, valid_repo_id
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
        if not valid_repo_id(repo_id) or canonical_repo_id(repo_id) != repo_id:
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
            backend, _ = self._backend(request, repo_id, service)
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
        proto = dulwich("protocol").ReceivableProtocol(_body(request, limit).read, out.write)
        if service == "git-upload-pack":
            dulwich("server").UploadPackHandler(backend, ["/"], proto, stateless_rpc=True).handle()
        else:
            known = frozenset(repo.commits)  # the commits git was shown: a push builds on them
            _receive_handler()(backend, ["/"], proto, self.push, request, repo_id, known).handle()
        return _answer(f"application/x-{service}-result", out)

    def _backend(self, request: Request, repo_id: str, service: str) -> tuple[DictBackend, GitRepo]:
        repository = self.uploads.repository(repo_id, request)
        tags = repository.user_tags()
        if service == "git-receive-pack":
            self.uploads.check_push(repository, request)
        elif not tags:
            raise repo_not_found(repo_id)
        authorization = request.header("Authorization")
        repo = self.objects.repo(repo_id, authorization, tags)
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
    """The request body, gunzipped when git sent it so (it does for large fetches)."""
    stream = _Bounded(request.environ["wsgi.input"], limit)
    if request.header("Content-Encoding") != "gzip":
        return stream
    data = stream.read()
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        plain = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise HubError(400, "the git request's gzip body does not inflate") from None
    if len(plain) > limit or inflater.unconsumed_tail:
        raise HubError(413, "the git request is larger than this gateway takes")
    return io.BytesIO(plain)
