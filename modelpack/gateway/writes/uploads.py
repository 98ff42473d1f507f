"""The hub's write API: create_repo, preupload, LFS batch + basic transfer, commit,
branches, tags, refs and commit history, all pushed with the client's credentials.

What huggingface_hub (2.x) asks and what the gateway answers is in docs/gateway.md
("Uploads").  In short: preupload says ``regular`` for files up to
``inline_max`` (their bytes come base64 in the commit) and ``lfs`` above it;
the LFS batch answer has no action for blobs the repository has (the hub's
"skip") and an upload href back to this gateway for the rest, whose body is
streamed into a registry blob upload and checked against its sha256.  A client
with hf_xet uploads ``lfs`` files given by path through Xet instead (xet.py).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import (
    AuthenticationError,
    IntegrityError,
    LeaseLostError,
    ModelpackError,
    NotFoundError,
    RegistryPolicyError,
)
from ...oci.digests import sha256_file
from ...oci.reference import is_tag
from ...oci.spec import ANNOTATION_CREATED, Descriptor
from ...registry.client import RegistryRepository
from ...registry.transport import raise_for_status
from ...registry.upload import chunk_size_for, upload_blob
from ..core.config import GatewayConfig
from ..core.gitobjects import ANNOTATION_GIT_OID, LFS_POINTER_MAX, parse_lfs_pointer
from ..core.http import JSON_TYPES, NDJSON_TYPES, Request, Response
from ..core.hub import (
    COMMIT_RE,
    DATASETS,
    HubError,
    api_repo_path,
    canonical_repo_id,
    header_text,
    is_dataset,
    path_problem,
    repo_not_found,
    repo_spans,
    repo_type,
    shown_path,
    shown_repo_id,
    valid_repo_id,
    valid_repo_segments,
)
from ..read.card import MAX_CARD_BYTES, check_front_matter
from ..read.hub_errors import hub_error
from ..read.models import Model, Resolver, require_modelpack
from ..state.access import Clients, credentials_from_header
from ..state.authcache import PUSH
from ..state.shared import Lease, Shared, Ticket
from ..state.spools import claimed_folder, sweep
from ..state.ttlmap import TTLMap
from .commits import (
    ANNOTATION_BRANCH,
    ANNOTATION_COMMIT_AUTHOR,
    ANNOTATION_COMMIT_MESSAGE,
    ANNOTATION_COMMIT_TITLE,
    ANNOTATION_PARENT,
    Change,
    CommitInfo,
    CommitPathError,
    Head,
    MissingEntryError,
    NewFile,
    branch_manifest,
    build_commit,
    git_blob_oid,
    push_commit,
)
from .payload import operations
from .protected import refuse_protected
from .scanning import scan_commit
from .xet import Xet

log = logging.getLogger("modelpack.gateway")
REPO_OPS = (
    "preupload", "commit", "branch", "tag", "refs", "commits", "xet-write-token", "super-squash"
)  # fmt: skip
READ_OPS = ("revision", "tree", "paths-info")  # app.py's
OID_RE = re.compile(r"^[0-9a-f]{64}\Z")
JSON_MAX = 4 << 20
LFS_BATCH_MAX = 1000  # objects per LFS batch request (git-lfs sends 100, huggingface_hub 256)
HISTORY_MAX = 1000
HISTORY_TTL = 300.0  # seconds a walked history is reused (commit tags rarely move)
HISTORIES_MAX = 1024
REFS_MAX = 1000
GITATTRIBUTES = b"""\
*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.gguf filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""


