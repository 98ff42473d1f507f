"""`modelpack serve --upstream`: repos the registry lacks are imported from another hub.

The upstream is a second `modelpack serve` in front of a second registry (MatrixHub's
`hfd` cannot be fetched through the Go module proxy here: docs/gateway.md), plus a
tiny hostile hub in this process that lists one sha256 and sends other bytes.
"""

import hashlib
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
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
                         "org/tiny-shared:main", "org/tiny-pr:main", "org/other:main"):  # fmt: skip
                build_and_push(model, f"{up_registry.host}/{UP}/{name}", settings)
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
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--registry", "127.0.0.1:5000/ns", "--upstream", "http://127.0.0.1:1",
              "--offline"])  # fmt: skip
    assert exit_.value.code == 0
    (config,) = seen
    assert config.upstream_allow == ("org/*", "team/bert")
    assert config.upstream_token == TOKEN and TOKEN not in repr(config)
    assert config.offline
    assert any("offline" in line for line in config.banner())


def test_upstream_needs_an_allow_list():
    with pytest.raises(UsageError, match="--upstream-allow"):
        GatewayConfig("127.0.0.1:5000", upstream="http://127.0.0.1:1")
    with pytest.raises(UsageError, match="http"):
        GatewayConfig("127.0.0.1:5000", upstream="ftp://x", upstream_allow=("*",))
    config = GatewayConfig(
        "127.0.0.1:5000", upstream="http://up/", upstream_allow=("a/*",), upstream_token="s3cret"
    )
    assert "s3cret" not in repr(config) and config.upstream == "http://up"


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


class TinyHub(BaseHTTPRequestHandler):
    """Lists model.safetensors with sha256(GOOD) for every repo in ``served``; sends what
    ``served`` says (org/evil: BAD), a GET not before ``release`` is set; records requests.
    The tree of org/sneaky (what snapshot_download fetches) has a file the listing lacks."""

    served = {"org/evil": BAD, "org/slow": GOOD, "org/sneaky": GOOD}
    SNEAKY = {"type": "file", "path": "run.py", "size": 12, "oid": "1" * 40}
    seen: list[tuple[str, str, str]] = []
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

    def _handle(self) -> None:
        TinyHub.seen.append((self.command, self.path, self.headers.get("Authorization", "")))
        path = self.path.split("?")[0]
        sha = hashlib.sha256(GOOD).hexdigest()
        for repo, data in self.served.items():
            if path.startswith(f"/api/models/{repo}/revision/"):
                return self._json({
                    "_id": COMMIT, "id": repo, "sha": COMMIT, "private": False, "siblings": [
                        {"rfilename": "model.safetensors", "size": len(GOOD), "blobId": sha[:40],
                         "lfs": {"sha256": sha, "size": len(GOOD), "pointerSize": 134}},
                    ],
                })  # fmt: skip
            if path == f"/api/models/{repo}/tree/{COMMIT}":  # what snapshot_download lists
                return self._json([
                    {"type": "file", "path": "model.safetensors", "size": len(GOOD),
                     "oid": sha[:40], "lfs": {"oid": sha, "size": len(GOOD), "pointerSize": 134}},
                    *([self.SNEAKY] if repo == "org/sneaky" else []),
                ])  # fmt: skip
            if path == f"/{repo}/resolve/{COMMIT}/run.py" and repo == "org/sneaky":
                return self._send(200, {"ETag": '"' + "1" * 40 + '"', "X-Repo-Commit": COMMIT},
                                  b"print('hi')\n")  # fmt: skip
            if path == f"/{repo}/resolve/{COMMIT}/model.safetensors":
                if self.command == "GET":
                    assert TinyHub.release.wait(120)
                return self._send(200, {
                    "ETag": f'"{sha}"', "X-Repo-Commit": COMMIT, "Accept-Ranges": "bytes",
                    "Content-Type": "application/octet-stream",
                }, data)  # fmt: skip
        self._send(404, {"X-Error-Code": "RepoNotFound"}, b'{"error": "Repository not found"}')

    do_GET = do_HEAD = _handle


@pytest.fixture
def tiny_hub():
    server = ThreadingHTTPServer(("127.0.0.1", 0), TinyHub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    TinyHub.seen = []
    TinyHub.release.set()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    TinyHub.release.set()
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("repo", "reason"),
    [("org/evil", "has sha256"), ("org/sneaky", "run.py downloaded but not listed")],
)
def test_files_unlike_the_upstreams_listing_are_never_imported(
    tiny_hub, registry, tmp_path, repo, reason
):
    """Bytes that fail their listed sha256, or a file the listing lacks: refused, not pushed."""
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
        log = gateway.wait_for_log(rf"upstream: import of {repo}@main failed: .*{reason}")
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
