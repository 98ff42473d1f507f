"""The registry's yes kept a few seconds (``--auth-cache-ttl``, gateway/state/authcache.py),
against a real token registry: alice may push and pull ``alice/*``, bob ``bob/*``, both and
anonymous clients may pull ``public/*``; a recording proxy in front of the registry counts
what each request asked it.  Requests are made by hand, as an attacker would send them.

What is shown: a kept yes saves the round trip; no other client (another user, the same
user with another password, anonymous, the same client asking to push) is answered with
it; refusals are never kept; answers expire; a commit through the gateway is seen at once
and builds on the registry's head, never on a kept one; made-up credentials cannot grow
the cache past its bound.  With the audit trail: a read the kept answer allows is still a
line and a count.  With replicas (``--redis``): a commit through one drops what the others
kept, and a permission withdrawn at the registry is seen by each within the ttl."""

from __future__ import annotations

import base64
import io
import json
import secrets
import time
from pathlib import Path

import pytest
import requests
from support.gateway import Gateway
from support.helpers import make_artifact
from support.http_proxy import HttpProxy
from support.token_server import TokenServer

from modelpack.gateway import GatewayConfig, make_app
from modelpack.gateway.state.access import MAX_CLIENTS
from modelpack.gateway.state.authcache import AuthCache
from modelpack.oci.reference import parse_reference
from modelpack.oci.spec import ANNOTATION_FILEPATH
from modelpack.registry.client import open_repository
from modelpack.settings import Settings
from modelpack.testing import RegistryServer
from modelpack.testing.replicas import RedisServer

USERS = {"alice": "alice-pass", "bob": "bob-pass", "gw": "gw-pass", "carol": "carol-pass"}
POLICY = {
    "alice": {"alice/*": ["pull", "push"], "public/*": ["pull"]},
    "bob": {"bob/*": ["pull", "push"], "public/*": ["pull"]},
    "gw": {"*": ["pull", "push"]},
    "carol": {},
    "": {"public/*": ["pull"]},  # anonymous
}
ALICE = {"Authorization": "Bearer alice:alice-pass"}
BOB = {"Authorization": "Bearer bob:bob-pass"}
GW = {"Authorization": "Bearer gw:gw-pass"}
NDJSON = {"Content-Type": "application/x-ndjson"}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    work = tmp_path_factory.mktemp("authcache")
    tokens = TokenServer(work / "tokens", users=dict(USERS),
                         policy={k: dict(v) for k, v in POLICY.items()}).start()  # fmt: skip
    server = RegistryServer(workdir=work / "server", extra_config=tokens.registry_auth_yaml())
    server.start()
    proxy = HttpProxy(upstream=server.url).start()
    gateways = {
        name: Gateway(proxy.host, work / name, ("--auth-cache-ttl", ttl)).start()
        for name, ttl in (("kept", "300"), ("short", "1"), ("off", "0"))
    }
    for repo in ("alice/m", "public/m", "alice/both"):
        created = requests.post(f"{gateways['off'].url}/api/repos/create", headers=GW,
                                json={"name": repo}, timeout=60)  # fmt: skip
        assert created.status_code == 200, created.text
        assert commit(gateways["off"], repo, GW, "a.txt", b"first").status_code == 200
    yield tokens, proxy, gateways
    for gateway in gateways.values():
        gateway.stop()
    proxy.stop()
    server.cleanup()
    tokens.stop()


def commit(gateway: Gateway, repo: str, headers: dict, path: str, data: bytes):
    ops = [{"key": "header", "value": {"summary": f"add {path}"}},
           {"key": "file", "value": {"path": path, "encoding": "base64",
                                     "content": base64.b64encode(data).decode()}}]  # fmt: skip
    return requests.post(f"{gateway.url}/api/models/{repo}/commit/main",
                         data="".join(json.dumps(op) + "\n" for op in ops).encode(),
                         headers={**headers, **NDJSON}, timeout=60)  # fmt: skip


def asked(proxy: HttpProxy, do) -> tuple[requests.Response, int]:  # noqa: ANN001
    """(the answer of ``do()``, how many requests it made to the registry)."""
    before = len(proxy.exchanges)
    answer = do()
    return answer, len(proxy.exchanges) - before


