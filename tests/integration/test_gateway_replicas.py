"""Replicas: three `modelpack serve` processes with one Redis (`--redis`) behind Debian's nginx
doing plain round robin (its configuration taken from docs/gateway.md), in front of the real
registry; huggingface_hub and hf_xet in subprocesses.  What the platform team found (tickets
404 and Xet tokens 401 on the replica that did not issue them; commits lost from a branch two
replicas moved at once) is each checked here, and a replica is SIGKILLed mid-upload.  With
``--protect``: a protected tag is refused on every replica (with an audit line there) and made
once when two replicas are asked for it at the same moment."""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from pathlib import Path

import pytest
import requests
from support.gateway import CATCH, Gateway
from support.xetbuild import one_chunk_xorb, shard

from modelpack.testing.replicas import Balancer, RedisServer, await_workers, children, kill_replica

NAMESPACE = "replicas"
HUB_TYPES = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def _replicas(registry, redis_server, work: Path, count: int, *args: str) -> list[Gateway]:
    env = {"MODELPACK_GATEWAY_REDIS": redis_server.url} if redis_server else {}
    return [
        Gateway(
            f"{registry.host}/{NAMESPACE}",
            work / f"replica-{n}",
            ("--inline-max", "1024", *args),
            env=env,
        ).start()  # fmt: skip
        for n in range(count)
    ]


@pytest.fixture(scope="module")
def cluster(registry, redis_server, tmp_path_factory):
    work = tmp_path_factory.mktemp("cluster")
    replicas = _replicas(registry, redis_server, work, 3)
    balancer = Balancer(work / "nginx", [r.url.removeprefix("http://") for r in replicas])
    balancer.start()
    yield replicas, balancer
    balancer.stop()
    for replica in replicas:
        replica.stop()


def _create(url: str, name: str) -> None:
    answer = requests.post(f"{url}/api/repos/create", json={"name": name, "organization": "org"},
                           timeout=60)  # fmt: skip
    assert answer.status_code == 200, answer.text


def _ticket_and_token(first: str, second: str, third: str, name: str) -> tuple[int, int, int]:
    """An LFS ticket from ``first`` PUT at ``second``; a Xet token from ``first`` used for a
    xorb at ``second`` and a shard at ``third``: the three statuses."""
    _create(first, name)
    data = b"replicated bytes\n" * 100
    oid = hashlib.sha256(data).hexdigest()
    batch = requests.post(
        f"{first}/org/{name}.git/info/lfs/objects/batch",
        json={"operation": "upload", "objects": [{"oid": oid, "size": len(data)}]},
        headers={"Content-Type": "application/vnd.git-lfs+json"}, timeout=60,
    ).json()  # fmt: skip
    href = batch["objects"][0]["actions"]["upload"]["href"]
    assert href.startswith(first)
    put = requests.put(href.replace(first, second), data=data, timeout=60).status_code
    token = requests.get(f"{first}/api/models/org/{name}/xet-write-token/main", timeout=60).json()
    cas = {"Authorization": f"Bearer {token['accessToken']}"}
    chunk_data = hashlib.sha512(name.encode()).digest() * 64
    xorb, body = one_chunk_xorb(chunk_data)
    sent = requests.post(f"{second}/api/modelpack/xet/v1/xorbs/default/{xorb}", data=body,
                         headers=cas, timeout=60)  # fmt: skip
    if sent.status_code != 200:
        return put, sent.status_code, 0
    sha256 = hashlib.sha256(chunk_data).hexdigest()
    made = shard([([(xorb, 0, 1, len(chunk_data))], sha256)])
    published = requests.post(f"{third}/api/modelpack/xet/v1/shards", data=made, headers=cas,
                              timeout=60)  # fmt: skip
    return put, sent.status_code, published.status_code


