"""`modelpack serve --upstream`: repos the registry lacks are imported from another hub.

The upstream is a second `modelpack serve` in front of a second registry (MatrixHub's
`hfd` cannot be fetched through the Go module proxy here: docs/gateway.md), plus a
tiny hostile hub in this process that lists one sha256 and sends other bytes.
"""

import hashlib
import json
import re
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.helpers import build_and_push, tree_files

import modelpack
from modelpack.errors import UsageError
from modelpack.gateway import GatewayConfig
from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model

UP = "up"  # namespace on the upstream's registry
NS = "imported"  # namespace on the registry the gateway under test fronts
ALLOW = ("--upstream-allow", "org/tiny*", "--upstream-allow", "team/*")
MANIFEST_ACCEPT = "application/vnd.oci.image.manifest.v1+json"


def _requests(log: str, pattern: str) -> list[str]:
    """The request lines of a gateway log that match ``pattern`` (method and path)."""
    return [m for m in re.findall(r"(?:GET|HEAD|POST) \S+", log) if re.fullmatch(pattern, m)]


@pytest.fixture(scope="module")
def world(registry, tmp_path_factory):
    """(model, upstream hub, gateway with --upstream in front of `registry`)."""
    work = tmp_path_factory.mktemp("upstream")
    model = make_tiny_model(work / "tiny")
    with RegistryServer(workdir=work / "upstream-registry") as up_registry:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("DOCKER_CONFIG", str(work / "docker"))
            settings = Settings(home=work / "home", plain_http=True)
            for name in ("org/tiny:main", "org/tiny-offline:main", "org/tiny-pinned:main",
                         "org/tiny-shared:main", "org/tiny-pr:main", "org/other:main",
                         "team/internal:main", "org/tiny-local:main"):  # fmt: skip
                build_and_push(model, f"{up_registry.host}/{UP}/{name}", settings)
            # An internal repo: only v1, in the registry the gateway fronts.
            build_and_push(model, f"{registry.host}/{NS}/team/internal:v1", settings)
        upstream = Gateway(f"{up_registry.host}/{UP}", work / "upstream-hub").start()
        gateway = Gateway(
            f"{registry.host}/{NS}", work / "gateway", ("--upstream", upstream.url, *ALLOW)
        ).start()
        try:
            yield model, upstream, gateway
        finally:
            gateway.stop()
            upstream.stop()


def _info(gateway: Gateway, repo: str, revision: str = "main") -> requests.Response:
    return requests.get(f"{gateway.url}/api/models/{repo}/revision/{revision}", timeout=300)


@pytest.fixture(scope="module")
def imported(world):
    """org/tiny@main imported by 8 concurrent first requests: their answers."""
    _, _, gateway = world
    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(lambda _: _info(gateway, "org/tiny"), range(8)))


def test_eight_concurrent_first_requests_import_once_then_none(world, imported, tmp_path):
    model, upstream, gateway = world
    log = upstream.log()
    # One import: the revision resolved once, each file downloaded once.
    assert len(_requests(log, r"GET /api/models/org/tiny/revision/main")) == 1
    commit = _info(upstream, "org/tiny").json()["sha"]
    assert [r.status_code for r in imported] == [200] * 8
    assert {r.json()["sha"] for r in imported} == {commit}  # the upstream's commit id
    assert {r.json()["modelpack"]["name"] for r in imported} == {"tiny"}  # the repo's name
    gets = _requests(log, r"GET /org/tiny/resolve/[0-9a-f]{40}/.+")
    assert sorted(g.rsplit(f"/{commit}/", 1)[1] for g in gets) == sorted(tree_files(model))
    gateway.wait_for_log(r"upstream: imported org/tiny@main \(commit [0-9a-f]{40}")
    assert gateway.metrics()['modelpack_gateway_pulls_total{kind="upstream",result="ok"}'] == 1

    before = len(upstream.log().splitlines())
    (result,) = gateway.hf([["snapshot", "org/tiny", "main"]], tmp_path / "hf")
    assert tree_files(Path(result["path"])) == tree_files(model)
    assert Path(result["path"]).name == commit
    assert len(upstream.log().splitlines()) == before  # zero upstream requests
    assert len(re.findall(r"upstream: imported org/tiny@", gateway.log())) == 1

    # Another replica (its own node cache) serves it from the registry too.
    replica = Gateway(gateway.registry, tmp_path / "replica", gateway.args).start()
    try:
        (again,) = replica.hf([["snapshot", "org/tiny", "main"]], tmp_path / "hf2")
        assert tree_files(Path(again["path"])) == tree_files(model)
    finally:
        replica.stop()
    assert len(upstream.log().splitlines()) == before
    assert "upstream: imported" not in replica.log()