def get(gateway: Gateway, path: str, headers: dict | None = None) -> requests.Response:
    """The answer, once the pulls it started (the rest of the model, in the background)
    are done: their registry requests are not the request's."""
    answer = requests.get(f"{gateway.url}{path}", headers=headers or {}, timeout=60)
    gateway.wait_idle()
    return answer


def test_a_kept_yes_saves_the_registrys_round_trip(lab):
    _, proxy, gateways = lab
    url = "/alice/m/resolve/main/a.txt"
    for name in ("kept", "off"):
        first, _ = asked(proxy, lambda n=name: get(gateways[n], url, ALICE))
        assert first.status_code == 200 and first.content == b"first"
        again, cost = asked(proxy, lambda n=name: get(gateways[n], url, ALICE))
        assert again.status_code == 200 and again.content == b"first"
        assert (cost == 0) if name == "kept" else (cost >= 1), (name, cost)
    # By commit and by digest too: each revision is its own kept answer.
    commit_id = get(gateways["kept"], url, ALICE).headers["X-Repo-Commit"]
    get(gateways["kept"], f"/alice/m/resolve/{commit_id}/a.txt", ALICE)
    answer, cost = asked(proxy, lambda: get(gateways["kept"], f"/alice/m/resolve/{commit_id}/a.txt", ALICE))  # fmt: skip
    assert answer.status_code == 200 and cost == 0


def test_no_client_is_answered_with_another_clients_yes(lab):
    _, proxy, gateways = lab
    kept = gateways["kept"]
    url = "/alice/m/resolve/main/a.txt"
    assert get(kept, url, ALICE).status_code == 200  # alice's yes is kept now
    others = [BOB, {}, {"Authorization": "Bearer alice:wrong"}, basic("alice", "alice-pas"),
              basic("alice", "alice-pass2"), {"Authorization": "Bearer carol:carol-pass"}]  # fmt: skip
    for _ in range(2):  # and a refusal is asked again every time
        for headers in others:
            answer, cost = asked(proxy, lambda h=headers: get(kept, url, h))
            assert answer.status_code == 401, (headers, answer.status_code)
            assert answer.headers["X-Error-Code"] == "RepoNotFound"
            assert cost >= 1, headers
    # The same credentials in the other header form: asked once, then its own yes.
    answer, cost = asked(proxy, lambda: get(kept, url, basic("alice", "alice-pass")))
    assert answer.status_code == 200 and cost >= 1
    # Another repository is another question, even for alice.
    assert get(kept, "/bob/nothing/resolve/main/a.txt", ALICE).status_code == 401


def test_a_yes_to_pull_never_answers_a_push(lab):
    _, proxy, gateways = lab
    kept = gateways["kept"]

    def preupload(repo: str, headers: dict) -> requests.Response:
        return requests.post(f"{kept.url}/api/models/{repo}/preupload/main", headers=headers,
                             json={"files": [{"path": "x.txt", "size": 1, "sample": ""}]},
                             timeout=60)  # fmt: skip

    for who in (ALICE, BOB):
        assert get(kept, "/public/m/resolve/main/a.txt", who).status_code == 200  # pull: kept
        for _ in range(2):
            answer, cost = asked(proxy, lambda w=who: preupload("public/m", w))
            assert answer.status_code == 403, answer.text  # may read, may not push
            assert cost >= 1
    # alice's yes to push alice/m is kept (the preupload still reads main afresh, the
    # upload opened and cancelled to ask is not repeated); it answers no one else's push.
    answer, first = asked(proxy, lambda: preupload("alice/m", ALICE))
    assert answer.status_code == 200
    answer, again = asked(proxy, lambda: preupload("alice/m", ALICE))
    assert answer.status_code == 200 and 1 <= again <= first - 2, (first, again)
    assert preupload("alice/m", BOB).status_code in (401, 403)
    assert preupload("alice/m", {}).status_code == 401


