"""The audit trail and protected tags of `modelpack serve`, against the real registry (basic
auth), with huggingface_hub (and hf_xet) in subprocesses and Debian's nginx as the balancer:
the lines of a download, an upload and refusals; no secret in any line; a download cut
short logged with what was sent; X-Forwarded-For believed from the trusted proxy only; a
protected tag or branch refused through every write route with the registry unchanged;
an upstream import on stdout (``--audit-log -``)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import jsonschema
import pytest
import requests
from support.gateway import CATCH, Gateway
from support.helpers import build_and_push, tree_files

from modelpack.schemas import GATEWAY_AUDIT, load_schema
from modelpack.settings import Settings
from modelpack.testing import RegistryServer, make_tiny_model
from modelpack.testing.registry import free_port

NAMESPACE = "audit"
PUSHER, PUSH_PASSWORD = "pusher", "Push-s3cret-7f1c"
WRONG_PASSWORD = "Wrong-s3cret-99ab"
SCHEMA = jsonschema.Draft202012Validator(load_schema(GATEWAY_AUDIT))
PROXY_SOURCE = "127.0.0.3"  # the balancer's address, the only trusted one
FORGED_USER = 'x"}\n{"action" "forged", "repo" "forged"}'  # no colon: all of it the user


def basic_header(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


class Trail:
    """The audit log a gateway writes, read back line by line."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def lines(self) -> list[dict]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text("ascii").splitlines()]

    def wait(self, count: int = 1, timeout: float = 20.0, **match) -> list[dict]:
        """The lines with these fields, once there are ``count`` (a request's line is
        written after its answer went out, so a client may finish first)."""
        deadline = time.monotonic() + timeout
        while True:
            found = [
                line for line in self.lines() if all(line.get(k) == v for k, v in match.items())
            ]
            if len(found) >= count or time.monotonic() > deadline:
                assert len(found) >= count, (match, self.lines()[-20:])
                return found
            time.sleep(0.05)