def test_an_import_serves_its_first_request_from_the_node_store(world, registry, tmp_path):
    """The import builds into the node store and pushes from there, so the download that
    asked for it reads no blob back from the registry; the store keeps no tag of it."""
    model, _, gateway = world
    before = len(registry.access_log())
    (result,) = gateway.hf([["snapshot", "org/tiny-local", "main"]], tmp_path / "hf")
    assert tree_files(Path(result["path"])) == tree_files(model)
    log = registry.access_log()[before:]
    assert re.search(rf'"PUT /v2/{NS}/org/tiny-local/manifests/main ', log)  # it was pushed
    assert not re.search(rf'"GET /v2/{NS}/org/tiny-local/blobs/', log)  # nothing fetched back
    assert "tiny-local" not in (gateway.cache / "store" / "index.json").read_text()


def test_the_imported_artifact_pulls_with_identical_files(world, imported, registry, tmp_path):
    model, upstream, _ = world
    reference = f"{registry.host}/{NS}/org/tiny:main"
    out = tmp_path / "out"
    modelpack.pull(
        reference, output_dir=out, settings=Settings(home=tmp_path / "h", plain_http=True)
    )
    assert tree_files(out) == tree_files(model)
    manifest = requests.get(
        f"{registry.url}/v2/{NS}/org/tiny/manifests/main",
        headers={"Accept": MANIFEST_ACCEPT},
        timeout=30,
    ).json()
    annotations = manifest.get("annotations", {})
    assert annotations["io.modelpack.hf.commit"] == _info(upstream, "org/tiny").json()["sha"]
    assert annotations["io.modelpack.hf.repo-id"] == "org/tiny"


def test_a_commit_id_is_imported_under_that_tag(world, registry, tmp_path):
    """A pinned commit the registry lacks is imported as tag COMMIT and served as that commit."""
    model, upstream, gateway = world
    commit = _info(upstream, "org/tiny-pinned").json()["sha"]
    (result,) = gateway.hf([["snapshot", "org/tiny-pinned", commit]], tmp_path / "hf")
    assert Path(result["path"]).name == commit
    assert tree_files(Path(result["path"])) == tree_files(model)
    tags = requests.get(f"{registry.url}/v2/{NS}/org/tiny-pinned/tags/list", timeout=30).json()
    assert tags["tags"] == [commit]


def test_two_processes_sharing_a_cache_import_once(world, tmp_path):
    """A second gateway on the same cache directory: concurrent first requests to both."""
    _, upstream, gateway = world
    second = Gateway(
        gateway.registry, tmp_path / "second", (*gateway.args, "--cache", str(gateway.cache))
    ).start()
    try:
        targets = [gateway, second] * 4
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda g: _info(g, "org/tiny-shared"), targets))
        assert [r.status_code for r in answers] == [200] * 8
        logs = gateway.log() + second.log()
    finally:
        second.stop()
    assert len(re.findall(r"upstream: imported org/tiny-shared@main", logs)) == 1
    assert len(_requests(upstream.log(), r"GET /api/models/org/tiny-shared/revision/main")) == 1


def test_the_allow_list_refuses_other_repos(world, registry):
    _, upstream, gateway = world
    response = _info(gateway, "org/other")
    assert response.status_code == 404
    assert response.headers["X-Error-Code"] == "RepoNotFound"
    assert "registry" not in response.text and registry.host not in response.text
    assert not _requests(upstream.log(), r"\S+ /(api/models/)?org/other/.*")
    gateway.wait_for_log(r"upstream: org/other is not in --upstream-allow")
    # Allowed, but no tag can name these revisions: never imported, never asked for.
    for revision in ("refs%2Fpr%2F1", "sha256:" + "0" * 64):
        assert _info(gateway, "org/tiny-pr", revision).status_code == 404
    assert not _requests(upstream.log(), r"\S+ /(api/models/)?org/tiny-pr/.*")