def test_a_refusal_is_never_kept_so_a_grant_works_at_once(lab):
    tokens, _, gateways = lab
    url = "/alice/both/resolve/main/a.txt"
    carol = {"Authorization": "Bearer carol:carol-pass"}
    assert get(gateways["kept"], url, carol).status_code == 401
    tokens.policy["carol"] = {"alice/both": ["pull"]}
    try:
        answer = get(gateways["kept"], url, carol)
        assert answer.status_code == 200 and answer.content == b"first"
    finally:
        tokens.policy["carol"] = {}


def test_answers_expire_after_the_ttl(lab):
    _, proxy, gateways = lab
    short = gateways["short"]
    url = "/public/m/resolve/main/a.txt"
    assert get(short, url, BOB).status_code == 200
    time.sleep(1.5)  # past --auth-cache-ttl 1: the registry is asked again
    answer, cost = asked(proxy, lambda: get(short, url, BOB))
    assert answer.status_code == 200 and cost >= 1
    # A branch moved by another replica is seen once the ttl has passed.
    before = answer.headers["X-Repo-Commit"]
    assert commit(gateways["off"], "public/m", GW, "b.txt", b"second").status_code == 200
    time.sleep(1.5)
    moved = get(short, "/public/m/resolve/main/b.txt", BOB)
    assert moved.status_code == 200 and moved.content == b"second"
    assert moved.headers["X-Repo-Commit"] != before


def test_a_commit_through_the_gateway_is_seen_at_once_by_every_client(lab):
    _, _, gateways = lab
    kept = gateways["kept"]
    heads = {}
    for who in ("alice", "gw"):
        headers = ALICE if who == "alice" else GW
        heads[who] = get(kept, "/alice/m/resolve/main/a.txt", headers).headers["X-Repo-Commit"]
    assert commit(kept, "alice/m", ALICE, "new.txt", b"new").status_code == 200
    for headers in (ALICE, GW):  # both had main kept: the commit dropped it for both
        answer = get(kept, "/alice/m/resolve/main/new.txt", headers)
        assert answer.status_code == 200 and answer.content == b"new"
        assert answer.headers["X-Repo-Commit"] != heads["alice"]


def test_a_client_who_may_only_read_cannot_flush_the_kept_answers(lab):
    """Writes drop a repository's kept answers for everyone; writes the registry refuses
    moved nothing and drop nothing (else any reader could turn the cache off)."""
    _, proxy, gateways = lab
    kept = gateways["kept"]
    url = f"{kept.url}/api/models/public/m"
    assert get(kept, "/public/m/resolve/main/a.txt", ALICE).status_code == 200
    for n in range(3):
        writes = [
            requests.post(f"{url}/branch/b{n}", headers=BOB, json={}, timeout=60),
            requests.post(f"{url}/tag/main", headers=BOB, json={"tag": f"t{n}"}, timeout=60),
            commit(kept, "public/m", BOB, "x.txt", b"x"),
            requests.post(
                f"{kept.url}/api/repos/create", json={"name": f"public/new{n}"}, timeout=60
            ),
        ]
        assert [w.status_code for w in writes] == [403, 403, 403, 401], [w.text for w in writes]
    answer, cost = asked(proxy, lambda: get(kept, "/public/m/resolve/main/a.txt", ALICE))
    assert answer.status_code == 200 and cost == 0


def test_a_commit_builds_on_the_registrys_head_not_a_kept_one(lab):
    """Replica A keeps main; replica B commits to it; a commit through A must carry B's
    file (built on the head the registry has), not drop it (built on A's kept head)."""
    _, _, gateways = lab
    a, b = gateways["kept"], gateways["off"]
    assert get(a, "/alice/both/resolve/main/a.txt", ALICE).status_code == 200  # kept on A
    assert commit(b, "alice/both", ALICE, "from-b.txt", b"b").status_code == 200
    assert commit(a, "alice/both", ALICE, "from-a.txt", b"a").status_code == 200
    tree = requests.get(f"{b.url}/api/models/alice/both/tree/main", headers=ALICE, timeout=60)
    assert {e["path"] for e in tree.json()} >= {"a.txt", "from-a.txt", "from-b.txt"}