class Nginx:
    """Debian's nginx as the balancer: it connects to the gateway from PROXY_SOURCE and
    appends the address it was reached from to X-Forwarded-For."""

    def __init__(self, work: Path, upstream: str) -> None:
        self.work = work
        self.port = free_port()
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        work.mkdir(parents=True, exist_ok=True)
        user = "user root;" if os.geteuid() == 0 else ""
        conf = work / "nginx.conf"
        conf.write_text(f"""
{user}
daemon off;
worker_processes 1;
pid {work}/nginx.pid;
error_log {work}/error.log warn;
events {{ worker_connections 64; }}
http {{
    access_log {work}/access.log;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    server {{
        listen 127.0.0.1:{self.port};
        location / {{
            proxy_pass http://{upstream};
            proxy_bind {PROXY_SOURCE};
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }}
    }}
}}
""")
        self.process = subprocess.Popen(
            [binary, "-c", str(conf), "-p", str(work)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 30
        while True:
            assert self.process.poll() is None, (work / "error.log").read_text()
            try:
                if requests.get(f"http://127.0.0.1:{self.port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() < deadline, "nginx did not answer"
            time.sleep(0.05)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=20)


def get_from(source: str, port: int, path: str, headers: dict[str, str]) -> int:
    """A GET sent from the local address ``source``; the status."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60,
                                            source_address=(source, 0))  # fmt: skip
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """(registry, gateway, its audit trail, a tiny model pushed as team/pushed:v1)."""
    work = tmp_path_factory.mktemp("audit")
    with RegistryServer(users={PUSHER: PUSH_PASSWORD}, workdir=work / "registry") as registry:
        model = make_tiny_model(work / "tiny")
        big = work / "big"
        shutil.copytree(model, big)
        (big / "big.dat").write_bytes(
            os.urandom(64 << 20)
        )  # a download to cut short (.bin: scanned)
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MODELPACK_USERNAME", PUSHER)
            mp.setenv("MODELPACK_PASSWORD", PUSH_PASSWORD)
            settings = Settings(home=work / "home", plain_http=True)
            build_and_push(model, f"{registry.host}/{NAMESPACE}/team/pushed:v1", settings)
            build_and_push(big, f"{registry.host}/{NAMESPACE}/team/big:v1", settings,
                           allow_unsafe_pickle=True)  # fmt: skip
        trail = Trail(work / "audit" / "audit.log")
        trail.path.parent.mkdir()
        args = ("--audit-log", str(trail.path), "--inline-max", "1024",
                "--protect", "v*", "--protect", "release-*", "--trusted-proxy", PROXY_SOURCE)  # fmt: skip
        gateway = Gateway(f"{registry.host}/{NAMESPACE}", work / "gateway", args).start()
        try:
            yield registry, gateway, trail, model
        finally:
            gateway.stop()


def token() -> str:
    return f"{PUSHER}:{PUSH_PASSWORD}"


def test_the_audit_lines_of_an_upload_a_download_and_refusals(world, tmp_path):
    registry, gateway, trail, model = world
    upload = f"""
import json
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("team/audited")
info = api.upload_folder(repo_id="team/audited", folder_path={str(model)!r})
print(json.dumps(info.oid))
"""
    commit = gateway.client(upload, None, tmp_path / "up", token())
    (line,) = trail.wait(action="commit", repo="team/audited")
    assert line["user"] == PUSHER and line["status"] == 200 and line["commit"] == commit
    assert line["revision"] == "main" and line["client"] == "127.0.0.1" and line["bytes"] > 0
    assert line["path"] is None
    (created,) = trail.wait(action="create-repo", repo="team/audited")
    assert created["user"] == PUSHER and created["status"] == 200 and created["revision"] == "main"
    # hf_xet sent the files over 1 KiB as xorbs and a shard, named after the token's user.
    xorbs = trail.wait(action="xet-xorb", repo="team/audited")
    assert {x["user"] for x in xorbs} == {PUSHER} and all(x["bytes"] > 0 for x in xorbs)
    assert all(len(x["digest"]) == 64 for x in xorbs)
    (shard,) = trail.wait(action="xet-shard", repo="team/audited")
    assert shard["status"] == 200 and shard["user"] == PUSHER

    # The same folder through LFS (no Xet): each object received is a line.
    lfs = f"""
import json, os
from huggingface_hub import HfApi, CommitOperationAdd
api = HfApi()
data = os.urandom(5000)
with open({str(tmp_path / "lfs.dat")!r}, "wb") as f:
    f.write(data)
with open({str(tmp_path / "lfs.dat")!r}, "rb") as f:
    info = api.create_commit("team/audited", [CommitOperationAdd("lfs.dat", f)], commit_message="lfs")
print(json.dumps(info.oid))
"""
    gateway.client(lfs, None, tmp_path / "lfs", token())
    digest = "sha256:" + hashlib.sha256((tmp_path / "lfs.dat").read_bytes()).hexdigest()
    (put,) = trail.wait(action="lfs-upload", digest=digest)
    assert put["user"] == PUSHER and put["status"] == 200 and put["bytes"] == 5000
    assert put["repo"] == "team/audited" and put["path"] is None

    # A download: one line per file read, with the bytes sent.
    (result,) = gateway.hf([["snapshot", "team/pushed", "v1"]], tmp_path / "down", token())
    assert tree_files(Path(result["path"])) == tree_files(model)
    for path, data in tree_files(model).items():
        (read,) = trail.wait(action="download", repo="team/pushed", path=path)
        assert read["status"] == 200 and read["bytes"] == len(data) and read["user"] == PUSHER
        assert read["revision"] in ("v1",) or len(read["revision"]) == 40  # by tag or commit
    assert not trail.wait(0, action="file-metadata")  # HEADs are no reads: not written

    # Refusals: anonymous (401), a wrong password writing (403).
    (anonymous,) = gateway.hf([["snapshot", "team/pushed", "v1"]], tmp_path / "anon")
    assert anonymous["status"] == 401
    (refused,) = trail.wait(status=401, repo="team/pushed", user=None)
    assert refused["action"] == "info" and "Repository not found" in refused["error"]
    wrong = (
        CATCH
        + """
import json
from huggingface_hub import HfApi
print(json.dumps(attempt(lambda: HfApi().upload_file(path_or_fileobj=b"x", path_in_repo="x",
                                                      repo_id="team/audited"))))
"""
    )
    answer = gateway.client(wrong, None, tmp_path / "wrong", f"{PUSHER}:{WRONG_PASSWORD}")
    assert answer["status"] == 403
    (denied,) = trail.wait(status=403, action="preupload", repo="team/audited")
    assert denied["user"] == PUSHER and "rights to push" in denied["error"]

    for line in trail.lines():
        SCHEMA.validate(line)
    metrics = gateway.metrics()
    assert metrics['modelpack_gateway_audit_events_total{action="commit",status="200"}'] >= 2
    assert metrics['modelpack_gateway_audit_events_total{action="info",status="401"}'] >= 1


def test_no_secret_reaches_the_audit_log(world, tmp_path):
    """Passwords, the Basic header, a Bearer token, a Xet token and an LFS upload ticket
    are each used in requests; none is in any audit line, nor the LFS ticket in the log."""
    _, gateway, trail, _ = world
    auth = {"Authorization": f"Bearer {token()}"}
    base = f"{gateway.url}/api/models/team/audited"
    xet = requests.get(f"{base}/xet-write-token/main", headers=auth, timeout=60)
    assert xet.status_code == 200, xet.text
    xet_token = xet.json()["accessToken"]
    shard = requests.post(f"{gateway.url}/api/modelpack/xet/v1/shards", data=b"not a shard",
                          headers={"Authorization": f"Bearer {xet_token}"}, timeout=60)  # fmt: skip
    assert shard.status_code == 400
    data = os.urandom(3000)
    oid = hashlib.sha256(data).hexdigest()
    batch = requests.post(
        f"{gateway.url}/team/audited.git/info/lfs/objects/batch",
        data=json.dumps({"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]}),
        headers={"Content-Type": "application/vnd.git-lfs+json",
                 "Authorization": basic_header(PUSHER, PUSH_PASSWORD)}, timeout=60,
    )  # fmt: skip
    href = batch.json()["objects"][0]["actions"]["upload"]["href"]
    ticket = href.rsplit("/", 1)[1]
    assert requests.put(href, data=b"y" * 3000, timeout=60).status_code == 400  # wrong bytes
    assert requests.put(href, data=data, timeout=60).status_code == 200
    identity = "identity-token-0f9e8d7c6b5a"
    assert requests.get(f"{base}/revision/main", timeout=60,
                        headers={"Authorization": f"Bearer {identity}"}).status_code == 401  # fmt: skip
    wrong = basic_header(PUSHER, WRONG_PASSWORD)
    assert requests.get(f"{gateway.url}/team/audited/resolve/main/config.json", timeout=60,
                        headers={"Authorization": wrong}).status_code == 401  # fmt: skip
    # A user name that tries to end its line and forge another stays inside its field.
    forged = basic_header(FORGED_USER, "pw")
    assert requests.get(f"{base}/revision/main", headers={"Authorization": forged},
                        timeout=60).status_code == 401  # fmt: skip
    trail.wait(action="xet-shard", status=400, user=PUSHER)
    (refused_put,) = trail.wait(action="lfs-upload", status=400, digest=f"sha256:{oid}")
    assert refused_put["user"] == PUSHER and refused_put["bytes"] == 3000
    identified = trail.wait(status=401, action="info", repo="team/audited")
    assert any(line["user"].startswith("token:") for line in identified)
    trail.wait(status=401, action="download", path="config.json", user=PUSHER)

    assert not [line for line in trail.lines() if "forged" in (line["action"], line["repo"])]
    trail.wait(user=FORGED_USER, status=401)  # one line, its user escaped
    text = trail.path.read_text("ascii")
    secrets = [PUSH_PASSWORD, WRONG_PASSWORD, basic_header(PUSHER, PUSH_PASSWORD)[6:],
               wrong[6:], token(), xet_token, ticket, identity]  # fmt: skip
    assert [s for s in secrets if s in text] == []
    assert ticket not in gateway.log()  # the request log names the route, not the ticket


def test_a_download_cut_short_is_logged_with_the_bytes_sent(world):
    _, gateway, trail, _ = world
    path = "/team/big/resolve/v1/big.dat"
    headers = {"Authorization": f"Bearer {token()}"}
    whole = requests.get(f"{gateway.url}{path}", headers=headers, timeout=120)  # cached now
    assert whole.status_code == 200 and len(whole.content) == 64 << 20
    sock = socket.create_connection(("127.0.0.1", gateway.port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token()}"
                 "\r\n\r\n".encode())  # fmt: skip
    data = b""
    while len(data) < 1 << 20:
        data += sock.recv(65536)
    received = len(data.partition(b"\r\n\r\n")[2])  # the body bytes that arrived
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    sock.close()  # a reset, with most of the file unsent
    lines = trail.wait(2, action="download", path="big.dat")
    assert lines[0]["bytes"] == 64 << 20 and lines[0]["status"] == 200
    cut = lines[1]
    assert cut["status"] == 200  # the status that was sent
    assert received <= cut["bytes"] < 64 << 20, cut
    gateway.wait_for_log(r"GET /team/big/resolve/v1/big.dat 200 \d+B cache [\d.]+ms \(cut\)")


def test_x_forwarded_for_is_believed_from_the_trusted_balancer_only(world, tmp_path):
    _, gateway, trail, _ = world
    nginx = Nginx(tmp_path / "nginx", f"127.0.0.1:{gateway.port}")
    try:
        spoof = {"X-Forwarded-For": "198.51.100.66"}
        # Through the balancer, from 127.0.0.5, a client that wrote its own header.
        status = get_from("127.0.0.5", nginx.port, "/team/pushed/resolve/v1/config.json", spoof)
        assert status == 401  # anonymous: a refusal, so a line
        # Straight to the gateway from 127.0.0.2 (no trusted proxy) with the same header.
        status = get_from("127.0.0.2", gateway.port, "/team/pushed/resolve/v1/README.md", spoof)
        assert status == 401
    finally:
        nginx.stop()
    (through,) = trail.wait(action="download", repo="team/pushed", path="config.json", status=401)
    assert through["client"] == "127.0.0.5"  # what nginx appended, not what the client wrote
    (direct,) = trail.wait(action="download", repo="team/pushed", path="README.md", status=401)
    assert direct["client"] == "127.0.0.2"
    assert "198.51.100.66" not in trail.path.read_text("ascii")


def _registry_refs(registry: RegistryServer, repository: str) -> dict[str, str]:
    """tag -> manifest digest, as the registry has them."""
    auth = (PUSHER, PUSH_PASSWORD)
    url = f"{registry.url}/v2/{NAMESPACE}/{repository}"
    tags = requests.get(f"{url}/tags/list", auth=auth, timeout=30).json()["tags"]
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    return {
        tag: requests.head(f"{url}/manifests/{tag}", auth=auth, headers=accept, timeout=30).headers[
            "Docker-Content-Digest"
        ]  # fmt: skip
        for tag in tags
    }


def test_a_protected_tag_or_branch_is_never_moved(world, tmp_path):
    registry, gateway, trail, _ = world
    setup = """
import json
from huggingface_hub import HfApi
api = HfApi()
api.create_repo("team/prot")
api.upload_file(path_or_fileobj=b"one", path_in_repo="a.txt", repo_id="team/prot")
api.create_tag("team/prot", tag="v1")             # protected names may be created
api.create_branch("team/prot", branch="release-1")
print(json.dumps("ok"))
"""
    gateway.client(setup, None, tmp_path / "setup", token())
    before = _registry_refs(registry, "team/prot")
    assert {"main", "v1", "release-1"} <= set(before)

    refusals = (
        CATCH
        + """
import json
from huggingface_hub import HfApi
api = HfApi()
big = b"z" * 5000  # over --inline-max: through Xet or LFS
r = {
    "tag again": attempt(lambda: api.create_tag("team/prot", tag="v1", exist_ok=True)),
    "tag over a branch": attempt(lambda: api.create_tag("team/prot", tag="release-1")),
    "branch again": attempt(lambda: api.create_branch("team/prot", branch="release-1")),
    "upload": attempt(lambda: api.upload_file(path_or_fileobj=b"two", path_in_repo="b.txt",
                                              repo_id="team/prot", revision="release-1")),
    "upload big": attempt(lambda: api.upload_file(path_or_fileobj=big, path_in_repo="c.bin",
                                                  repo_id="team/prot", revision="release-1")),
    "upload to a tag": attempt(lambda: api.upload_file(path_or_fileobj=b"two",
                               path_in_repo="b.txt", repo_id="team/prot", revision="v1")),
    "delete file": attempt(lambda: api.delete_file("a.txt", repo_id="team/prot",
                                                   revision="release-1")),
    "delete branch": attempt(lambda: api.delete_branch("team/prot", branch="release-1")),
    "delete tag": attempt(lambda: api.delete_tag("team/prot", tag="v1")),
    "squash": attempt(lambda: api.super_squash_history("team/prot", branch="release-1")),
}
print(json.dumps(r))
"""
    )
    out = gateway.client(refusals, None, tmp_path / "refused", token())
    # create_branch(exist_ok=True) takes a 403 for a branch that exists as done (it lists
    # the refs): the branch is there, unmoved, and the refusal is still an audit line.
    exist_ok = """
import json
from huggingface_hub import HfApi
HfApi().create_branch("team/prot", branch="release-1", exist_ok=True)
print(json.dumps("ok"))
"""
    assert gateway.client(exist_ok, None, tmp_path / "exist-ok", token()) == "ok"
    for what, answer in out.items():
        assert answer.get("status") == 403, (what, answer)
        assert answer["error"] == "HfHubHTTPError", (what, answer)
        assert "is protected on this gateway" in answer["message"], (what, answer)
    assert "--protect 'release-*'" in out["upload"]["message"]

    # What the routes before a commit are asked directly (LFS batch, Xet token) answers so too.
    auth = {"Authorization": f"Bearer {token()}"}
    batch = requests.post(
        f"{gateway.url}/team/prot.git/info/lfs/objects/batch",
        data=json.dumps({"operation": "upload", "ref": {"name": "refs/heads/release-1"},
                         "objects": [{"oid": "0" * 64, "size": 1}]}),
        headers={"Content-Type": "application/vnd.git-lfs+json", **auth}, timeout=60,
    )  # fmt: skip
    assert batch.status_code == 403 and "protected" in batch.headers["X-Error-Message"]
    xet = requests.get(f"{gateway.url}/api/models/team/prot/xet-write-token/v1", headers=auth,
                       timeout=60)  # fmt: skip
    assert xet.status_code == 403
    # The name percent-encoded in the URL is the same name.
    encoded = requests.post(
        f"{gateway.url}/api/models/team/prot/commit/release%2D1",
        data=b'{"key":"header","value":{"summary":"x"}}\n',
        headers={"Content-Type": "application/x-ndjson", **auth}, timeout=60,
    )  # fmt: skip
    assert encoded.status_code == 403
    assert _registry_refs(registry, "team/prot") == before  # the registry unchanged

    refused = trail.wait(14, status=403, repo="team/prot")
    actions = sorted({line["action"] for line in refused})
    assert actions == ["commit", "create-branch", "create-tag", "delete-branch", "delete-tag",
                       "lfs-batch", "preupload", "super-squash", "xet-write-token"]  # fmt: skip
    assert all("protected" in line["error"] and line["user"] == PUSHER for line in refused)
    (squash,) = [line for line in refused if line["action"] == "super-squash"]
    assert squash["revision"] == "release-1"

    # Unprotected names move as before; deleting one is not supported (400, unchanged).
    after = (
        CATCH
        + """
import json
from huggingface_hub import HfApi
api = HfApi()
print(json.dumps({
    "main": attempt(lambda: api.upload_file(path_or_fileobj=b"two", path_in_repo="b.txt",
                                            repo_id="team/prot").oid),
    "new tag": attempt(lambda: api.create_tag("team/prot", tag="v2")),
    "delete main": attempt(lambda: api.delete_branch("team/prot", branch="main")),
}))
"""
    )
    out = gateway.client(after, None, tmp_path / "after", token())
    assert "ok" in out["main"] and "ok" in out["new tag"]
    assert out["delete main"]["status"] == 400
    now = _registry_refs(registry, "team/prot")
    assert now["v1"] == before["v1"] and now["release-1"] == before["release-1"]
    assert now["main"] != before["main"] and "v2" in now


def test_an_upstream_import_is_an_audit_line_on_stdout(registry, tmp_path):
    """``--audit-log -``: the import a request started is a line naming that client."""
    model = make_tiny_model(tmp_path / "tiny")
    with RegistryServer(workdir=tmp_path / "up-registry") as up_registry:
        settings = Settings(home=tmp_path / "home", plain_http=True)
        build_and_push(model, f"{up_registry.host}/up/org/imported:main", settings)
        upstream = Gateway(f"{up_registry.host}/up", tmp_path / "upstream").start()
        gateway = Gateway(f"{registry.host}/audit-import", tmp_path / "gateway",
                          ("--upstream", upstream.url, "--upstream-allow", "org/*",
                           "--audit-log", "-")).start()  # fmt: skip
        try:
            info = requests.get(f"{gateway.url}/api/models/org/imported/revision/main",
                                headers={"Authorization": "Bearer someone:pw"}, timeout=300)  # fmt: skip
            assert info.status_code == 200, info.text
            log = gateway.wait_for_log(r'"action":"import"')
        finally:
            gateway.stop()
            upstream.stop()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith('{"time"')]
    (imported,) = [line for line in lines if line["action"] == "import"]
    SCHEMA.validate(imported)
    assert imported["user"] == "someone" and imported["status"] == 200
    assert imported["repo"] == "org/imported" and imported["revision"] == "main"
    assert imported["bytes"] == sum(len(d) for d in tree_files(model).values())
    assert imported["commit"] == info.json()["sha"]


def test_a_xet_path_that_is_no_reconstruction_is_no_download_line(world):
    """Only a reconstruction is a file read: an unknown path under the Xet read CAS is a
    plain 404 (no line), while a reconstruction with a bad token is a refused download
    (a line, as a refused resolve GET is)."""
    _, gateway, trail, _ = world
    base = f"{gateway.url}/api/modelpack/xet-read/v1"
    assert requests.get(f"{base}/nothing", timeout=30).status_code == 404
    refused = requests.get(f"{base}/reconstructions/{'0' * 64}", timeout=30,
                           headers={"Authorization": "Bearer nope"})  # fmt: skip
    assert refused.status_code == 401
    # The 401's line comes after the 404's would have (one client, one after the other).
    (line,) = trail.wait(action="download", status=401, repo=None, path=None)
    assert line["user"] is None
    assert not trail.wait(count=0, action="download", status=404, repo=None)