def test_a_ticket_and_a_xet_token_from_one_replica_work_at_the_others(cluster, registry):
    replicas, _ = cluster
    urls = [r.url for r in replicas]
    assert _ticket_and_token(*urls, "handover") == (200, 200, 200)
    # The file the shard put together (on the third replica, from a xorb the second got)
    # is a blob of the repository now.
    chunk_data = hashlib.sha512(b"handover").digest() * 64
    digest = hashlib.sha256(chunk_data).hexdigest()
    blob = requests.get(
        f"http://{registry.host}/v2/{NAMESPACE}/org/handover/blobs/sha256:{digest}", timeout=30
    )
    assert blob.status_code == 200 and blob.content == chunk_data


def test_without_redis_each_replica_knows_only_its_own_tickets_and_tokens(registry, tmp_path):
    """What the platform team saw, kept as the reason for --redis: a 404 for the ticket, a
    401 for the token, on a replica that did not issue them."""
    replicas = _replicas(registry, None, tmp_path, 2)
    try:
        first, second = (r.url for r in replicas)
        assert _ticket_and_token(first, second, first, "alone") == (404, 401, 0)
    finally:
        for replica in replicas:
            replica.stop()


UPLOAD = (
    CATCH
    + """
import json, os, sys
from huggingface_hub import HfApi, snapshot_download
arg = json.loads(sys.argv[1])
api = HfApi()
out = {}
out["create"] = attempt(lambda: str(api.create_repo(arg["repo"], exist_ok=True)))
out["upload"] = attempt(lambda: api.upload_folder(repo_id=arg["repo"],
                                                  folder_path=arg["folder"]).oid)
out["path"] = attempt(lambda: snapshot_download(arg["repo"]))
out["commits"] = attempt(lambda: [c.commit_id for c in api.list_repo_commits(arg["repo"])])
print(json.dumps(out))
"""
)


def _routes(gateway: Gateway) -> list[str]:
    """The paths each request line of a replica's log names."""
    return [line.split()[5] for line in gateway.log().splitlines()
            if " gateway: " in line and len(line.split()) > 6]  # fmt: skip


@pytest.mark.parametrize("transfer", ["xet", "lfs"])
def test_upload_folder_through_the_balancer_then_every_read_route(
    cluster, tiny_model, tmp_path, transfer
):
    replicas, balancer = cluster
    folder = tmp_path / "model"
    folder.mkdir()
    for path in tiny_model.rglob("*"):
        if path.is_file():
            target = folder / path.relative_to(tiny_model)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (folder / "extra.bin").write_bytes(hashlib.sha512(transfer.encode()).digest() * 4096)
    repo = f"org/spread-{transfer}"
    before = [len(_routes(r)) for r in replicas]
    env = {"HF_HUB_DISABLE_XET": "1"} if transfer == "lfs" else {}
    front = Gateway("unused", tmp_path, port=balancer.port)  # the client half only
    out = front.client(UPLOAD, {"repo": repo, "folder": str(folder)}, tmp_path / "hf", None, env)
    assert "ok" in out["upload"], out
    downloaded = Path(out["path"]["ok"])
    for path in folder.rglob("*"):
        if path.is_file():
            got = downloaded / path.relative_to(folder)
            assert got.read_bytes() == path.read_bytes(), path
    # Listed by every replica once its catalog (kept 30 s per replica) is read again.
    deadline = time.monotonic() + 90
    listed: list[str] = []
    while len(listed) < len(replicas) and time.monotonic() < deadline:
        for replica in replicas:
            found = requests.get(f"{replica.url}/api/models", params={"search": repo}, timeout=60)
            if [m["id"] for m in found.json()] == [repo] and replica.url not in listed:
                listed.append(replica.url)
        time.sleep(1)
    assert len(listed) == len(replicas)
    assert out["commits"]["ok"][0] == out["upload"]["ok"]
    # The upload's requests went to every replica, the transfer's own among them.
    spread = [routes[n:] for routes, n in zip((_routes(r) for r in replicas), before, strict=False)]
    assert all(spread), spread
    wanted = "/api/modelpack/xet/" if transfer == "xet" else "/api/modelpack/lfs-upload/"
    issued = "/xet-write-token/" if transfer == "xet" else "/info/lfs/objects/batch"
    takers = {n for n, routes in enumerate(spread) if any(wanted in p for p in routes)}
    issuers = {n for n, routes in enumerate(spread) if any(issued in p for p in routes)}
    assert takers and issuers and takers != issuers, spread
    # The download after it: Xet files through Xet (the reconstructions on some replicas,
    # the xorb ranges fetched from others), LFS ones over plain HTTP.
    reconstructions = [
        p for routes in spread for p in routes if "/xet-read/v1/reconstructions/" in p
    ]
    assert bool(reconstructions) == (transfer == "xet"), spread
    # The page, through the balancer, on each replica in turn.
    for _ in replicas:
        page = requests.get(f"{balancer.url}/{repo}", timeout=60)
        assert page.status_code == 200 and "extra.bin" in page.text
        assert repo in requests.get(f"{balancer.url}/?search={repo}", timeout=60).text