def test_made_up_credentials_cannot_grow_the_cache(registry, tmp_path):
    """An open registry takes any credential, so each made-up one is a yes: the cache
    still holds at most its bound (MAX_ANSWERS; 32 here), the client map MAX_CLIENTS."""
    settings = Settings(home=tmp_path / "home", plain_http=True)
    repository = open_repository(parse_reference(f"{registry.host}/spray/org/m"), settings)
    make_artifact(repository, "v1", [("application/vnd.cncf.model.weight.config.v1.raw",
                                      b"{}", {ANNOTATION_FILEPATH: "config.json"})])  # fmt: skip
    app = make_app(GatewayConfig(f"{registry.host}/spray", settings=settings))
    app.resolver.answers = AuthCache(300.0, max_items=32)
    statuses = set()
    for _ in range(120):
        header = basic(secrets.token_hex(6), secrets.token_hex(12))["Authorization"]
        environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/api/models/org/m/revision/v1",
                   "HTTP_AUTHORIZATION": header, "wsgi.input": io.BytesIO(),
                   "HTTP_HOST": "127.0.0.1", "wsgi.url_scheme": "http"}  # fmt: skip
        seen = []
        body = app(environ, lambda status, headers, seen=seen: seen.append(status))
        b"".join(body)
        statuses.add(seen[0])
    assert statuses == {"200 OK"}
    assert len(app.resolver.answers) == 32
    assert len(app.clients._clients) <= MAX_CLIENTS


def audit_lines(path: Path, count: int, timeout: float = 20.0) -> list[dict]:
    """The audit file's lines once there are ``count`` (a line is written after its answer
    went out, so the client may have its bytes first)."""
    deadline = time.monotonic() + timeout
    while True:
        text = path.read_text("ascii") if path.exists() else ""
        lines = [json.loads(line) for line in text.splitlines()]
        if len(lines) >= count or time.monotonic() > deadline:
            assert len(lines) >= count, lines
            return lines
        time.sleep(0.05)


def test_a_read_the_kept_answer_allows_is_still_an_audit_line_and_counted(lab, tmp_path):
    """The kept answer skips the registry, never the audit trail or /metrics: every file
    read is a line and a count, also on one keep-alive connection (the thread that
    answered takes the next request: gateway/worker.py), and by Range."""
    _, proxy, _ = lab
    trail = tmp_path / "audit.log"
    gateway = Gateway(proxy.host, tmp_path / "gateway",
                      ("--auth-cache-ttl", "300", "--audit-log", str(trail))).start()  # fmt: skip
    try:
        url = f"{gateway.url}/alice/m/resolve/main/a.txt"
        assert get(gateway, "/alice/m/resolve/main/a.txt", ALICE).content == b"first"
        with requests.Session() as session:  # one connection: keep-alive
            for _ in range(5):
                answer, cost = asked(proxy, lambda: session.get(url, headers=ALICE, timeout=60))
                assert answer.status_code == 200 and answer.content == b"first"
                assert cost == 0  # the kept answer: the registry was not asked
            ranged, cost = asked(proxy, lambda: session.get(url, timeout=60,
                                                            headers={**ALICE, "Range": "bytes=1-3"}))  # fmt: skip
            assert ranged.status_code == 206 and ranged.content == b"irs" and cost == 0
        lines = audit_lines(trail, 7)
        assert [(line["status"], line["bytes"]) for line in lines] == [(200, 5)] * 6 + [(206, 3)]
        for line in lines:
            assert line["action"] == "download" and line["user"] == "alice", line
            assert (line["repo"], line["revision"], line["path"]) == ("alice/m", "main", "a.txt")
        samples = gateway.metrics()
        events = 'modelpack_gateway_audit_events_total{action="download",status="%d"}'
        assert samples[events % 200] == 6 and samples[events % 206] == 1
        requests_total = (
            'modelpack_gateway_requests_total{method="GET",route="resolve",status="%d"}'
        )
        assert samples[requests_total % 200] == 6 and samples[requests_total % 206] == 1
        assert samples['modelpack_gateway_served_bytes_total{source="cache"}'] >= 5 * 5 + 3
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def replicas_lab(tmp_path_factory):
    """Two replicas sharing one Redis, in front of a token registry whose tokens last 1 s
    (so a permission withdrawn there is the registry's answer a second later), each
    keeping the registry's yes for 3 s."""
    work = tmp_path_factory.mktemp("authcache-replicas")
    tokens = TokenServer(work / "tokens", users=dict(USERS), expires_in=1,
                         policy={k: dict(v) for k, v in POLICY.items()}).start()  # fmt: skip
    server = RegistryServer(workdir=work / "server", extra_config=tokens.registry_auth_yaml())
    server.start()
    proxy = HttpProxy(upstream=server.url).start()
    redis_server = RedisServer(work / "redis").start()
    env = {"MODELPACK_GATEWAY_REDIS": redis_server.url}
    replicas = [
        Gateway(proxy.host, work / f"replica-{n}", ("--auth-cache-ttl", "3"), env=env).start()
        for n in range(2)
    ]
    created = requests.post(f"{replicas[0].url}/api/repos/create", headers=GW,
                            json={"name": "alice/shared"}, timeout=60)  # fmt: skip
    assert created.status_code == 200, created.text
    assert commit(replicas[0], "alice/shared", GW, "a.txt", b"first").status_code == 200
    yield tokens, proxy, replicas
    for replica in replicas:
        replica.stop()
    redis_server.stop()
    proxy.stop()
    server.cleanup()
    tokens.stop()


