"""An attack on `modelpack serve` after issue 28's fixes: what broke, each as a test that
failed before its fix (docs/security.md, "Attack after the fixes (issue 28)").

A token registry where alice may push and pull ``alice/*``, bob ``bob/*``, both and
anonymous clients may pull ``public/*``; requests are made by hand, as an attacker
would send them."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tarfile
import threading
import time
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.token_server import SERVICE, TokenServer
from support.xetbuild import chunk, shard

from modelpack.gateway.core.xetformat import index_xorb, xorb_hash
from modelpack.testing import RegistryServer

USERS = {"alice": "alice-pass", "bob": "bob-pass", "gw": "gw-pass"}
POLICY = {
    "alice": {"alice/*": ["pull", "push"], "public/*": ["pull"]},
    "bob": {"bob/*": ["pull", "push"], "public/*": ["pull"]},
    "gw": {"*": ["pull", "push"]},
    "": {"public/*": ["pull"]},  # anonymous
}
MODEL_CONFIG = "application/vnd.cncf.model.config.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("review")
    tokens = TokenServer(work / "tokens", users=dict(USERS), policy=POLICY).start()
    server = RegistryServer(workdir=work / "server", extra_config=tokens.registry_auth_yaml())
    server.start()
    gateway = Gateway(server.host, work / "gateway", env={
        "MODELPACK_GATEWAY_INLINE_MAX": str(64 * 1024),
    }).start()  # fmt: skip
    yield server, tokens, gateway
    gateway.stop()
    server.cleanup()
    tokens.stop()


class Pusher:
    """An OCI client of the registry itself (what crane or oras would send)."""

    def __init__(self, server: RegistryServer, tokens: TokenServer, user: str, repo: str):
        self.base, self.repo = f"http://{server.host}/v2/{repo}", repo
        answer = requests.get(tokens.realm, auth=(user, USERS[user]), timeout=10, params={
            "service": SERVICE, "scope": f"repository:{repo}:pull,push"})  # fmt: skip
        self.auth = {"Authorization": f"Bearer {answer.json()['token']}"}

    def blob(self, data: bytes, media_type: str = "application/octet-stream") -> dict:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        start = requests.post(f"{self.base}/blobs/uploads/", headers=self.auth, timeout=10)
        put = requests.put(start.headers["Location"], params={"digest": digest}, data=data,
                           headers=self.auth, timeout=10)  # fmt: skip
        assert put.status_code == 201, put.text
        return {"mediaType": media_type, "digest": digest, "size": len(data)}

    def manifest(self, tag: str, config: dict, layers: list[dict]) -> requests.Response:
        document = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": config,
                    "layers": layers}  # fmt: skip
        return requests.put(f"{self.base}/manifests/{tag}", data=json.dumps(document),
                            headers={**self.auth, "Content-Type": OCI_MANIFEST}, timeout=10)  # fmt: skip


def model_config(name: str) -> bytes:
    return json.dumps({"descriptor": {"name": name}, "config": {},
                       "modelfs": {"type": "layers", "diffIds": []}}).encode()  # fmt: skip


def one_file_tar(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def file_annotations(name: str, size: int) -> dict:
    metadata = {"name": name, "mode": 420, "uid": 0, "gid": 0, "size": size,
                "mtime": "2026-01-01T00:00:00Z", "typeflag": 0}  # fmt: skip
    return {"org.opencontainers.image.title": name, "org.cncf.model.filepath": name,
            "org.cncf.model.file.metadata+json": json.dumps(metadata)}  # fmt: skip


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


# -- a reader spools a commit's file onto the gateway's disk --------------------------------


def test_a_client_that_may_only_read_spools_nothing_and_a_file_line_is_capped(lab):
    """Before: an anonymous commit to a public repository streamed a `file` line of any
    length into uploads/ (214 MiB of 300 MiB sent, while it was sent) before the first
    push was refused; with push rights, one line as long as the sender liked."""
    server, tokens, gateway = lab
    alice = Pusher(server, tokens, "gw", "public/open")
    alice.manifest("main", alice.blob(model_config("open"), MODEL_CONFIG), [])
    uploads = gateway.cache / "uploads"
    for who, repo in ((None, "public/open"), ("bob:bob-pass", "bob/spool")):
        if who:
            create = requests.post(f"{gateway.url}/api/repos/create", json={"name": repo},
                                   headers={"Authorization": f"Bearer {who}"}, timeout=30)  # fmt: skip
            assert create.status_code == 200, create.text
        head = (f"POST /api/models/{repo}/commit/main HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
                + (f"Authorization: Bearer {who}\r\n" if who else "") + "\r\n")  # fmt: skip
        sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
        peak = 0
        try:
            sock.sendall(head.encode())
            for piece in (b'{"key": "header", "value": {"summary": "x"}}\n',
                          b'{"key": "file", "value": {"content": "'):  # fmt: skip
                sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
            block = b"QUFB" * (1 << 18)  # 1 MiB of base64
            for _ in range(32):
                sock.sendall(b"%x\r\n%s\r\n" % (len(block), block))
                peak = max(peak, folder_bytes(uploads))
        except OSError:
            pass  # the gateway answered and closed: what we want
        sock.settimeout(10)
        answer = b""
        try:
            while b"\r\n\r\n" not in answer and (data := sock.recv(4096)):
                answer += data
        except OSError:
            pass
        sock.close()
        status = answer.split(b" ", 2)[1] if answer else b"none"
        assert peak < 1 << 20, (who, peak)  # never more than the cap on disk
        assert status == (b"413" if who else b"401"), (who, answer[:300])
    assert folder_bytes(uploads) == 0


# -- a foreign layer reads another repository's blob from the node cache ---------------------


def test_a_foreign_layer_never_serves_another_repositorys_cached_blob(lab):
    """Distribution takes a layer of Docker's foreign type with a URL without the blob;
    the node cache keeps blobs by digest.  Before: bob's manifest naming the digest of
    alice's tar layer got her file's bytes from the cache (200) once alice had read it."""
    server, tokens, gateway = lab
    secret = hashlib.sha256(b"alice").digest() * 2000
    layer_bytes = one_file_tar("secret.bin", secret)
    alice = Pusher(server, tokens, "alice", "alice/private")
    layer = alice.blob(layer_bytes, "application/vnd.cncf.model.weight.v1.tar")
    layer["annotations"] = file_annotations("secret.bin", len(secret))
    assert alice.manifest("main", alice.blob(model_config("a"), MODEL_CONFIG), [layer]).ok
    as_alice = {"Authorization": "Bearer alice:alice-pass"}
    got = requests.get(f"{gateway.url}/alice/private/resolve/main/secret.bin", headers=as_alice,
                       timeout=60)  # fmt: skip
    assert got.status_code == 200 and got.content == secret  # now in the node cache

    bob = Pusher(server, tokens, "bob", "bob/borrow")
    foreign = {**layer, "mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
               "urls": ["http://127.0.0.1:9/nothing"]}  # fmt: skip
    pushed = bob.manifest("main", bob.blob(model_config("b"), MODEL_CONFIG), [foreign])
    assert pushed.status_code == 201, pushed.text  # the registry does not check the blob
    as_bob = {"Authorization": "Bearer bob:bob-pass"}
    for path in ("resolve/main/secret.bin", "resolve/main/secret.bin?x=1"):
        answer = requests.get(f"{gateway.url}/bob/borrow/{path}", headers=as_bob, timeout=60)
        assert secret[:4096] not in answer.content, path
        assert answer.status_code == 403, (answer.status_code, answer.text[:200])
    info = requests.get(f"{gateway.url}/api/models/bob/borrow", headers=as_bob, timeout=30)
    assert info.status_code == 403 and "foreign" in info.headers["X-Error-Message"]
    # alice still reads her model; bob his own
    again = requests.get(f"{gateway.url}/alice/private/resolve/main/secret.bin",
                         headers=as_alice, timeout=60)  # fmt: skip
    assert again.status_code == 200 and again.content == secret


# -- a shard of many terms holds every Xet request for minutes --------------------------------


def test_a_shard_of_many_terms_is_recorded_in_linear_time(lab):
    """Before: recording where a file's chunk ranges were published read the growing
    record file once per term, under the lock every Xet request and preupload takes:
    16,000 terms took 52 s (262,144, the cap: hours), and alice's xet-write-token waited
    for it (46 s)."""
    _, _, gateway = lab
    hub = {"Authorization": "Bearer bob:bob-pass"}
    create = requests.post(f"{gateway.url}/api/repos/create", json={"name": "bob/terms"},
                           headers=hub, timeout=30)  # fmt: skip
    assert create.status_code == 200, create.text
    token = requests.get(f"{gateway.url}/api/models/bob/terms/xet-write-token/main", headers=hub,
                         timeout=30).json()  # fmt: skip
    cas, auth = token["casUrl"], {"Authorization": f"Bearer {token['accessToken']}"}
    data = [bytes([i % 251]) for i in range(8192)]  # 8,192 chunks of one byte
    xorb = b"".join(chunk(d) for d in data)
    name = xorb_hash(io.BytesIO(xorb), index_xorb(io.BytesIO(xorb)))  # its Merkle hash
    sent = requests.post(f"{cas}/v1/xorbs/default/{name}", data=xorb, headers=auth, timeout=60)
    assert sent.status_code == 200, sent.text
    terms, content, length = [], [], 1
    while len(terms) < 16000:
        for start in range(0, 8192 - length, 2):
            if len(terms) == 16000:
                break
            terms.append((name, start, start + length, length))
            content.append(b"".join(data[start : start + length]))
        length += 1
    body = shard([(terms, hashlib.sha256(b"".join(content)).hexdigest())])
    waited: list[float] = []

    def alice_asks() -> None:
        time.sleep(1)
        started = time.monotonic()
        requests.get(f"{gateway.url}/api/models/alice/waits/xet-write-token/main",
                     headers={"Authorization": "Bearer alice:alice-pass"}, timeout=120)  # fmt: skip
        waited.append(time.monotonic() - started)

    create = requests.post(f"{gateway.url}/api/repos/create", json={"name": "alice/waits"},
                           headers={"Authorization": "Bearer alice:alice-pass"}, timeout=30)  # fmt: skip
    assert create.status_code == 200, create.text
    other = threading.Thread(target=alice_asks)
    other.start()
    started = time.monotonic()
    answer = requests.post(f"{cas}/v1/shards", data=body, headers=auth, timeout=300)
    took = time.monotonic() - started
    other.join()
    assert answer.status_code == 200, answer.text
    assert took < 10, took
    assert waited and waited[0] < 5, waited
    records = (gateway.cache / "xet" / "published" / name).read_text().splitlines()
    assert 0 < len(records) <= 4096