class Uploads:
    """Routes and handlers of the write API; ``route`` answers None for other paths."""

    def __init__(
        self,
        config: GatewayConfig,
        clients: Clients,
        resolver: Resolver,
        shared: Shared,
    ) -> None:
        self.config = config
        self.clients = clients
        self.resolver = resolver
        # Tickets, Xet sessions and branch locks: in this process, or in Redis where
        # replicas share them (state/shared.py).
        self.shared = shared
        self._histories: TTLMap[str, list[dict[str, Any]]] = TTLMap(HISTORIES_MAX, HISTORY_TTL)
        self.xet = Xet(config, clients, shared)
        self.workdir = config.settings.home / "uploads"
        sweep(self.workdir)  # what a killed worker left (state/spools.py)

    # -- routing ----------------------------------------------------------------

    def route(self, request: Request) -> tuple[str, Response] | None:
        s = request.segments
        if (answered := self.xet.route(request)) is not None:
            return answered
        if s == ["api", "validate-yaml"]:  # touches no registry
            request.audit["route"] = "validate-yaml"
            if request.method != "POST":
                raise HubError(
                    405, f"{request.method} is not allowed here", None, {"Allow": "POST"}
                )
            return "validate-yaml", self.validate_yaml(request)
        if s[:3] == ["api", "repos", "create"] and len(s) == 3:
            request.audit["route"] = "create-repo"
            return "create-repo", self._call(request, "POST", "", self.create_repo)
        if len(s) == 4 and s[:3] == ["api", "modelpack", "lfs-upload"]:
            # The ticket stands for the batch request's credentials (no header here); the
            # audit trail names the ticket's user, never the URL (the ticket is a secret).
            request.audit.update(route="lfs-upload", credentials=None)
            return "lfs-upload", self._call(request, "PUT", "", self.lfs_upload, s[3], lend=True)
        for n in repo_spans(s):
            batch = len(s) == n + 4 and s[n:] == ["info", "lfs", "objects", "batch"]
            if batch and s[n - 1].endswith(".git"):
                repo = [*s[: n - 1], s[n - 1].removesuffix(".git")]
                request.audit["route"] = "lfs-batch"
                return "lfs-batch", self._repo(request, "POST", repo, self.lfs_batch)
        if len(s) >= 4 and s[0] == "api" and s[1] in ("models", DATASETS):
            rest = api_repo_path(s)
            for n in repo_spans(rest):
                if len(rest) > n and rest[n] in REPO_OPS:
                    op, args = rest[n], rest[n + 1 :]
                    return self._repo_op(request, rest[:n], op, args)
                if len(rest) > n and rest[n] in READ_OPS:
                    return None  # a read of a repo named like one of ours ("org/refs")
        return None

    def _repo_op(
        self, request: Request, repo: list[str], op: str, args: list[str]
    ) -> tuple[str, Response]:
        request.audit["route"] = op
        if op == "refs" and not args:
            return "refs", self._repo(request, "GET", repo, self.refs)
        if len(args) != 1:
            raise HubError(404, "Not Found")
        request.audit["revision"] = args[0]
        if op in ("branch", "tag") and request.method == "DELETE":
            return op, self._repo(request, "DELETE", repo, self.delete_ref, op, args[0])
        handlers = {
            "preupload": ("POST", self.preupload),
            "commit": ("POST", self.commit),
            "branch": ("POST", self.create_branch),
            "tag": ("POST", self.create_tag),
            "commits": ("GET", self.commits),
            "xet-write-token": ("GET", self.xet_write_token),
            "super-squash": ("POST", self.super_squash),
        }
        if op not in handlers:
            raise HubError(404, "Not Found")
        method, handler = handlers[op]
        return op, self._repo(request, method, repo, handler, args[0])

    def _call(
        self, request: Request, method: str, repo_id: str, handler, *args, lend: bool = False
    ) -> Response:  # noqa: ANN001
        if request.method != method:
            raise HubError(405, f"{request.method} is not allowed here", None, {"Allow": method})
        if method != "GET" and not lend:
            self._own_credentials(request)
        try:
            return handler(request, *args)
        except ModelpackError as exc:
            raise self._error(exc, repo_id, request) from None

    def _repo(self, request: Request, method: str, repo: list[str], handler, *args) -> Response:  # noqa: ANN001
        repo_id = "/".join(repo)
        request.audit["repo"] = repo_id
        if not valid_repo_segments(repo) or canonical_repo_id(repo_id) != repo_id:
            # No redirect for writes: a 307 would make clients resend large bodies.
            raise repo_not_found(repo_id, "repo ids are lower case on this gateway")
        return self._call(request, method, repo_id, handler, repo_id, *args)

    def _own_credentials(self, request: Request) -> None:
        """Lent credentials (``--lend-credentials``) are for reading: a write is made
        with the client's own credentials, or anonymously where lending is off."""
        if self.config.lend_credentials and not request.header("Authorization"):
            raise HubError(401, "Uploads need your own credentials (HF_TOKEN) on this gateway")

    def _error(self, exc: ModelpackError, repo_id: str, request: Request) -> HubError:
        """As ``hub_error``, but a write refused to credentials the client sent is a
        403 (the hub's "no write access"), and a wrong upload a 400."""
        log.warning("%s %s: %s", request.method, request.shown_path, exc)
        if isinstance(exc, AuthenticationError) and request.header("Authorization"):
            return HubError(403, f"You don't have the rights to push to {repo_id}")
        if isinstance(exc, MissingEntryError):
            return HubError(404, exc.message, "EntryNotFound")
        if isinstance(exc, CommitPathError):
            return HubError(exc.status, f"{repo_id}: {exc.message}")
        if isinstance(exc, IntegrityError):
            return HubError(400, f"{repo_id}: the uploaded bytes do not match their sha256")
        return hub_error(exc, repo_id)

    # -- shared -----------------------------------------------------------------

    def repository(self, repo_id: str, request: Request) -> RegistryRepository:
        _, client = self.clients.for_header(request.header("Authorization"))
        return RegistryRepository(client, self.config.repository(repo_id))

    def open_fresh(self, repo_id: str, revision: str, request: Request) -> Model:
        """The head a write builds on: asked of the registry now, never a kept answer."""
        return self.resolver.open(repo_id, revision, request.header("Authorization"), fresh=True)

    @staticmethod
    def head_of(model: Model) -> Head:
        require_modelpack(model)
        return Head(model.root, model.view.manifest, model.view.config, model.commit)

    def _base(self, request: Request) -> str:
        return request.base_url(self.config)

    @staticmethod
    def _json(request: Request, limit: int = JSON_MAX) -> dict[str, Any]:
        request.require_type(JSON_TYPES)
        try:
            length = int(request.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > limit:
            raise HubError(413, "request body too large")
        body = request.environ["wsgi.input"].read(length) if length else b""
        try:
            document = json.loads(body or b"{}")
        except (ValueError, RecursionError):
            raise HubError(400, "request body is not JSON") from None
        if not isinstance(document, dict):
            raise HubError(400, "request body is not a JSON object")
        return document

    def check_push(self, repository: RegistryRepository, request: Request) -> None:
        """Ask the registry whether these credentials may push (an upload opened and
        cancelled): refusals come before any byte is sent.  A yes is kept as reads'
        are (state/authcache.py); the pushes themselves are the registry's to refuse."""
        answers = self.resolver.answers
        kept = answers.key(request.header("Authorization"), repository.name, PUSH)

        def ask() -> bool:
            location = repository.start_upload()
            if location:
                with contextlib.suppress(ModelpackError):
                    repository.client.request("DELETE", location, repository.push_scope).close()
            return True

        answers.answer(kept, ask)

    def move(self, repo_id: str, lease: Lease, move: Callable[[], None]) -> None:
        """A branch or tag moves only while its lock is this request's: confirmed right
        before the registry writes (a whole lease from then on), and still held after them,
        which means nobody else held it in between (docs/gateway.md, Running several
        replicas).  A lease lost meanwhile is a 503: the client commits again.  The
        repository's kept answers are dropped around the writes (``_moving_refs``)."""
        lease.confirm()
        with self._moving_refs(repo_id):
            move()
        if not lease.held():
            raise LeaseLostError(
                "the lock on this branch ended while the commit moved it (this gateway stalled "
                "longer than the lease)", hint="check the branch and commit again")  # fmt: skip

    @contextlib.contextmanager
    def _moving_refs(self, repo_id: str) -> Iterator[None]:
        """Around pushes that move a repository's tags: its kept answers (state/authcache.py)
        are dropped after them, for every client, also when they failed half-way.  Not when
        the registry refused them (credentials or a policy): nothing moved, and a client who
        may only read cannot flush everyone's answers by asking for writes."""
        try:
            yield
        except (AuthenticationError, RegistryPolicyError):
            raise
        except BaseException:
            self.resolver.forget(repo_id)
            raise
        self.resolver.forget(repo_id)

    def branch_lock(self, repo_id: str, branch: str) -> contextlib.AbstractContextManager[Lease]:
        """Held while a branch's head is read and moved: in all replicas, one holder."""
        return self.shared.branch(self.config.repository(repo_id), branch)

    @staticmethod
    def branch_name(name: str) -> str:
        if not is_tag(name) or COMMIT_RE.match(name):
            raise HubError(
                400, f"{name!r}: branches and tags here are OCI tags ([A-Za-z0-9_][A-Za-z0-9_.-]*)"
            )
        return name

    def author(self, request: Request) -> str:
        header = request.header("Authorization")
        if not header:
            return "anonymous"
        try:
            return credentials_from_header(header, self.config.token_user).username or "token"
        except ModelpackError:
            return "unknown"

    # -- repositories -----------------------------------------------------------

    def validate_yaml(self, request: Request) -> Response:
        """upload_folder checks a README's front matter first (as a build reads it)."""
        text = str(self._json(request, MAX_CARD_BYTES).get("content") or "")
        errors, warnings = check_front_matter(text)
        document = {"errors": [{"message": m} for m in errors],
                    "warnings": [{"message": m} for m in warnings]}  # fmt: skip
        if errors:
            return Response.json(document, 400, {"X-Error-Message": header_text(errors[0])})
        return Response.json(document)

    def create_repo(self, request: Request) -> Response:
        body = self._json(request)
        kind = body.get("type")
        if kind not in (None, "model", "dataset"):
            raise repo_not_found(
                str(body.get("name")), "this gateway serves models and datasets only"
            )
        name, org = str(body.get("name") or ""), body.get("organization")
        repo_id = f"{org}/{name}" if org else name
        if kind == "dataset":
            if not org and "/" not in name:
                # huggingface_hub cannot parse the URL of a dataset without an org.
                raise HubError(400, f"{name!r}: a dataset's repo id is ORG/NAME on this gateway")
            repo_id = f"{DATASETS}/{repo_id}"
        elif is_dataset(repo_id):
            raise HubError(400, f"{repo_id!r}: no model's org is named {DATASETS}")
        request.audit.update(repo=repo_id, revision="main")
        if not valid_repo_id(repo_id):
            raise HubError(400, f"{repo_id!r} is not a valid repo id")
        repo_id = canonical_repo_id(repo_id)
        request.audit["repo"] = repo_id
        url = f"{self._base(request)}/{repo_id}"
        try:
            repository = self.repository(repo_id, request)
            # Looked at under the lock every commit to main takes: of concurrent creates
            # exactly one makes the first commit, and none resets a branch in use.
            with self.branch_lock(repo_id, "main") as lease:
                if repository.user_tags():
                    # The hub's 409 carries the url: create_repo(exist_ok=True) returns it.
                    taken = HubError(409, f"You already created this {repo_type(repo_id)} repo")
                    headers = taken.response_headers()
                    return Response.json({"error": taken.message, "url": url}, 409, headers)
                self._first_commit(repository, repo_id, request, lease)
        except ModelpackError as exc:
            raise self._error(exc, repo_id, request) from None
        shown = shown_repo_id(repo_id)
        return Response.json({"url": url, "name": shown, "id": shown})

    def _first_commit(
        self, repository: RegistryRepository, repo_id: str, request: Request, lease: Lease
    ) -> None:
        """A new repo holds .gitattributes, as on the hub."""
        with claimed_folder(self.workdir, "repo-") as work:
            local = work / ".gitattributes"
            local.write_bytes(GITATTRIBUTES)
            added = self._push_file(repository, ".gitattributes", local)
            change = Change(added={".gitattributes": added})
            info = CommitInfo("initial commit", "", self.author(request), "main", time.time())
            built = build_commit(repository, repo_id, None, change, info, work)
            self.move(repo_id, lease, lambda: push_commit(repository, built, None))
        request.audit["commit"] = built.commit

    def _push_file(self, repository: RegistryRepository, path: str, local: Path) -> NewFile:
        digest, size = sha256_file(str(local))
        self.push_blob(repository, local, digest, size)
        return NewFile(path, digest, size, git_blob_oid(local, size), local)

    @staticmethod
    def push_blob(repository: RegistryRepository, local: Path, digest: str, size: int) -> None:
        desc = Descriptor("application/octet-stream", digest, size)
        if not repository.exists(desc):  # unchanged bytes are never sent again
            with open(local, "rb") as content:
                repository.push(desc, content)

    # -- preupload and LFS --------------------------------------------------------

    def preupload(self, request: Request, repo_id: str, revision: str) -> Response:
        body = self._json(request)
        files = body.get("files")
        if not isinstance(files, list):
            raise HubError(400, "files must be a list")
        model = self.open_fresh(repo_id, revision, request)
        # Told before a byte is uploaded, not at the commit after it.
        refuse_protected(self.config, model.repository, repo_id, revision, "commit to")
        self.check_push(model.repository, request)
        existing = {f.path: f for f in (model.view.files or {}).values()}
        answers, lfs_sizes = [], []
        for item in files:
            if not isinstance(item, dict):
                raise HubError(400, "each file needs a path")
            path, size = _file_path(item.get("path")), item.get("size")
            if not _byte_count(size):
                raise HubError(400, f"{shown_path(path)}: size must be a number of bytes")
            mode = "regular" if size <= self.config.inline_max else "lfs"
            lfs_sizes += [size] if mode == "lfs" else []
            answer: dict[str, Any] = {"path": path, "uploadMode": mode, "shouldIgnore": False}
            if (found := existing.get(path)) is not None and found.layer is not None:
                oid = (
                    found.sha256
                    if mode == "lfs"
                    else found.layer.annotations.get(ANNOTATION_GIT_OID)
                )
                if oid:
                    answer["oid"] = oid  # the client drops files whose oid it computes the same
            answers.append(answer)
        self.xet.announce(request.header("Authorization"), repo_id, lfs_sizes)
        return Response.json({"files": answers, "commitOid": model.commit})

    def lfs_batch(self, request: Request, repo_id: str) -> Response:
        body = self._json(request)
        operation = body.get("operation")
        if operation not in ("upload", "download"):
            raise HubError(400, "an LFS batch operation is upload or download")
        objects = body.get("objects")
        if not isinstance(objects, list):
            raise HubError(400, "objects must be a list")
        if len(objects) > LFS_BATCH_MAX:
            raise HubError(413, f"at most {LFS_BATCH_MAX} objects per LFS batch request")
        repository = self.repository(repo_id, request)
        if operation == "download":
            return self._lfs_downloads(request, repo_id, repository, objects)
        ref = body.get("ref")
        if isinstance(ref, dict) and isinstance(ref.get("name"), str):
            branch = ref["name"].removeprefix("refs/heads/")
            request.audit["revision"] = branch
            refuse_protected(self.config, repository, repo_id, branch, "commit to")
        self.check_push(repository, request)
        base = self._base(request)

        def upload(oid: str, size: int) -> dict[str, Any]:
            answer: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not repository.exists(Descriptor("application/octet-stream", f"sha256:{oid}", size)):
                ticket = self.shared.issue_ticket(
                    Ticket(request.header("Authorization"), repo_id, oid, size)
                )
                href = f"{base}/api/modelpack/lfs-upload/{ticket}"
                answer["actions"] = {"upload": {"href": href, "header": {}, "expires_in": 3600}}
            return answer  # no actions: the registry has the blob, nothing to send

        return _lfs_answer(objects, upload)

    def _lfs_downloads(
        self, request: Request, repo_id: str, repository: RegistryRepository, objects: list
    ) -> Response:
        """git-lfs's downloads (``git clone`` / ``pull``): each object the repository holds
        as a blob, at ``{repo}.git/info/lfs/objects/{oid}`` (git/routes.py sends it with the
        client's credentials, which the action repeats: git-lfs sends an action's headers)."""
        base = f"{self._base(request)}/{repo_id}.git/info/lfs/objects"
        header = {"Authorization": a} if (a := request.header("Authorization")) else {}

        def download(oid: str, size: int) -> dict[str, Any]:
            desc = Descriptor("application/octet-stream", f"sha256:{oid}", size)
            if blob_size(repository, desc) != size:
                return {"oid": oid, "size": size,
                        "error": {"code": 404, "message": "Object does not exist"}}  # fmt: skip
            action = {"href": f"{base}/{oid}", "header": header, "expires_in": 3600}
            return {"oid": oid, "size": size, "authenticated": True,
                    "actions": {"download": action}}  # fmt: skip

        return _lfs_answer(objects, download)

    def lfs_upload(self, request: Request, key: str) -> Response:
        ticket = self.shared.ticket(key)
        if ticket is None:
            raise HubError(404, "unknown or expired upload; ask the LFS batch endpoint again")
        request.audit.update(
            credentials=ticket.authorization, repo=ticket.repo_id, digest=f"sha256:{ticket.oid}"
        )
        length = request.environ.get("CONTENT_LENGTH")
        if length not in (None, "") and length != str(ticket.size):
            raise HubError(400, f"the upload must be {ticket.size} bytes")
        _, client = self.clients.for_header(ticket.authorization)
        repository = RegistryRepository(client, self.config.repository(ticket.repo_id))
        desc = Descriptor("application/octet-stream", f"sha256:{ticket.oid}", ticket.size)
        chunk = chunk_size_for(ticket.size, client.transport.options.chunk_size)
        try:
            upload_blob(
                repository, desc, _Capped(request.environ["wsgi.input"], ticket.size), chunk
            )
        except ModelpackError as exc:
            raise self._error(exc, ticket.repo_id, request) from None
        self.shared.ticket_used(key)
        return Response(200, {}, b"")

    def xet_write_token(self, request: Request, repo_id: str, revision: str) -> Response:
        """hf_xet's first request: push rights are checked here, as the hub does."""
        self._own_credentials(request)
        model = self.open_fresh(repo_id, revision, request)
        refuse_protected(self.config, model.repository, repo_id, revision, "commit to")
        self.check_push(model.repository, request)
        return self.xet.write_token(request, repo_id, self._base(request))

    # -- commits ------------------------------------------------------------------

    def commit(self, request: Request, repo_id: str, branch: str) -> Response:
        if request.flag("create_pr"):
            raise HubError(400, "pull requests are not supported by this gateway")
        request.require_type(NDJSON_TYPES)
        self.branch_name(branch)
        with self.branch_lock(repo_id, branch) as lease:
            model = self.open_fresh(repo_id, branch, request)
            refuse_protected(self.config, model.repository, repo_id, branch, "commit to")
            # Before a byte of the payload is read: a client that may only read (anyone,
            # for a public repository) must not get to spool files on the gateway's disk.
            self.check_push(model.repository, request)
            head = self.head_of(model)
            with claimed_folder(self.workdir, "commit-") as work:
                change, header = self._read_operations(request, model.repository, head, work)
                allow = self.config.allow_unsafe_pickle
                change = scan_commit(model.repository, repo_id, change, allow)
                title = str(header.get("summary") or "")
                info = CommitInfo(title, str(header.get("description") or ""),
                                  self.author(request), branch, time.time())  # fmt: skip
                built = build_commit(model.repository, repo_id, head, change, info, work)
                self.move(repo_id, lease, lambda: push_commit(model.repository, built, head))
        request.audit["commit"] = built.commit
        url = f"{self._base(request)}/{repo_id}/commit/{built.commit}"
        return Response.json(
            {"commitUrl": url, "commitOid": built.commit, "pullRequestUrl": None, "success": True}
        )

    def _read_operations(
        self, request: Request, repository: RegistryRepository, head: Head, work: Path
    ) -> tuple[Change, dict[str, Any]]:
        change, header = Change(), {}
        try:
            length = int(request.environ.get("CONTENT_LENGTH") or "")
        except ValueError:
            length = None
        line_max = self.config.inline_max * 4 // 3 + (1 << 20)
        payload = request.environ["wsgi.input"]
        spool, content_max = work / "spool", max(self.config.inline_max, 1)
        for op in operations(payload, length, spool, line_max, content_max):
            value = op.value
            if op.key == "header":
                header = value
                parent = value.get("parentCommit")
                if parent and parent != head.commit:
                    raise HubError(
                        412, "A commit has happened since. Please refresh and try again."
                    )
                continue
            path = _file_path(value.get("path"), folder=op.key == "deletedFolder")
            if op.key == "file" and op.content is not None:
                spooled = op.content
                if spooled.size < LFS_POINTER_MAX and parse_lfs_pointer(spooled.path.read_bytes()):
                    # In git it would be the LFS file it points to (core/gitobjects.py).
                    raise HubError(400, f"{shown_path(path)} is a git-lfs pointer: upload "
                                   "the file it points to instead")  # fmt: skip
                self.push_blob(repository, spooled.path, spooled.sha256, spooled.size)
                git_oid = git_blob_oid(spooled.path, spooled.size)
                change.added[path] = NewFile(
                    path, spooled.sha256, spooled.size, git_oid, spooled.path
                )
            elif op.key == "lfsFile":
                oid, size = value.get("oid"), value.get("size")
                if (
                    value.get("algo", "sha256") != "sha256"
                    or not isinstance(oid, str)
                    or not OID_RE.match(oid)
                ):
                    raise HubError(400, f"{path}: an LFS file needs its sha256 oid")
                if not _byte_count(size):
                    raise HubError(
                        400, f"{path}: an LFS file needs its size (copies are not supported)"
                    )
                desc = Descriptor("application/octet-stream", f"sha256:{oid}", size)
                uploaded = blob_size(repository, desc)
                if uploaded is None:
                    raise HubError(422, f"{shown_path(path)}: LFS object {oid} was not uploaded")
                if uploaded != size:  # the listing would show the false size forever
                    raise HubError(
                        400, f"{shown_path(path)}: LFS object {oid} is {uploaded} bytes, not {size}"
                    )
                change.added[path] = NewFile(path, desc.digest, size)
            elif op.key == "deletedFile":
                change.deleted_files.add(path)
            elif op.key == "deletedFolder":
                change.deleted_folders.add(path)
            else:
                raise HubError(400, f"commit operation {op.key!r} is not supported by this gateway")
        return change, header

    # -- refs and history -----------------------------------------------------------

    def create_branch(self, request: Request, repo_id: str, branch: str) -> Response:
        body = self._json(request)
        self.branch_name(branch)
        start = str(body.get("startingPoint") or "main")
        with self.branch_lock(repo_id, branch) as lease:
            model = self.open_fresh(repo_id, start, request)
            refuse_protected(self.config, model.repository, repo_id, branch, "create")
            self._refuse_existing(model.repository, branch)
            head = self.head_of(model)
            desc, data = branch_manifest(head, repo_id, branch)

            def move() -> None:
                if ANNOTATION_BRANCH not in head.manifest.annotations:
                    model.repository.tag(head.descriptor, head.commit)
                model.repository.put_manifest(desc, data, branch)

            self.move(repo_id, lease, move)
        return Response.json({})

    def create_tag(self, request: Request, repo_id: str, revision: str) -> Response:
        body = self._json(request)
        tag = self.branch_name(str(body.get("tag") or ""))
        request.audit["revision"] = tag  # the ref written (the URL names its target)
        with self.branch_lock(repo_id, tag) as lease:
            model = self.open_fresh(repo_id, revision, request)
            refuse_protected(self.config, model.repository, repo_id, tag, "create")
            self._refuse_existing(model.repository, tag)
            self.move(repo_id, lease, lambda: model.repository.tag(model.root, tag))
        return Response.json({})

    def delete_ref(self, request: Request, repo_id: str, kind: str, name: str) -> Response:
        """``delete_branch`` / ``delete_tag``.  An OCI registry deletes a manifest with
        every tag that names it (the commit-id tag, other branches on the same commit),
        and distribution 2.x deletes no single tag."""
        what = "deleting a branch" if kind == "branch" else "deleting a tag"
        return self._unsupported(request, repo_id, name, "delete", what)

    def super_squash(self, request: Request, repo_id: str, branch: str) -> Response:
        """``super_squash_history``."""
        return self._unsupported(request, repo_id, branch, "squash", "squashing history")

    def _unsupported(
        self, request: Request, repo_id: str, name: str, write: str, what: str
    ) -> Response:
        """A write this gateway does not make: refused, and on a protected name saying so
        (the client and the audit trail see why it would be refused anyway)."""
        self.branch_name(name)
        with self.branch_lock(repo_id, name):
            refuse_protected(self.config, self.repository(repo_id, request), repo_id, name, write)
        raise HubError(400, f"{repo_id}: {what} is not supported by this gateway; "
                       f"{name} is unchanged")  # fmt: skip

    @staticmethod
    def _refuse_existing(repository: RegistryRepository, name: str) -> None:
        try:
            repository.resolve(name)
        except NotFoundError:
            return
        raise HubError(409, f"Reference already exists: {name}")

    def refs(self, request: Request, repo_id: str) -> Response:
        repository = self.repository(repo_id, request)
        tags = [t for t in repository.user_tags() if not COMMIT_RE.match(t)][:REFS_MAX]
        if not tags:
            raise repo_not_found(repo_id)
        branches, hub_tags = [], []
        for tag in tags:
            try:
                model = self.open_fresh(repo_id, tag, request)
            except HubError:
                continue  # an index, a tag removed meanwhile
            recorded = model.view.manifest.annotations.get(ANNOTATION_BRANCH)
            if tag == recorded or tag == "main":
                branches.append(_ref(tag, "heads", model.commit))
            elif tag == "latest" and "main" not in tags and recorded is None:
                branches.append(_ref("main", "heads", model.commit))  # what "main" resolves to
            else:
                hub_tags.append(_ref(tag, "tags", model.commit))
        document = {"branches": branches, "tags": hub_tags, "converts": [], "pullRequests": []}
        return Response.json(document)

    def commits(self, request: Request, repo_id: str, revision: str) -> Response:
        """The first-parent history, at most HISTORY_MAX commits.  Walking it costs a
        manifest per commit, so a walk is remembered by the head's manifest digest (the
        client just read that manifest with its own credentials, and the parents it names
        are commit tags of the same repository) for HISTORY_TTL."""
        model = self.open_fresh(repo_id, revision, request)
        if (known := self._histories.get(model.key)) is not None:
            return Response.json(known)
        history, seen = [], set()
        head = model.key
        while model.commit not in seen and len(history) < HISTORY_MAX:
            seen.add(model.commit)
            history.append(_commit_entry(model))
            parent = model.view.manifest.annotations.get(ANNOTATION_PARENT)
            if not parent:
                break
            try:
                model = self.open_fresh(repo_id, parent, request)
            except HubError:
                break  # a parent tag someone removed: history ends there
        self._histories.set(head, history)
        return Response.json(history)


def _file_path(path: object, folder: bool = False) -> str:
    """A path the request names, or a 400 saying why no repo can hold it
    (``hub.path_problem``).  A folder may end in ``/``, and ``""`` is the root."""
    if folder and isinstance(path, str):
        path = path.removesuffix("/")
        if not path:
            return ""
    if problem := path_problem(path):
        raise HubError(400, f"{shown_path(path)} is not a valid path in a repo: {problem}")
    assert isinstance(path, str)
    return path


def _byte_count(value: object) -> bool:
    """A size as JSON gives one: a whole number, not negative (``true`` is not 1)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _lfs_answer(objects: list, answer: Callable[[str, int], dict[str, Any]]) -> Response:
    """The LFS batch API's answer: ``answer(oid, size)`` for each well-formed object, a 422
    for each other."""
    answers = []
    for item in objects:
        oid = item.get("oid") if isinstance(item, dict) else None
        size = item.get("size") if isinstance(item, dict) else None
        if not isinstance(oid, str) or not OID_RE.match(oid) or not _byte_count(size):
            answers.append({"oid": str(oid), "size": size if _byte_count(size) else 0,
                            "error": {"code": 422, "message": "oid must be a sha256, size a number"}})  # fmt: skip
            continue
        answers.append(answer(oid, size))
    document = {"transfer": "basic", "objects": answers, "hash_algo": "sha256"}
    return Response(
        200, {"Content-Type": "application/vnd.git-lfs+json"}, json.dumps(document).encode()
    )


def blob_size(repository: RegistryRepository, desc: Descriptor) -> int | None:
    """The size of a blob as the registry has it (HEAD); None when it has none.  A
    registry that sends no Content-Length is taken at the declared size."""
    response = repository.client.request(
        "HEAD", repository.path("blobs", desc.digest), repository.pull_scope
    )
    response.close()
    if response.status_code == 404:
        return None
    raise_for_status(response, f"{repository.describe()}@{desc.digest}")
    try:
        return int(response.headers["Content-Length"])
    except (KeyError, ValueError):
        return desc.size


def _ref(name: str, kind: str, commit: str) -> dict[str, str]:
    return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": commit}


def _commit_entry(model: Model) -> dict[str, Any]:
    annotations = model.view.manifest.annotations
    config = model.view.config
    date = annotations.get(ANNOTATION_CREATED) or (
        config.descriptor.created_at if config and config.descriptor.created_at else None
    )
    made_here = ANNOTATION_BRANCH in annotations
    return {
        "id": model.commit,
        "authors": [{"user": annotations.get(ANNOTATION_COMMIT_AUTHOR) or "modelpack"}],
        "date": date or "1970-01-01T00:00:00Z",
        "title": annotations.get(ANNOTATION_COMMIT_TITLE, "") if made_here else "modelpack push",
        "message": annotations.get(ANNOTATION_COMMIT_MESSAGE, ""),
    }


class _Capped:
    """The request body, never read past the ticket's size, and never short of it: a
    body that ends early stops the registry upload at once (the registry would wait
    for the missing bytes, and a gateway thread with it)."""

    def __init__(self, stream: BinaryIO, size: int) -> None:
        self.stream = stream
        self.remaining = size

    def read(self, n: int = -1) -> bytes:
        if self.remaining <= 0:
            return b""
        n = self.remaining if n is None or n < 0 else min(n, self.remaining)
        data = self.stream.read(n)
        if not data:
            raise HubError(400, f"the upload ended {self.remaining} bytes short; send it again")
        self.remaining -= len(data)
        return data

    def readable(self) -> bool:
        return True