def test_a_commit_through_one_replica_is_seen_at_once_by_the_others_kept_answers(replicas_lab):
    _, proxy, (a, b) = replicas_lab
    url = "/alice/shared/resolve/main/a.txt"
    for _ in range(3):
        before = get(b, url, ALICE)
        assert before.status_code == 200
        again, cost = asked(proxy, lambda: get(b, url, ALICE))
        assert again.status_code == 200 and cost == 0  # b keeps main for alice
        name = f"{secrets.token_hex(4)}.txt"
        assert commit(a, "alice/shared", ALICE, name, name.encode()).status_code == 200
        moved = get(b, f"/alice/shared/resolve/main/{name}", ALICE)  # within b's ttl
        assert moved.status_code == 200 and moved.content == name.encode(), moved.text
        assert moved.headers["X-Repo-Commit"] != before.headers["X-Repo-Commit"]


def test_a_permission_withdrawn_at_the_registry_is_seen_by_every_replica_within_the_ttl(
    replicas_lab,
):
    tokens, _, replicas = replicas_lab
    url = "/alice/shared/resolve/main/a.txt"
    for replica in replicas:
        assert get(replica, url, ALICE).status_code == 200  # kept on both
    tokens.policy["alice"] = {}
    withdrawn = time.monotonic()
    try:
        refused: dict[str, float] = {}
        while len(refused) < len(replicas) and time.monotonic() - withdrawn < 15:
            for replica in replicas:
                if replica.url not in refused and get(replica, url, ALICE).status_code == 401:
                    refused[replica.url] = time.monotonic() - withdrawn
            time.sleep(0.1)
        # The ttl (3 s) and the registry's own token (1 s) at most, and some slack.
        assert len(refused) == len(replicas), refused
        assert all(seconds < 3 + 1 + 2 for seconds in refused.values()), refused
    finally:
        tokens.policy["alice"] = dict(POLICY["alice"])


def test_redis_losing_its_data_after_a_commit_brings_no_answer_from_before_it_back(replicas_lab):
    """An answer kept under "no generation yet" would match again once Redis lost the
    commit's generation (a restart without persistence, a flush, an eviction)."""
    import redis

    _, _, (a, b) = replicas_lab
    shared = redis.Redis.from_url(b.env["MODELPACK_GATEWAY_REDIS"])
    shared.flushall()  # as a Redis that restarted: no repository has a generation
    before = get(b, "/alice/shared/resolve/main/a.txt", ALICE)
    assert before.status_code == 200  # b keeps main for alice (3 s)
    name = f"{secrets.token_hex(4)}.txt"
    assert commit(a, "alice/shared", ALICE, name, name.encode()).status_code == 200
    shared.flushall()  # the commit's generation is gone too
    moved = get(b, f"/alice/shared/resolve/main/{name}", ALICE)  # within b's ttl
    assert moved.status_code == 200 and moved.content == name.encode(), moved.text
    assert moved.headers["X-Repo-Commit"] != before.headers["X-Repo-Commit"]
