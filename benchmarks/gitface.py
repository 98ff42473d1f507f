"""A git face for a Hugging Face hub, so that MatrixHub's proxy can mirror from it.

MatrixHub's proxy projects mirror a remote repository with git: ``git ls-remote`` and
``git fetch`` of ``{registry url}/{organization}/{name}.git``, then its LFS objects through
the remote's LFS batch API (matrixhub-ai/hfd ``pkg/mirror/mirror.go``: ``PullFromRemote``,
``pullMirrorLFS``; ``pkg/lfs/remote.go``: ``{url}.git/info/lfs/objects/batch``).
``modelpack serve`` spoke the hub's HTTP API only when the side-by-side benchmark was written
(its git over HTTP came later, docs/gateway.md; not tried as MatrixHub's upstream), so for
that benchmark this stands in front of it: each repository is
a bare git repository of one commit holding the hub's small files and an LFS pointer for
each LFS file, both from the hub's own listing, served by ``git http-backend``; the batch
API hands out the hub's own resolve URLs, so every LFS byte still comes from the hub.

    python -m benchmarks.gitface HUB_URL ORG/NAME... [--bind ADDRESS] [--port N] [--warm]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import quote, urlsplit

import requests

HTTP_BACKEND = "/usr/lib/git-core/git-http-backend"
_REPO = re.compile(r"^/(?P<repo>[^/]+/[^/]+?)(?:\.git)?(?P<rest>/.*)$")
GIT = ["git", "-c", "user.name=gitface", "-c", "user.email=gitface@localhost"]


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


def mirror_repo(hub: str, repo_id: str, root: Path) -> dict[str, dict[str, object]]:
    """``root/ORG/NAME.git``: one commit of ``repo_id`` at ``main`` as ``hub`` lists it
    (small files' bytes, LFS pointers); returns its files by path (``lfs``: oid and size)."""
    listing = requests.get(f"{hub}/api/models/{repo_id}/tree/main", params={"recursive": "1"},
                           timeout=60)  # fmt: skip
    listing.raise_for_status()
    files: dict[str, dict[str, object]] = {}
    with tempfile.TemporaryDirectory() as work:
        tree = Path(work)
        for entry in listing.json():
            if entry["type"] != "file":
                continue
            path = tree / entry["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            files[entry["path"]] = entry
            if lfs := entry.get("lfs"):
                path.write_bytes(lfs_pointer(lfs["oid"], lfs["size"]))
            else:
                got = requests.get(f"{hub}/{repo_id}/resolve/main/{quote(entry['path'])}",
                                   timeout=60)  # fmt: skip
                got.raise_for_status()
                path.write_bytes(got.content)
        subprocess.run(["git", "init", "-q", "-b", "main", str(tree)], check=True)
        subprocess.run([*GIT, "-C", str(tree), "add", "-A"], check=True)
        subprocess.run([*GIT, "-C", str(tree), "commit", "-q", "-m", f"{repo_id} from {hub}"],
                       check=True)  # fmt: skip
        bare = root / f"{repo_id}.git"
        shutil.rmtree(bare, ignore_errors=True)
        bare.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(["git", "clone", "-q", "--bare", str(tree), str(bare)], check=True)
    return files


def parse_cgi(out: bytes) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of a CGI program's output (``Status:`` absent: 200)."""
    head, _, payload = out.partition(b"\r\n\r\n")
    status, headers = 200, {}
    for line in head.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.lower() == "status":
            status = int(value.split()[0])
        elif name:
            headers[name] = value.strip()
    return status, headers, payload


class GitFace:
    """``git http-backend`` for the repositories under ``root`` and an LFS batch API whose
    downloads point at ``hub``; ``serve()`` in a thread, ``url`` for clients."""

    def __init__(self, hub: str, root: Path, port: int = 0, bind: str = "127.0.0.1") -> None:
        self.hub = hub
        self.root = root
        self.files: dict[str, dict[str, dict]] = {}  # repo -> path -> the hub's tree entry
        self.objects: dict[str, dict[str, dict]] = {}  # repo -> LFS oid -> that entry
        self.serving: threading.Thread | None = None
        face = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.answer(face.handle("GET", self.path, self.headers, b""))

            def do_POST(self) -> None:
                self.answer(face.handle("POST", self.path, self.headers, self.body()))

            def body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    data = b""
                    while size := int(self.rfile.readline().split(b";")[0], 16):
                        data += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                    return data
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def answer(self, reply: tuple[int, dict[str, str], bytes]) -> None:
                status, headers, body = reply
                self.send_response(status)
                for name, value in {**headers, "Content-Length": str(len(body))}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

        self.server = ThreadingHTTPServer((bind, port), Handler)
        self.url = f"http://{bind}:{self.server.server_address[1]}"

    def add(self, repo_id: str, warm: bool = False) -> None:
        """Serve ``repo_id``; ``warm``: read each of its LFS files through the hub once first
        (a public hub has them at hand)."""
        self.files[repo_id] = mirror_repo(self.hub, repo_id, self.root)
        self.objects[repo_id] = {
            e["lfs"]["oid"]: e for e in self.files[repo_id].values() if "lfs" in e
        }
        for found in self.objects[repo_id].values() if warm else ():
            url = f"{self.hub}/{repo_id}/resolve/main/{quote(str(found['path']))}"
            with requests.get(url, stream=True, timeout=600) as got:
                got.raise_for_status()
                for _ in got.iter_content(1 << 20):
                    pass

    def serve(self) -> GitFace:
        self.serving = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.serving.start()
        return self

    def close(self) -> None:
        if self.serving is not None:
            self.server.shutdown()
        self.server.server_close()

    def handle(self, method: str, target: str, headers: object, body: bytes
               ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        parts = urlsplit(target)
        match = _REPO.match(parts.path)
        if not match or match["repo"] not in self.objects:
            return 404, {}, b"not found\n"
        repo, rest = match["repo"], match["rest"]
        if rest == "/info/lfs/objects/batch" and method == "POST":
            return self.batch(repo, json.loads(body or b"{}"))
        env = {
            "GIT_PROJECT_ROOT": str(self.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": f"/{repo}.git{rest}",
            "QUERY_STRING": parts.query,
            "REQUEST_METHOD": method,
            "CONTENT_TYPE": headers.get("Content-Type", ""),  # type: ignore[attr-defined]
            "CONTENT_LENGTH": str(len(body)),
            "HTTP_CONTENT_ENCODING": headers.get("Content-Encoding", ""),  # type: ignore[attr-defined]
            "GIT_PROTOCOL": headers.get("Git-Protocol", ""),  # type: ignore[attr-defined]
            "REMOTE_ADDR": "127.0.0.1",
            "PATH": "/usr/bin:/bin",
        }
        out = subprocess.run([HTTP_BACKEND], input=body, env=env, capture_output=True).stdout
        return parse_cgi(out)

    def batch(self, repo: str, request: dict) -> tuple[int, dict[str, str], bytes]:
        """The LFS batch API (download only): each object's href is the hub's resolve URL."""
        known = self.objects[repo]
        objects = []
        for obj in request.get("objects", []):
            found = known.get(obj.get("oid", ""))
            if request.get("operation") != "download" or found is None:
                objects.append({**obj, "error": {"code": 404, "message": "not found"}})
                continue
            href = f"{self.hub}/{repo}/resolve/main/{quote(str(found['path']))}"
            objects.append({"oid": obj["oid"], "size": found["lfs"]["size"], "authenticated": True,
                            "actions": {"download": {"href": href, "expires_in": 86400}}})  # fmt: skip
        body = json.dumps({"transfer": "basic", "objects": objects}).encode()
        return 200, {"Content-Type": "application/vnd.git-lfs+json"}, body


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("hub")
    parser.add_argument("repos", nargs="+")
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--warm", action="store_true", help="read each LFS file once first")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gitface-") as root:
        face = GitFace(args.hub.rstrip("/"), Path(root), args.port, args.bind)
        for repo in args.repos:
            face.add(repo, args.warm)
        print(f"GITFACE_URL={face.url}", flush=True)
        face.server.serve_forever()


if __name__ == "__main__":
    main()