XET_UPLOAD = """
import json, sys
from huggingface_hub import HfApi
arg = json.loads(sys.argv[1])
api = HfApi()
api.create_repo(arg["repo"], exist_ok=True)
print(json.dumps(api.upload_folder(repo_id=arg["repo"], folder_path=arg["folder"]).oid))
"""

XET_DOWNLOAD = """
import json, sys
from huggingface_hub import snapshot_download
print(json.dumps(snapshot_download(json.loads(sys.argv[1]))))
"""


def test_xet_downloads_from_a_replica_that_never_had_the_xorbs(
    cluster, registry, redis_server, tmp_path
):
    """Uploaded through Xet to one replica, downloaded through Xet from another that never
    received a xorb of it: the record, the read token and the signing key are in Redis, and
    that replica fetches each xorb from the registry blob the record names (read with the
    read token's credentials, checked against its digest and its name), once."""
    replicas, _ = cluster
    first, last = replicas[0], replicas[2]
    folder = tmp_path / "model"
    folder.mkdir()
    data = b"".join(hashlib.sha512(b"%d" % i).digest() for i in range(60_000))  # 3.7 MiB
    (folder / "weights.dat").write_bytes(data)
    repo = "org/xet-across"
    first.client(XET_UPLOAD, {"repo": repo, "folder": str(folder)}, tmp_path / "up")
    store = last.cache / "xet" / "verified"
    before = set(store.iterdir()) if store.exists() else set()
    head = requests.head(f"{last.url}/{repo}/resolve/main/weights.dat", timeout=30)
    assert re.fullmatch(r"[0-9a-f]{64}", head.headers.get("X-Xet-Hash", "")), head.headers
    snapshot = Path(last.client(XET_DOWNLOAD, repo, tmp_path / "down"))
    assert (snapshot / "weights.dat").read_bytes() == data
    answered = last.answered(r"GET \S+")
    file_hash = head.headers["X-Xet-Hash"]
    assert f"GET /api/modelpack/xet-read/v1/reconstructions/{file_hash}" in answered
    assert re.search(r"GET /api/modelpack/xet-read/v1/fetch/[0-9a-f]{64} 206 ", last.log())
    assert not any("/resolve/" in a and "weights.dat" in a for a in answered)
    fetched = set(store.iterdir()) - before
    assert fetched, "the replica fetched no xorb from the registry"
    # Each is a blob of the repository, as the record said, and the replica that received or
    # pushed it kept its chunk sizes in Redis under that blob: reconstructions are answered
    # from those without fetching the xorb first.
    for xorb in fetched:
        digest = hashlib.sha256(xorb.read_bytes()).hexdigest()
        blob = requests.head(f"http://{registry.host}/v2/{NAMESPACE}/{repo}/blobs/sha256:{digest}",
                             timeout=30)  # fmt: skip
        assert blob.status_code == 200, xorb.name
        assert redis_server.client().keys(f"*xet:xorb-index:sha256:{digest}"), xorb.name
    # Records and chunk sizes live 30 days past their last use, not for good.
    redis = redis_server.client()
    kept = (
        redis.keys("*xet:file:*")
        + redis.keys("*xet:reconstruction:*")
        + redis.keys("*xet:xorb-index:*")
    )
    assert kept and all(0 < redis.pttl(key) <= 30 * 24 * 3600 * 1000 for key in kept)
    # A fetch URL is signed for its blob and token: changed, it is refused on any replica.
    token = requests.get(f"{last.url}/api/models/{repo}/xet-read-token/main", timeout=30).json()
    plan = requests.get(
        f"{token['casUrl']}/v1/reconstructions/{head.headers['X-Xet-Hash']}",
        headers={"Authorization": f"Bearer {token['accessToken']}"},
        timeout=30,
    )
    url = next(iter(plan.json()["fetch_info"].values()))[0]["url"]
    assert "&g=" in url and token["accessToken"] not in url
    for replica in replicas:
        good = requests.get(url.replace(last.url, replica.url), timeout=60)
        assert good.status_code == 206, (replica.url, good.text)
        bad = requests.get(
            re.sub(r"&g=[0-9a-f]{64}", "&g=" + "0" * 64, url.replace(last.url, replica.url)),
            timeout=30,
        )
        assert bad.status_code == 403, bad.text