def test_an_internal_repo_never_takes_a_revision_from_the_upstream(world, registry):
    """Dependency confusion: team/internal has only v1 in the registry; the upstream
    (allowed for team/*) publishes a main.  The upstream is not asked, nothing is added."""
    _, upstream, gateway = world
    response = _info(gateway, "team/internal")
    assert response.status_code == 404, response.text
    assert response.headers["X-Error-Code"] == "RevisionNotFound"
    assert "v1" in response.json()["error"]  # the revisions the registry has
    assert not _requests(upstream.log(), r"\S+ /(api/models/)?team/internal/.*")
    gateway.wait_for_log(r"upstream: team/internal is in the registry: main not asked")
    tags = requests.get(f"{registry.url}/v2/{NS}/team/internal/tags/list", timeout=30).json()
    assert tags["tags"] == ["v1"]
    assert _info(gateway, "team/internal", "v1").status_code == 200


def test_offline_serves_what_was_imported_only(world, imported, registry, tmp_path):
    model, upstream, _ = world
    offline = Gateway(
        f"{registry.host}/{NS}",
        tmp_path / "offline",
        ("--upstream", upstream.url, *ALLOW, "--offline"),
    ).start()
    try:
        (result,) = offline.hf([["snapshot", "org/tiny", "main"]], tmp_path / "hf")
        assert tree_files(Path(result["path"])) == tree_files(model)
        (missing,) = offline.hf([["snapshot", "org/tiny-offline", "main"]], tmp_path / "hf")
        assert missing["error"] == "RepositoryNotFoundError", missing
        assert "upstream" in offline.log() and "offline" in offline.log()
    finally:
        offline.stop()
    assert not _requests(upstream.log(), r"\S+ /(api/models/)?org/tiny-offline/.*")


def test_serve_options_and_their_environment(monkeypatch):
    """--upstream-allow from the environment is space separated; the token stays out of repr."""
    from modelpack_cli import commands_serve
    from modelpack_cli.main import main

    seen = []
    monkeypatch.setattr(commands_serve, "run_gateway", seen.append)
    monkeypatch.setenv("MODELPACK_GATEWAY_UPSTREAM_ALLOW", "org/* team/bert")
    monkeypatch.setenv("MODELPACK_GATEWAY_UPSTREAM_TOKEN", TOKEN)
    monkeypatch.setenv("MODELPACK_GATEWAY_UPSTREAM_REDIRECT_ALLOW", "cdn.example *.CDN.example")
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--registry", "127.0.0.1:5000/ns", "--upstream", "http://127.0.0.1:1",
              "--offline"])  # fmt: skip
    assert exit_.value.code == 0
    (config,) = seen
    assert config.upstream_allow == ("org/*", "team/bert")
    assert config.upstream_redirect_allow == ("cdn.example", "*.cdn.example")
    assert config.upstream_token == TOKEN and TOKEN not in repr(config)
    assert config.offline
    assert any("offline" in line for line in config.banner())


def test_upstream_needs_an_allow_list(monkeypatch):
    with pytest.raises(UsageError, match="--upstream-allow"):
        GatewayConfig("127.0.0.1:5000", upstream="http://127.0.0.1:1")
    with pytest.raises(UsageError, match="http"):
        GatewayConfig("127.0.0.1:5000", upstream="ftp://x", upstream_allow=("*",))
    config = GatewayConfig(
        "127.0.0.1:5000", upstream="http://up/", upstream_allow=("a/*",), upstream_token="s3cret"
    )
    assert "s3cret" not in repr(config) and config.upstream == "http://up"
    assert config.upstream_redirect_allow == ("*.hf.co", "*.huggingface.co")  # the hub's CDNs
    with pytest.raises(UsageError, match="host name pattern"):
        GatewayConfig("127.0.0.1:5000", upstream="http://up", upstream_allow=("*",),
                      upstream_redirect_allow=("https://cdn.example/",))  # fmt: skip
    assert config.upstream_caps.files == 10_000  # the defaults (docs/gateway.md)
    monkeypatch.setenv("MODELPACK_GATEWAY_UPSTREAM_MAX_REPO_BYTES", "lots")
    with pytest.raises(UsageError, match="MODELPACK_GATEWAY_UPSTREAM_MAX_REPO_BYTES"):
        GatewayConfig("127.0.0.1:5000", upstream="http://up", upstream_allow=("*",))


