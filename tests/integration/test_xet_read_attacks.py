"""Xet downloads with replicas, attacked: two ``modelpack serve`` replicas sharing one Redis
in front of the real registry, hand-made xorbs and shards (tests/support/xetbuild.py) sent
straight to the CAS routes, then read tokens, reconstructions and fetch URLs asked of one
replica or the other (read/xet.py)."""

from __future__ import annotations

import hashlib
import io
import re
import struct
import threading
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.xetbuild import BOOKEND, FLAG_METADATA_EXT, SHARD_TAG, chunk, raw_of

from modelpack.gateway.core.xetformat import index_xorb, xorb_hash
from modelpack.testing.replicas import RedisServer

NAMESPACE = "xetattack"
READ = "/api/modelpack/xet-read"
WRITE = "/api/modelpack/xet"


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _pair(registry, redis_server, work: Path) -> list[Gateway]:
    env = {"MODELPACK_GATEWAY_REDIS": redis_server.url}
    return [
        Gateway(f"{registry.host}/{NAMESPACE}", work / f"replica-{n}", env=env).start()
        for n in range(2)
    ]


@pytest.fixture(scope="module")
def pair(registry, redis_server, tmp_path_factory):
    replicas = _pair(registry, redis_server, tmp_path_factory.mktemp("pair"))
    yield replicas
    for replica in replicas:
        replica.stop()


def xorb_of(datas: list[bytes], compress: bool = False) -> tuple[str, bytes]:
    """A xorb of these chunks (LZ4 or stored): its name and its bytes."""
    body = b"".join(chunk(d, compress) for d in datas)
    return xorb_hash(io.BytesIO(body), index_xorb(io.BytesIO(body))), body


def shard(terms: list[tuple[str, int, int, int]], sha256: str, file_hash: str) -> bytes:
    """A shard of one file: xetbuild's, with the file's Xet hash declared (a download
    record is made only when the chunks hash to it)."""
    out = [SHARD_TAG + struct.pack("<QQ", 2, 0)]
    out.append(raw_of(file_hash) + struct.pack("<II", FLAG_METADATA_EXT, len(terms)) + bytes(8))
    out += [raw_of(x) + struct.pack("<IIII", 0, size, s, e) for x, s, e, size in terms]
    out.append(raw_of(sha256) + bytes(16))
    return b"".join([*out, BOOKEND, bytes(16)])


def create(url: str, repo: str) -> None:
    org, name = repo.split("/")
    answer = requests.post(f"{url}/api/repos/create", json={"name": name, "organization": org},
                           timeout=60)  # fmt: skip
    assert answer.status_code in (200, 409), answer.text


def write_token(url: str, repo: str) -> dict[str, str]:
    token = requests.get(f"{url}/api/models/{repo}/xet-write-token/main", timeout=60).json()
    return {"Authorization": f"Bearer {token['accessToken']}"}


def send_xorb(url: str, repo: str, name: str, body: bytes) -> None:
    sent = requests.post(f"{url}{WRITE}/v1/xorbs/default/{name}", data=body,
                         headers=write_token(url, repo), timeout=60)  # fmt: skip
    assert sent.status_code == 200, sent.text


def upload(url: str, repo: str, datas: list[bytes], compress: bool = False) -> tuple[str, str]:
    """One file of ``datas`` (one xorb, one term) uploaded to ``repo`` through ``url``:
    its sha256 and the xorb's name."""
    create(url, repo)
    cas = write_token(url, repo)
    name, body = xorb_of(datas, compress)
    sent = requests.post(f"{url}{WRITE}/v1/xorbs/default/{name}", data=body, headers=cas,
                         timeout=60)  # fmt: skip
    assert sent.status_code == 200, sent.text
    content = b"".join(datas)
    sha256 = hashlib.sha256(content).hexdigest()
    made = shard([(name, 0, len(datas), len(content))], sha256, xet_hash(datas))
    published = requests.post(f"{url}{WRITE}/v1/shards", data=made, headers=cas, timeout=60)
    assert published.status_code == 200, published.text
    return sha256, name


def reconstruction(url: str, repo: str, file_hash: str) -> requests.Response:
    token = requests.get(f"{url}/api/models/{repo}/xet-read-token/main", timeout=30).json()
    return requests.get(f"{token['casUrl']}/v1/reconstructions/{file_hash}",
                        headers={"Authorization": f"Bearer {token['accessToken']}"},
                        timeout=60)  # fmt: skip


def xet_hash(datas: list[bytes]) -> str:
    """A one-xorb file's Xet hash: the file hash of spec/hashing.md (the Merkle root of its
    chunks, then keyed with zeros), asked of the gateway's own function."""
    from modelpack.gateway.core.xetformat import chunk_hash, file_hash

    return file_hash([chunk_hash(d) for d in datas])


