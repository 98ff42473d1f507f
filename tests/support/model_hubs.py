"""Small HTTP servers that speak the Hugging Face hub and ModelScope APIs, for tests.

Only the routes the real clients use to download a repository:

Hugging Face (what ``huggingface_hub.snapshot_download`` calls, and the gateway's import):
  GET  /api/models/{repo}/revision/{rev}        model info: id, sha, siblings (with
                                                ``?blobs=true`` each file's size, git blob
                                                id and, for LFS files, its sha256)
  GET  /api/models/{repo}/tree/{rev}?recursive  file listing with git oids and LFS sha256
  HEAD /{repo}/resolve/{rev}/{path}             ETag, X-Repo-Commit, sizes (X-Linked-* for LFS)
  GET  /{repo}/resolve/{rev}/{path}             the bytes

Private and gated repos answer as the hub does: without the repo's token 401, a gated
repo with another token 403 (``X-Error-Code: GatedRepo``).  Every request is recorded in
``FakeHub.seen`` (method, path with query, Authorization, Cookie), so a test can assert on
what an upstream received.

ModelScope (its v1 HTTP API):
  GET /api/v1/models/{org}/{name}/repo/files?Revision=&Recursive=   file list with Sha256
  GET /api/v1/models/{org}/{name}/repo?Revision=&FilePath=          the bytes
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

from .serving import QuietHandler, serve, shutdown

LFS_THRESHOLD = 10_000  # files above this are served as LFS objects, as the hub does for weights


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class HubRepo:
    repo_id: str
    root: Path  # the files
    commit: str
    private_token: str | None = None  # require "Authorization: Bearer <token>"
    tampered: dict[str, bytes] = field(default_factory=dict)  # served instead of what is listed
    gated: bool = False  # a wrong token: 403 GatedRepo (else 401 RepoNotFound)
    missing: set[str] = field(default_factory=set)  # listed, but 404 when downloaded
    cookie: str | None = None  # a Set-Cookie on every answer about this repo

    def files(self) -> dict[str, bytes]:
        return {
            p.relative_to(self.root).as_posix(): p.read_bytes()
            for p in sorted(self.root.rglob("*"))
            if p.is_file()
        }


@dataclass
class FakeHub:
    repos: dict[str, HubRepo] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    # every request: method, path with query, Authorization, Cookie
    seen: list[tuple[str, str, str, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None

    def add(self, repo: HubRepo) -> HubRepo:
        self.repos[repo.repo_id] = repo
        return repo

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeHub:
        hub = self

        class Handler(QuietHandler):
            cookie: str | None = None

            def answer(self, status: int, body: bytes, headers: dict[str, str] | None = None):
                if self.cookie:
                    headers = {**(headers or {}), "Set-Cookie": self.cookie}
                super().answer(status, body, headers)

            def _json(self, status: int, document: object, error_code: str | None = None) -> None:
                headers = {"Content-Type": "application/json"}
                if error_code:
                    headers["X-Error-Code"] = error_code
                    headers["X-Error-Message"] = str(document)
                self.answer(status, json.dumps(document).encode(), headers)

            def _repo(self, repo_id: str) -> HubRepo | None:
                repo = hub.repos.get(repo_id)
                if repo is None:
                    self._json(404, {"error": "Repository not found"}, "RepoNotFound")
                    return None
                self.cookie = repo.cookie
                authorization = self.headers.get("Authorization")
                if repo.private_token and authorization != f"Bearer {repo.private_token}":
                    if repo.gated and authorization:
                        self._json(
                            403, {"error": f"Access to {repo_id} is restricted"}, "GatedRepo"
                        )
                    else:
                        self._json(401, {"error": "Invalid credentials"},
                                   "GatedRepo" if repo.gated else "RepoNotFound")  # fmt: skip
                    return None
                return repo

            def _revision_ok(self, repo: HubRepo, revision: str) -> bool:
                if revision in ("main", repo.commit):
                    return True
                self._json(404, {"error": f"Invalid rev id: {revision}"}, "RevisionNotFound")
                return False

            def _record(self) -> None:
                self.cookie = None  # one handler answers every request of a connection
                hub.seen.append((self.command, self.path, self.headers.get("Authorization", ""),
                                 self.headers.get("Cookie", "")))  # fmt: skip

            def do_HEAD(self) -> None:  # noqa: N802
                self._record()
                self._resolve()

            def do_GET(self) -> None:  # noqa: N802
                self._record()
                parts = urlsplit(self.path)
                path = unquote(parts.path)
                hub.requests.append(f"GET {path}")
                if path.startswith("/api/v1/models/"):
                    self._modelscope(path, parse_qs(parts.query))
                elif path.startswith("/api/models/"):
                    self._api(path, "blobs=true" in parts.query)
                else:
                    self._resolve()

            def _api(self, path: str, blobs: bool = False) -> None:
                rest = path[len("/api/models/") :]
                if "/revision/" in rest:
                    repo_id, revision = rest.split("/revision/", 1)
                    if (repo := self._repo(repo_id)) and self._revision_ok(repo, revision):
                        siblings = [self._sibling(n, d, blobs) for n, d in repo.files().items()]
                        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": repo.commit,
                                         "private": bool(repo.private_token), "siblings": siblings})  # fmt: skip
                elif "/tree/" in rest:
                    repo_id, revision = rest.split("/tree/", 1)
                    if (repo := self._repo(repo_id)) and self._revision_ok(
                        repo, revision.split("/")[0]
                    ):
                        self._json(200, self._tree(repo))
                else:
                    self._json(404, {"error": "not found"}, "EntryNotFound")

            def _sibling(self, name: str, data: bytes, blobs: bool) -> dict:
                """As the hub lists a file; with ``blobs``, its size and hashes too."""
                if not blobs:
                    return {"rfilename": name}
                entry: dict = {"rfilename": name, "size": len(data), "blobId": git_blob_sha1(data)}
                if len(data) > LFS_THRESHOLD:
                    sha256 = hashlib.sha256(data).hexdigest()
                    entry["lfs"] = {"sha256": sha256, "size": len(data), "pointerSize": 134}
                return entry

            def _tree(self, repo: HubRepo) -> list[dict]:
                entries: list[dict] = []
                directories: set[str] = set()
                for name, data in repo.files().items():
                    for i in range(1, name.count("/") + 1):
                        directories.add("/".join(name.split("/")[:i]))
                    entry = {
                        "type": "file",
                        "oid": git_blob_sha1(data),
                        "size": len(data),
                        "path": name,
                    }
                    if len(data) > LFS_THRESHOLD:
                        entry["lfs"] = {
                            "oid": hashlib.sha256(data).hexdigest(),
                            "size": len(data),
                            "pointerSize": 134,
                        }
                    entries.append(entry)
                entries += [
                    {"type": "directory", "oid": "0" * 40, "size": 0, "path": d}
                    for d in sorted(directories)
                ]
                return entries

            def _resolve(self) -> None:
                path = unquote(urlsplit(self.path).path).lstrip("/")
                if "/resolve/" not in path:
                    self._json(404, {"error": "not found"}, "EntryNotFound")
                    return
                repo_id, rest = path.split("/resolve/", 1)
                revision, _, filename = rest.partition("/")
                repo = self._repo(repo_id)
                if repo is None or not self._revision_ok(repo, revision):
                    return
                data = repo.files().get(filename)
                if data is None or filename in repo.missing:
                    self._json(404, {"error": "Entry not found"}, "EntryNotFound")
                    return
                headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{git_blob_sha1(data)}"',
                           "Content-Length": str(len(data)), "Accept-Ranges": "bytes"}  # fmt: skip
                if len(data) > LFS_THRESHOLD:
                    headers["X-Linked-Etag"] = f'"{hashlib.sha256(data).hexdigest()}"'
                    headers["X-Linked-Size"] = str(len(data))
                self.answer(200, data, headers)

            def _modelscope(self, path: str, query: dict[str, list[str]]) -> None:
                rest = path[len("/api/v1/models/") :]
                model_id, _, route = rest.rpartition("/repo")
                if route not in ("", "/files"):
                    self._json(404, {"Code": 10010205001, "Message": "not found"})
                    return
                repo = hub.repos.get(model_id)
                if repo is None:
                    self._json(404, {"Code": 10010205001, "Message": f"model {model_id} not found"})
                    return
                files = repo.files()
                if route == "/files":
                    listing = [{"Name": n.rsplit("/", 1)[-1], "Path": n, "Type": "blob", "Size": len(d),
                                "Sha256": hashlib.sha256(d).hexdigest(), "Revision": repo.commit}
                               for n, d in files.items()]  # fmt: skip
                    self._json(200, {"Code": 200, "Data": {"Files": listing}, "Success": True})
                    return
                wanted = (query.get("FilePath") or [""])[0]
                if wanted not in files:
                    self._json(404, {"Code": 10010205001, "Message": "file not found"})
                    return
                body = repo.tampered.get(wanted, files[wanted])
                self.answer(200, body, {"Content-Type": "application/octet-stream"})

        self._server = serve(Handler)
        return self

    def stop(self) -> None:
        shutdown(self._server)
        self._server = None