# -- a hostile (or slow) upstream ------------------------------------------------------

COMMIT = "c0ffee" + "0" * 34


def _safetensors(fill: bytes, n: int = 4096) -> bytes:
    """A valid safetensors file of one uint8 tensor of ``n`` bytes of ``fill``."""
    header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
    header += b" " * (-len(header) % 8)
    return len(header).to_bytes(8, "little") + header + fill * n


GOOD = _safetensors(b"\x01")
BAD = _safetensors(b"\x02")  # the same size: only the sha256 can tell
TOKEN = "hf_upstream_secret_123"
SECRET = b"internal only: what the instance metadata service hands out\n"
CONFIG = b'{"model_type": "bert"}\n'
ENDLESS = object()  # a body without Content-Length that goes on for 64 MiB


def _resolve(repo: str, name: str) -> str:
    return f"/{repo}/resolve/{COMMIT}/{name}"


def _lfs(name: str, data: bytes) -> dict:
    """A sibling as the hub lists an LFS file (blobId: the pointer's, never checked)."""
    sha = hashlib.sha256(data).hexdigest()
    return {"rfilename": name, "size": len(data), "blobId": sha[:40],
            "lfs": {"sha256": sha, "size": len(data), "pointerSize": 134}}  # fmt: skip


def _git_blob_id(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class Redirect(str):
    """A download that redirects there, with the X-Linked-* headers the hub sends beside it
    (huggingface_hub reads them from the redirect) for ``content``."""

    content = SECRET


class TinyHub(BaseHTTPRequestHandler):
    """A hub of the tests' own: ``listings`` (repo -> its siblings, or a whole document),
    ``files`` (request path -> bytes, a Redirect, or ENDLESS); a GET of a file waits for
    ``release``; requests are recorded in ``seen``.  The tree of org/sneaky (what
    snapshot_download fetches) has a file its listing lacks."""

    listings: dict[str, list | dict] = {
        "org/evil": [_lfs("model.safetensors", GOOD)],
        "org/slow": [_lfs("model.safetensors", GOOD)],
        "org/sneaky": [_lfs("model.safetensors", GOOD)],
    }
    files: dict[str, object] = {
        _resolve("org/evil", "model.safetensors"): BAD,
        _resolve("org/slow", "model.safetensors"): GOOD,
        _resolve("org/sneaky", "model.safetensors"): Redirect("/cdn/model.safetensors"),
        "/cdn/model.safetensors": GOOD,
        _resolve("org/sneaky", "run.py"): b"print('hi')\n",
    }
    SNEAKY = {"type": "file", "path": "run.py", "size": 12, "oid": "1" * 40}
    seen: list[tuple[str, str, str]] = []
    streamed = 0  # bytes of the ENDLESS body written before the reader hung up
    release = threading.Event()

    def log_message(self, *args):  # noqa: ANN002
        pass

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for k, v in {**headers, "Content-Length": str(len(body))}.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, document: object) -> None:
        self._send(200, {"Content-Type": "application/json"}, json.dumps(document).encode())

    def _document(self, repo: str) -> dict:
        listing = self.listings[repo]
        if isinstance(listing, dict):
            return listing
        return {"_id": COMMIT, "id": repo, "sha": COMMIT, "private": False, "siblings": listing}

    def _tree(self, repo: str) -> list[dict]:
        entries = []
        for s in self._document(repo)["siblings"]:
            entry = {"type": "file", "path": s["rfilename"], "size": s.get("size", 0),
                     "oid": s.get("blobId", "0" * 40)}  # fmt: skip
            if "lfs" in s:
                entry["lfs"] = {"oid": s["lfs"]["sha256"], "size": s["size"], "pointerSize": 134}
            entries.append(entry)
        return entries + ([self.SNEAKY] if repo == "org/sneaky" else [])

    def _file(self, body: object) -> None:
        if self.command == "GET":
            assert TinyHub.release.wait(120)
        if isinstance(body, Redirect):
            data = body.content if "://" in body else GOOD
            return self._send(302, {
                "Location": body, "X-Repo-Commit": COMMIT, "X-Linked-Size": str(len(data)),
                "X-Linked-Etag": f'"{hashlib.sha256(data).hexdigest()}"',
            }, b"")  # fmt: skip
        etag = hashlib.sha256(body).hexdigest() if isinstance(body, bytes) else COMMIT
        headers = {"ETag": f'"{etag}"', "X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes",
                   "Content-Type": "application/octet-stream"}  # fmt: skip
        if body is not ENDLESS:
            return self._send(200, headers, body)
        self.send_response(200)
        for k, v in headers.items():
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD":
            return
        chunk = b"x" * 65536
        try:
            for _ in range(1024):
                self.wfile.write(chunk)
                TinyHub.streamed += len(chunk)
        except OSError:
            pass  # the reader stopped

    def _handle(self) -> None:
        TinyHub.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        path = self.path.split("?")[0]
        for repo in self.listings:
            if path.startswith(f"/api/models/{repo}/revision/"):
                return self._json(self._document(repo))
            if path == f"/api/models/{repo}/tree/{COMMIT}":  # what snapshot_download lists
                return self._json(self._tree(repo))
        if path in self.files:
            return self._file(self.files[path])
        self._send(404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}')

    do_GET = do_HEAD = _handle