def fetch_all(plan: dict, base_from: str, base_to: str) -> bytes:
    """The bytes of every fetch URL of a reconstruction, asked of ``base_to``."""
    out = b""
    for entries in plan["fetch_info"].values():
        for entry in entries:
            got = requests.get(entry["url"].replace(base_from, base_to), timeout=60)
            assert got.status_code == 206, got.text
            out += got.content
    return out


def test_a_xorb_compressed_otherwise_at_another_replica_serves_the_signed_bytes(pair):
    """Two replicas may keep the same xorb (the same chunks) in different serializations:
    the first copy a replica receives stays, whoever sent it.  A fetch URL is signed with
    byte offsets of the signer's copy, so the replica that answers it must answer those
    bytes of that same copy (the record's blob), not of its own: else someone with push
    rights to any repository, by sending the xorb stored instead of compressed to one
    replica first, makes it answer other repositories' downloads with wrong bytes."""
    first, second = (r.url for r in pair)
    datas = [b"".join(b"row %05d of a model file\n" % j for j in range(k * 400, k * 400 + 400))
             for k in range(4)]  # fmt: skip
    # The attacker's copy first, at the second replica (their own repository, no shard).
    name, stored = xorb_of(datas, compress=False)
    create(second, "org/attacker")
    send_xorb(second, "org/attacker", name, stored)
    # The victim uploads the same chunks, LZ4-compressed, through the first replica.
    sha256, same = upload(first, "org/victim", datas, compress=True)
    assert same == name
    plan = reconstruction(first, "org/victim", xet_hash(datas))
    assert plan.status_code == 200, plan.text
    signer = fetch_all(plan.json(), first, first)
    assert fetch_all(plan.json(), first, second) == signer


def test_another_repositorys_upload_of_the_same_file_leaves_a_replicas_downloads_alone(pair):
    """A reconstruction record is the file's in one repository: the same bytes uploaded
    to another (with its own xorb copy, in its own repository) must not make a replica that
    lacks the xorb look for that blob in the first repository (a 404 after resolve offered
    the Xet hash: hf_xet's download fails)."""
    first, second = (r.url for r in pair)
    datas = [b"".join(b"shared line %05d\n" % j for j in range(k * 300, k * 300 + 300))
             for k in range(3)]  # fmt: skip
    upload(first, "org/owner", datas, compress=False)
    # Someone with push rights elsewhere uploads the same file, compressed (another blob).
    upload(first, "org/copycat", datas, compress=True)
    # The owner's readers at the replica that never had the xorb.
    plan = reconstruction(second, "org/owner", xet_hash(datas))
    assert plan.status_code == 200, plan.text
    assert fetch_all(plan.json(), second, second)


def test_one_xorb_asked_at_once_is_fetched_from_the_registry_once(pair, registry):
    """Many fetch URLs of one xorb asked at once of a replica that lacks it: one download
    from the registry (and one spool file), the others wait for it."""
    first, second = (r.url for r in pair)
    datas = [hashlib.sha512(b"big %d" % i).digest() * 2048 for i in range(48)]  # 6 MiB
    sha256, name = upload(first, "org/bigxorb", datas)
    plan = reconstruction(first, "org/bigxorb", xet_hash(datas)).json()
    url = plan["fetch_info"][name][0]["url"].replace(first, second)
    blob = re.search(r"&b=([0-9a-f]{64})", url).group(1)
    statuses: list[int] = []
    threads = [
        threading.Thread(target=lambda: statuses.append(requests.get(url, timeout=120).status_code))
        for _ in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert statuses == [206] * 8
    gets = [line for line in registry.access_log().splitlines()
            if f"GET /v2/{NAMESPACE}/org/bigxorb/blobs/sha256:{blob}" in line]  # fmt: skip
    assert len(gets) == 1, gets


def test_a_replica_started_after_redis_lost_its_data_agrees_on_the_fetch_url_key(
    registry, tmp_path
):
    """Redis restarted without its data (or flushed): the next replica to ask puts a new
    fetch-URL key there.  A replica that read the old one before must sign and check with
    the new one too, else every fetch URL one signs is a 403 at the other (until restarts)."""
    redis = RedisServer(tmp_path / "redis").start()
    env = {"MODELPACK_GATEWAY_REDIS": redis.url}
    replicas = []

    def start(n: int) -> str:
        replicas.append(Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / f"r{n}", env=env))
        return replicas[-1].start().url

    try:
        first = start(0)
        datas = [b"before the flush %d\n" % i * 100 for i in range(2)]
        upload(first, "org/flush-before", datas)
        assert reconstruction(first, "org/flush-before", xet_hash(datas)).status_code == 200
        redis.client().flushall()
        second = start(1)
        datas = [b"after the flush %d\n" % i * 100 for i in range(2)]
        upload(second, "org/flush-after", datas)
        for signer, other in ((first, second), (second, first)):
            plan = reconstruction(signer, "org/flush-after", xet_hash(datas))
            assert plan.status_code == 200, plan.text
            assert fetch_all(plan.json(), signer, other) == fetch_all(plan.json(), signer, signer)
    finally:
        for replica in replicas:
            replica.stop()
        redis.stop()