ROUNDS = """
import json, sys
from huggingface_hub import HfApi
arg = json.loads(sys.argv[1])
api = HfApi()
oids = []
for n in range(arg["rounds"]):
    info = api.upload_file(path_or_fileobj=f"{arg['who']} {n}\\n".encode(),
                           path_in_repo=f"{arg['who']}/{n}.txt", repo_id=arg["repo"])
    oids.append(info.oid)
print(json.dumps(oids))
"""

HISTORY = """
import json, sys
from huggingface_hub import HfApi
api = HfApi()
arg = json.loads(sys.argv[1])
print(json.dumps({"commits": [c.commit_id for c in api.list_repo_commits(arg)],
                  "files": api.list_repo_files(arg)}))
"""


def test_two_clients_commit_to_one_branch_through_two_replicas_20_rounds(cluster, tmp_path):
    import subprocess
    import sys

    from support.gateway import clean_env

    replicas, _ = cluster
    repo = "org/race"
    _create(replicas[0].url, "race")
    clients = []
    for who, replica in (("alice", replicas[0]), ("bob", replicas[1])):
        env = clean_env(tmp_path / who, HF_ENDPOINT=replica.url, HF_HOME=str(tmp_path / who),
                        HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
        argument = json.dumps({"repo": repo, "who": who, "rounds": 20})
        clients.append(subprocess.Popen([sys.executable, "-c", ROUNDS, argument], env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                        text=True))  # fmt: skip
    oids = []
    for client in clients:
        stdout, stderr = client.communicate(timeout=600)
        assert client.returncode == 0, stderr[-3000:]
        oids += json.loads(stdout.strip().splitlines()[-1])
    assert len(set(oids)) == 40
    history = replicas[2].client(HISTORY, repo, tmp_path / "reader")
    assert set(oids) <= set(history["commits"])
    assert len(history["commits"]) == 41  # and the repository's first commit
    expected = {f"{who}/{n}.txt" for who in ("alice", "bob") for n in range(20)}
    assert expected <= set(history["files"])
    # Both replicas moved the branch: the commits were interleaved, not one client's run.
    logs = [r.log() for r in replicas[:2]]
    assert all(log.count(f"POST /api/models/{repo}/commit/main 200") == 20 for log in logs)


KILLED = (
    CATCH
    + """
import json, sys, time
from huggingface_hub import HfApi
arg = json.loads(sys.argv[1])
api = HfApi()
runs = []
for attempt_number in range(4):
    result = attempt(lambda: api.upload_folder(repo_id=arg["repo"], folder_path=arg["folder"]).oid)
    runs.append(result)
    if "ok" in result:
        break
    time.sleep(1)
print(json.dumps(runs))
"""
)


def test_a_replica_killed_mid_upload_folder_leaves_no_half_commit(registry, redis_server, tmp_path):
    """The commit of 240 inline files (upload_folder makes one commit of up to 250; more it
    splits into several) pushes 240 blobs while it holds the branch's lock;
    the replica holding it is SIGKILLed then.  The client's rerun goes through the other
    two once the lease ends, and the branch, polled all along, shows only whole commits."""
    import subprocess
    import sys

    from support.gateway import clean_env

    replicas = _replicas(registry, redis_server, tmp_path, 3)
    balancer = Balancer(tmp_path / "nginx", [r.url.removeprefix("http://") for r in replicas])
    balancer.start()
    repo, name = "org/killed", "killed"
    seen: list[frozenset[str]] = []
    stop = threading.Event()

    def watch() -> None:
        """The branch's file set, as the registry shows it, as often as it can."""
        url = f"http://{registry.host}/v2/{NAMESPACE}/{repo}/manifests/main"
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        while not stop.is_set():
            answer = requests.get(url, headers=accept, timeout=30)
            if answer.status_code == 200:
                layers = answer.json()["layers"]
                seen.append(frozenset(x["annotations"]["org.cncf.model.filepath"]
                                      for x in layers))  # fmt: skip
            time.sleep(0.01)

    try:
        _create(balancer.url, name)
        folder = tmp_path / "folder"
        folder.mkdir()
        for n in range(240):
            (folder / f"part-{n:03d}.txt").write_text(f"part {n}\n" * 10)
        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        env = clean_env(tmp_path / "hf", HF_ENDPOINT=balancer.url, HF_HOME=str(tmp_path / "hf"),
                        HF_HUB_DISABLE_PROGRESS_BARS="1", HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
        argument = json.dumps({"repo": repo, "folder": str(folder)})
        client = subprocess.Popen([sys.executable, "-c", KILLED, argument], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        lock = f"modelpack:{registry.host}/{NAMESPACE}:branch:{NAMESPACE}/{repo}:main"
        redis = redis_server.client()
        victim = None
        deadline = time.monotonic() + 300
        while victim is None and client.poll() is None and time.monotonic() < deadline:
            token = redis.get(lock)
            if token is not None:
                pid = int(token.decode().split(":")[2])
                victim = next(r for r in replicas if pid in children(r.process.pid))
                kill_replica(victim.process)
            time.sleep(0.002)
        assert victim is not None, "the commit never held the branch's lock"
        stdout, stderr = client.communicate(timeout=600)
        assert client.returncode == 0, stderr[-3000:]
        runs = json.loads(stdout.strip().splitlines()[-1])
        assert "ok" in runs[-1], runs  # huggingface_hub's retry, or a rerun, completed it
        commit = f"POST /api/models/{repo}/commit/main 200"
        assert commit not in victim.log()  # killed before it answered
        assert any(commit in r.log() for r in replicas if r is not victim)
        stop.set()
        watcher.join()
        whole = frozenset(f"part-{n:03d}.txt" for n in range(240)) | {".gitattributes"}
        assert seen and set(seen) <= {frozenset({".gitattributes"}), whole}, {len(s) for s in seen}
        assert seen[-1] == whole
        survivors = [r for r in replicas if r is not victim]
        history = survivors[0].client(HISTORY, repo, tmp_path / "reader")
        assert runs[-1]["ok"] == history["commits"][0] and len(history["commits"]) == 2
    finally:
        stop.set()
        balancer.stop()
        for replica in replicas:
            replica.stop()


def test_a_xorb_sent_for_one_repository_is_no_one_elses_at_another_replica(cluster):
    """A xorb another replica received (and pushed to the registry) for repository A is
    refused to a shard for repository B, as on one gateway: replicas share scopes, not
    xorbs."""
    replicas, _ = cluster
    for name in ("scope-a", "scope-b"):
        _create(replicas[0].url, name)
    tokens = [
        requests.get(f"{replicas[0].url}/api/models/org/{name}/xet-write-token/main",
                     timeout=60).json()["accessToken"]
        for name in ("scope-a", "scope-b")
    ]  # fmt: skip
    data = hashlib.sha512(b"scoped").digest() * 64
    xorb, body = one_chunk_xorb(data)
    sent = requests.post(f"{replicas[1].url}/api/modelpack/xet/v1/xorbs/default/{xorb}",
                         data=body, headers={"Authorization": f"Bearer {tokens[0]}"},
                         timeout=60)  # fmt: skip
    assert sent.json() == {"was_inserted": True}
    made = shard([([(xorb, 0, 1, len(data))], hashlib.sha256(data).hexdigest())])
    for replica in replicas:
        refused = requests.post(f"{replica.url}/api/modelpack/xet/v1/shards", data=made,
                                headers={"Authorization": f"Bearer {tokens[1]}"},
                                timeout=60)  # fmt: skip
        assert refused.status_code == 400
        assert f"names xorb {xorb}, never uploaded by this client" in refused.text
    # The same bytes sent for B are B's: was_inserted says so at any replica.
    again = requests.post(f"{replicas[2].url}/api/modelpack/xet/v1/xorbs/default/{xorb}",
                          data=body, headers={"Authorization": f"Bearer {tokens[1]}"},
                          timeout=60)  # fmt: skip
    assert again.json() == {"was_inserted": True}
    repeat = requests.post(f"{replicas[0].url}/api/modelpack/xet/v1/xorbs/default/{xorb}",
                           data=body, headers={"Authorization": f"Bearer {tokens[1]}"},
                           timeout=60)  # fmt: skip
    assert repeat.json() == {"was_inserted": False}


def _refs(registry, repository: str) -> dict[str, str]:  # noqa: ANN001
    """tag -> manifest digest, as the registry has them."""
    url = f"http://{registry.host}/v2/{NAMESPACE}/{repository}"
    tags = requests.get(f"{url}/tags/list", timeout=30).json()["tags"]
    accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
    return {tag: requests.head(f"{url}/manifests/{tag}", headers=accept,
                               timeout=30).headers["Docker-Content-Digest"]
            for tag in tags}  # fmt: skip


def _audit(path: Path) -> list[dict]:
    text = path.read_text("ascii") if path.exists() else ""
    return [json.loads(line) for line in text.splitlines()]


def test_a_protected_tag_is_refused_on_every_replica_and_made_once(
    registry, redis_server, tmp_path
):
    """``--protect`` with ``--redis``: a tag made through one replica is refused through the
    other (a 403 and an audit line there, the registry unchanged); two replicas asked to
    make the same protected tag at the same moment make it once and refuse the other (the
    check runs under the branch lease in Redis: without it both would find the tag missing
    and both write it)."""
    env = {"MODELPACK_GATEWAY_REDIS": redis_server.url}
    trails = [tmp_path / f"audit-{n}.log" for n in range(2)]
    replicas = [
        Gateway(
            f"{registry.host}/{NAMESPACE}",
            tmp_path / f"replica-{n}",
            ("--inline-max", "1024", "--protect", "v*", "--audit-log", str(trails[n])),
            env=env,
        ).start()  # fmt: skip
        for n in range(2)
    ]
    try:
        a, b = (replica.url for replica in replicas)
        _create(a, "guarded")
        api = "/api/models/org/guarded"

        def tag(url: str, name: str, headers: dict | None = None) -> requests.Response:
            return requests.post(f"{url}{api}/tag/main", json={"tag": name}, timeout=60,
                                 headers={**HUB_TYPES, **(headers or {})})  # fmt: skip

        assert tag(a, "v1").status_code == 200
        before = _refs(registry, "org/guarded")
        again = tag(b, "v1")
        assert again.status_code == 403, again.text
        assert "protected" in again.headers["X-Error-Message"]
        ops = [{"key": "header", "value": {"summary": "over v1"}},
               {"key": "file", "value": {"path": "x.txt", "encoding": "base64",
                                         "content": "eA=="}}]  # fmt: skip
        moved = requests.post(f"{b}{api}/commit/v1",
                              data="".join(json.dumps(op) + "\n" for op in ops),
                              headers={"Content-Type": "application/x-ndjson"}, timeout=60)  # fmt: skip
        assert moved.status_code == 403, moved.text
        preupload = requests.post(f"{b}{api}/preupload/v1", headers=HUB_TYPES, timeout=60,
                                  json={"files": [{"path": "x.txt", "size": 1, "sample": ""}]})  # fmt: skip
        assert preupload.status_code == 403, preupload.text
        assert _refs(registry, "org/guarded") == before
        deadline = time.monotonic() + 20
        while len([line for line in _audit(trails[1]) if line["status"] == 403]) < 3:
            assert time.monotonic() < deadline, _audit(trails[1])
            time.sleep(0.05)
        refused = {line["action"]: line for line in _audit(trails[1]) if line["status"] == 403}
        assert set(refused) == {"create-tag", "commit", "preupload"}, refused
        for line in refused.values():
            assert (line["repo"], line["revision"]) == ("org/guarded", "v1"), line
            assert "protected on this gateway" in line["error"], line
        assert not [line for line in _audit(trails[0]) if line["status"] == 403]

        # The same new protected tag asked of both replicas at once, five times, by a client
        # with an identity token (the registry is open: it is never asked for).
        token = {"Authorization": "Bearer identity-token-of-a-tagger"}

        def make(url: str, name: str, barrier: threading.Barrier, statuses: dict) -> None:
            barrier.wait()
            statuses[url] = tag(url, name, token).status_code

        for n in range(2, 7):
            barrier, statuses = threading.Barrier(2), {}
            threads = [threading.Thread(target=make, args=(url, f"v{n}", barrier, statuses))
                       for url in (a, b)]  # fmt: skip
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=120)
            assert sorted(statuses.values()) == [200, 403], (n, statuses)
        made = _refs(registry, "org/guarded")
        assert {f"v{n}" for n in range(1, 7)} <= set(made)
        deadline = time.monotonic() + 20
        while True:
            lines = [line for trail in trails for line in _audit(trail)]
            tags = [line for line in lines if line["action"] == "create-tag"]
            if len(tags) >= 1 + 1 + 10 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert sorted(line["status"] for line in tags) == [200] * 6 + [403] * 6, tags
        # Each replica has its own node cache, and names the token alike: the key is Redis's.
        named = [{line["user"] for line in _audit(trail)
                  if line["action"] == "create-tag" and line["revision"] != "v1"}
                 for trail in trails]  # fmt: skip
        assert named[0] == named[1] and len(named[0]) == 1, named
        assert named[0].pop().startswith("token:")
    finally:
        for replica in replicas:
            replica.stop()


def test_worker_processes_share_tickets_tokens_and_one_metrics_scrape(
    registry, redis_server, tiny_model, settings, tmp_path
):
    """`serve --workers 2`: every new connection may land on either process. A ticket and a
    Xet token work whichever worker gets their next request (Redis), and every scrape of
    /metrics, whichever worker answers it, counts the requests of both."""
    from support.helpers import build_and_push

    build_and_push(tiny_model, f"{registry.host}/{NAMESPACE}/org/tiny:main", settings)
    folders = tmp_path / "tmp"
    folders.mkdir()
    gateway = Gateway(f"{registry.host}/{NAMESPACE}", tmp_path / "gateway", ("--workers", "2"),
                      env={"MODELPACK_GATEWAY_REDIS": redis_server.url, "TMPDIR": str(folders)},
                      ).start()  # fmt: skip
    try:
        assert len(await_workers(gateway.process.pid, 2)) == 2
        for n in range(3):  # each request on a connection of its own
            assert _ticket_and_token(gateway.url, gateway.url, gateway.url, f"w{n}") == (200,) * 3
        url = f"{gateway.url}/org/tiny/resolve/main/config.json"
        for _ in range(40):
            answer = requests.get(url, timeout=30)
            assert answer.status_code == 200
            assert answer.content == (tiny_model / "config.json").read_bytes()
        counted = 'modelpack_gateway_requests_total{method="GET",route="resolve",status="200"}'
        assert {gateway.metrics()[counted] for _ in range(10)} == {40.0}
        # Both workers answered some of them: each counts into files of its own pid.
        (metrics_folder,) = folders.glob("modelpack-serve-metrics-*")
        counters = {path.name for path in metrics_folder.glob("counter_*.db")}
        assert len(counters) == 2, counters
    finally:
        gateway.stop()
    assert not list(folders.glob("modelpack-serve-metrics-*"))  # removed at exit