class Internal(BaseHTTPRequestHandler):
    """A service on the gateway's own network (an instance metadata service, an admin
    page): it must never be asked anything on a client's behalf."""

    hits: list[str] = []

    def log_message(self, *args):  # noqa: ANN002
        pass

    def do_GET(self) -> None:
        Internal.hits.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(SECRET)))
        self.end_headers()
        self.wfile.write(SECRET)

    do_HEAD = do_GET


@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a free port of 127.0.0.1, for the block: its URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def tiny_hub():
    with _serving(TinyHub) as url:
        TinyHub.seen = []
        TinyHub.release.set()
        yield url
        TinyHub.release.set()


def test_files_unlike_the_upstreams_listing_are_never_imported(tiny_hub, registry, tmp_path):
    """Bytes that fail their listed sha256: refused, not pushed."""
    repo = "org/evil"
    gateway = Gateway(
        f"{registry.host}/{NS}-hostile",
        tmp_path / "gateway",
        ("--upstream", tiny_hub, "--upstream-allow", "org/*"),
        env={"MODELPACK_GATEWAY_UPSTREAM_TOKEN": TOKEN},
    ).start()
    try:
        (result,) = gateway.hf([["file", repo, "model.safetensors", "main"]], tmp_path / "hf")
        assert result["error"] == "GatedRepoError" and result["status"] == 403, result
        assert "listing" in result["message"] and "nothing was imported" in result["message"]
        log = gateway.wait_for_log(rf"upstream: import of {repo}@main failed: .*has sha256")
        assert TOKEN not in log
    finally:
        gateway.stop()
    # The bytes were downloaded (and refused), the token went to the upstream only.
    downloads = [s for s in TinyHub.seen if s[0] == "GET" and "/resolve/" in s[1]]
    assert downloads and all(auth == f"Bearer {TOKEN}" for _, _, auth in TinyHub.seen)
    tags = requests.get(f"{registry.url}/v2/{NS}-hostile/{repo}/tags/list", timeout=30)
    assert tags.status_code == 404  # nothing pushed
    leftovers = list((gateway.cache / "upstream").glob("import-*"))
    assert leftovers == []
    assert not list(gateway.cache.rglob("*.safetensors"))


def test_only_listed_files_are_fetched_and_same_origin_redirects_are_followed(
    tiny_hub, registry, tmp_path
):
    """org/sneaky's tree names run.py, its listing does not: the import fetches what the
    listing names, never the tree; its download redirects within the upstream: followed."""
    gateway = Gateway(
        f"{registry.host}/{NS}-sneaky",
        tmp_path / "gateway",
        ("--upstream", tiny_hub, "--upstream-allow", "org/sneaky"),
    ).start()
    try:
        response = _info(gateway, "org/sneaky")
        assert response.status_code == 200, response.text
        assert [s["rfilename"] for s in response.json()["siblings"]] == ["model.safetensors"]
        (result,) = gateway.hf([["file", "org/sneaky", "model.safetensors", "main"]], tmp_path)
        assert Path(result["path"]).read_bytes() == GOOD, result
    finally:
        gateway.stop()
    paths = [path for _, path, _ in TinyHub.seen]
    assert "/cdn/model.safetensors" in paths
    assert not [p for p in paths if "run.py" in p or "/tree/" in p]


# The caps of the hostile gateway (docs/gateway.md has the defaults).
CAPS = {
    "MODELPACK_GATEWAY_UPSTREAM_MAX_FILES": "3",
    "MODELPACK_GATEWAY_UPSTREAM_MAX_FILE_BYTES": "1MiB",
    "MODELPACK_GATEWAY_UPSTREAM_MAX_REPO_BYTES": "2MiB",
    "MODELPACK_GATEWAY_UPSTREAM_MAX_LISTING_BYTES": "64KiB",
}
BIG = b"\0" * (1536 * 1024)  # over the file cap
PART = b"\0" * (800 * 1024)  # three are over the repo cap


@pytest.fixture(scope="module")
def hostile(registry, tmp_path_factory):
    """A gateway whose upstream lies, with the caps above; ``localhost`` is an allowed
    redirect host (a name that resolves to loopback)."""
    with _serving(Internal) as internal, _serving(TinyHub) as hub:
        port = internal.rsplit(":", 1)[1]
        TinyHub.release.set()
        TinyHub.listings.update({
            "org/nosize": [{"rfilename": "secret.bin"}],
            "org/otherport": [_lfs("secret.bin", SECRET)],
            "org/rebind": [_lfs("secret.bin", SECRET)],
            "org/otherhost": [_lfs("secret.bin", SECRET)],
            "org/many": [_lfs(f"f{i}.bin", bytes([i])) for i in range(4)],
            "org/huge": [_lfs("big.bin", BIG)],
            "org/bulky": [_lfs(f"part{i}.bin", PART) for i in range(3)],
            "org/wordy": {"id": "org/wordy", "sha": COMMIT, "siblings": [_lfs("model.safetensors", GOOD)],
                          "cardData": {"padding": "x" * 100_000}},
            "org/gitblob": [{"rfilename": "config.json", "size": len(CONFIG),
                             "blobId": _git_blob_id(CONFIG)}],
            "org/endless": [{"rfilename": "notes.txt", "size": 10}],
        })  # fmt: skip
        TinyHub.files.update({
            _resolve("org/nosize", "secret.bin"): Redirect(f"{internal}/latest/meta-data"),
            _resolve("org/otherport", "secret.bin"): Redirect(f"{internal}/admin"),
            _resolve("org/rebind", "secret.bin"): Redirect(f"http://localhost:{port}/admin"),
            _resolve("org/otherhost", "secret.bin"): Redirect(f"http://127.0.0.2:{port}/"),
            **{_resolve("org/many", f"f{i}.bin"): bytes([i]) for i in range(4)},
            _resolve("org/huge", "big.bin"): BIG,
            **{_resolve("org/bulky", f"part{i}.bin"): PART for i in range(3)},
            _resolve("org/wordy", "model.safetensors"): GOOD,
            _resolve("org/gitblob", "config.json"): CONFIG.replace(b"bert", b"evil"),
            _resolve("org/endless", "notes.txt"): ENDLESS,
        })  # fmt: skip
        gateway = Gateway(
            f"{registry.host}/{NS}-refused",
            tmp_path_factory.mktemp("hostile"),
            ("--upstream", hub, "--upstream-allow", "org/*"),
            env={**CAPS, "MODELPACK_GATEWAY_UPSTREAM_REDIRECT_ALLOW": "localhost"},
        ).start()
        try:
            yield gateway
        finally:
            gateway.stop()


def test_a_listing_without_sizes_cannot_point_the_gateway_at_its_own_network(hostile, tmp_path):
    """The reported attack: a file listed without a size whose download redirects to
    http://127.0.0.1:PORT/...; an anonymous client asks for it."""
    (result,) = hostile.hf([["file", "org/nosize", "secret.bin", "main"]], tmp_path / "hf")
    assert result.get("error") == "GatedRepoError" and result["status"] == 403, result
    hostile.wait_for_log(r"upstream: import of org/nosize@main failed: .*without a size")
    assert Internal.hits == []
    assert not [p for p in (tmp_path / "hf").rglob("*") if p.is_file() and SECRET in p.read_bytes()]


@pytest.mark.parametrize(
    ("repo", "reason"),
    [
        ("org/nosize", "'secret.bin' is listed without a size"),
        # the upstream's host on another port: allowed by name, refused by address
        ("org/otherport", r"refused to connect to 127\.0\.0\.1:\d+: .* not a global address"),
        # an allowed name that resolves to loopback (as a rebinding name would, at connect)
        ("org/rebind", r"refused to connect to localhost:\d+: .* not a global address"),
        ("org/otherhost", "127.0.0.2 is neither the upstream's host nor in --upstream-redirect"),
        ("org/many", "4 files listed, more than 3"),
        ("org/huge", "'big.bin' is listed as 1572864 bytes, more than 1048576"),
        ("org/bulky", "2457600 bytes listed, more than 2097152"),
        ("org/wordy", "the listing is larger than 65536 bytes"),
        ("org/gitblob", "config.json has git blob id"),
        ("org/endless", "notes.txt: more than the listed 10 bytes"),
    ],
)
def test_an_upstream_that_breaks_the_import_rules_is_refused(hostile, registry, repo, reason):
    """Each attack: one 403 in the hub's format, the detail in the log, nothing pushed,
    the gateway's own network never asked."""
    response = _info(hostile, repo)
    assert response.status_code == 403, response.text
    assert response.headers["X-Error-Code"] == "GatedRepo"
    assert "nothing was imported" in response.json()["error"]
    assert registry.host not in response.text and "127.0.0.1" not in response.text
    log = hostile.wait_for_log(rf"upstream: import of {repo}@main failed: .*{reason}")
    assert "Traceback" not in log
    assert Internal.hits == []
    tags = requests.get(f"{registry.url}/v2/{NS}-refused/{repo}/tags/list", timeout=30)
    assert tags.status_code == 404
    if repo == "org/endless":  # read no further than its size (and the socket's buffers)
        assert TinyHub.streamed < 16 * 1024 * 1024


def test_a_file_request_during_a_long_import_is_told_to_retry(tiny_hub, registry, tmp_path):
    """hf_hub_download's HEAD (10 s timeout) gets 503 + Retry-After while the import runs,
    retries, and gets the file once it is imported; the upstream sent it once."""
    gateway = Gateway(
        f"{registry.host}/{NS}-slow",
        tmp_path / "gateway",
        ("--upstream", tiny_hub, "--upstream-allow", "org/slow"),
        env={"HF_TOKEN": "hf_the_gateways_own_env"},  # not for the upstream: never sent
    ).start()
    TinyHub.release.clear()
    try:
        with ThreadPoolExecutor(1) as pool:
            download = pool.submit(
                gateway.hf, [["file", "org/slow", "model.safetensors", "main"]], tmp_path / "hf"
            )
            gateway.wait_for_log(r"HEAD /org/slow/resolve/main/model.safetensors 503", 60)
            TinyHub.release.set()
            (result,) = download.result(timeout=300)
        assert Path(result["path"]).read_bytes() == GOOD, result
    finally:
        TinyHub.release.set()
        gateway.stop()
    gets = [s for s in TinyHub.seen if s[0] == "GET" and "/resolve/" in s[1]]
    assert len(gets) == 1
    assert TinyHub.seen and all(auth == "" for _, _, auth in TinyHub.seen)  # none configured
