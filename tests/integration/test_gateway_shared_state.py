"""What replicas share (gateway/state/shared.py): the same behaviour in one process and in a
real Redis (Debian's redis-server, one for this module), its bounds, the branch lease, and
what a client and an operator see when Redis is wrong or gone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest
import requests
from support.gateway import Gateway, clean_env

from modelpack.errors import LeaseLostError, SharedStateUnavailableError
from modelpack.gateway.core.config import GatewayConfig
from modelpack.gateway.state import shared as shared_module
from modelpack.gateway.state.shared import (
    MAX_SESSIONS,
    MAX_TICKETS,
    InProcess,
    RedisShared,
    Ticket,
    scope_of,
)
from modelpack.settings import Settings
from modelpack.testing.replicas import RedisServer


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


@pytest.fixture(params=["in-process", "redis"])
def shared(request, tmp_path, redis_server):
    if request.param == "in-process":
        return InProcess(tmp_path)
    redis_server.client().flushdb()
    return RedisShared(redis_server.url, f"test/{tmp_path.name}", lease=1.0)


def test_tickets_are_capped_used_once_and_expire(shared, redis_server):
    keys = [shared.issue_ticket(Ticket("Basic eA==", "org/m", "0" * 64, i))
            for i in range(MAX_TICKETS + 20)]  # fmt: skip
    assert shared.ticket(keys[0]) is None  # the oldest went first
    assert shared.ticket(keys[19]) is None and shared.ticket(keys[20]) is not None
    kept = shared.ticket(keys[-1])
    assert kept == Ticket("Basic eA==", "org/m", "0" * 64, MAX_TICKETS + 19)
    shared.ticket_used(keys[-1])
    assert shared.ticket(keys[-1]) is None
    assert shared.ticket("made-up") is None
    anonymous = shared.issue_ticket(Ticket(None, "org/m", "1" * 64, 5))
    assert shared.ticket(anonymous).authorization is None  # not "" : no header at all
    if isinstance(shared, RedisShared):
        client = redis_server.client()
        names = [k.decode() for k in client.keys("*")]
        assert len([n for n in names if ":ticket:" in n]) == MAX_TICKETS  # one used, one new
        assert not any(keys[-2] in n or "eA==" in n for n in names)  # no token, no secret
        ttl = client.pttl(next(n for n in names if ":ticket:" in n))
        assert 0 < ttl <= shared_module.TICKET_TTL * 1000


def test_xet_sessions_are_capped_and_budgets_never_pass_their_limit(shared):
    sessions = [shared.new_session("Basic eA==", "org/m") for _ in range(MAX_SESSIONS + 3)]
    assert shared.session(sessions[0].token) is None
    live = shared.session(sessions[-1].token)
    assert live is not None and live.repo_id == "org/m" and live.authorization == "Basic eA=="
    assert live.scope == scope_of("Basic eA==", "org/m") and "eA==" not in live.scope
    assert shared.session("made-up") is None

    # 8 threads spend 100 bytes 50 times each against a limit of 10,000: exactly 100 succeed.
    results: list[int | None] = []
    lock = threading.Lock()

    def spend() -> None:
        for _ in range(50):
            total = shared.spend(live, "published", 100, 10_000)
            with lock:
                results.append(total)

    threads = [threading.Thread(target=spend) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    granted = [r for r in results if r is not None]
    assert len(granted) == 100 and max(granted) == 10_000
    assert sorted(granted) == list(range(100, 10_001, 100))  # every total handed out once
    assert shared.spend(live, "received", 7, None) == 7  # unbounded: counted all the same


def test_a_scope_remembers_its_xorbs_and_sizes_within_bounds(shared, monkeypatch):
    monkeypatch.setattr(shared_module, "MAX_SCOPE_XORBS", 3)
    monkeypatch.setattr(shared_module, "MAX_ANNOUNCED", 4)
    scope = scope_of("Basic eA==", "org/m")
    assert shared.keep_xorb(scope, "a" * 64, "sha256:" + "1" * 64 + " 10") is True
    assert shared.keep_xorb(scope, "a" * 64, "sha256:" + "2" * 64 + " 11") is False
    assert shared.xorb(scope, "a" * 64) == "sha256:" + "1" * 64 + " 10"  # the first stays
    assert shared.xorb(scope_of("Basic eQ==", "org/m"), "a" * 64) is None  # other credentials
    assert shared.keep_xorb(scope, "b" * 64, "") is True
    assert shared.keep_xorb(scope, "c" * 64, "") is True
    assert shared.keep_xorb(scope, "d" * 64, "") is None  # full: refused, not dropped
    assert shared.announced(scope, 123)  # nothing announced: any size
    shared.announce(scope, [1, 2, 3, 4, 5, 6])
    assert not shared.announced(scope, 1) and not shared.announced(scope, 2)
    assert all(shared.announced(scope, n) for n in (3, 4, 5, 6))
    shared.announce(scope, [3])  # again: the newest
    shared.announce(scope, [7])
    assert shared.announced(scope, 3) and not shared.announced(scope, 4)


def test_published_ranges_are_kept_once(shared):
    shared.publish("e" * 64, ['{"a": 1}', '{"b": 2}'])
    shared.publish("e" * 64, ['{"a": 1}'])
    assert sorted(shared.published("e" * 64)) == ['{"a": 1}', '{"b": 2}']
    assert shared.published("f" * 64) == []


def test_generations_and_the_audit_key_are_the_same_for_every_replica(shared, redis_server):
    """What the authorization cache and the audit trail need replicas to agree on: a
    repository's write generation (a new one per write) and one key for identity tokens.
    One gateway keeps neither here (its cache drops answers itself; the key is a file)."""
    if not isinstance(shared, RedisShared):
        shared.new_generation("ns/m")
        assert shared.generation("ns/m") is None and shared.audit_key() is None
        return
    other = RedisShared(redis_server.url, shared.prefix.removeprefix("modelpack:")[:-1])
    # A repository never written gets a random generation at its first read, the same for
    # every replica: never none, which an answer kept before a write would match again
    # once Redis lost the write's (state/authcache.py).
    unwritten = shared.generation("ns/m")
    assert unwritten is not None and other.generation("ns/m") == unwritten
    shared.new_generation("ns/m")
    first = other.generation("ns/m")
    assert first not in (None, unwritten) and first == shared.generation("ns/m")
    other.new_generation("ns/m")
    assert shared.generation("ns/m") not in (None, first)
    assert shared.generation("ns/other") not in (None, shared.generation("ns/m"))
    redis_server.client().flushall()
    assert shared.generation("ns/m") not in (None, unwritten, first)  # a new one again
    name = next(k for k in redis_server.client().keys("*") if b":generation:" in k)
    assert 0 < redis_server.client().pttl(name) <= shared_module.GENERATION_TTL * 1000
    key = shared.audit_key()
    assert key is not None and len(key) == 32 and other.audit_key() == key == shared.audit_key()


def test_a_branch_has_one_holder_at_a_time(shared):
    inside, most, rounds = [0], [0], []
    lock = threading.Lock()

    def commit(n: int) -> None:
        for _ in range(5):
            with shared.branch("ns/org/m", "main") as lease:
                with lock:
                    inside[0] += 1
                    most[0] = max(most[0], inside[0])
                time.sleep(0.01)
                lease.confirm()
                assert lease.held()
                with lock:
                    inside[0] -= 1
                    rounds.append(n)

    threads = [threading.Thread(target=commit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert most[0] == 1 and len(rounds) == 20
    with shared.branch("ns/org/m", "dev"), shared.branch("ns/org/m", "main"):
        pass  # other branches are other locks


HOLDER = """
import sys, time
from modelpack.gateway.state.shared import RedisShared
shared = RedisShared(sys.argv[1], sys.argv[2], lease=1.0)
with shared.branch("ns/org/m", "main"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_lease_ends_when_its_holder_is_killed_and_a_stalled_holder_moves_nothing(
    redis_server, tmp_path, monkeypatch
):
    prefix = f"test/{tmp_path.name}"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, redis_server.url, prefix],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        shared = RedisShared(redis_server.url, prefix, lease=1.0)
        key = f"modelpack:{prefix}:branch:ns/org/m:main"
        token = redis_server.client().get(key).decode()
        assert token.split(":")[2] == str(holder.pid)  # fence:host:pid:random
        # Alive, its heartbeat keeps the lease past several lease lengths.
        monkeypatch.setattr(shared_module, "LOCK_WAIT", 2.5)
        with (
            pytest.raises(LeaseLostError, match="held it for over"),
            shared.branch("ns/org/m", "main"),
        ):
            pass
        holder.kill()
        holder.wait()
        monkeypatch.setattr(shared_module, "LOCK_WAIT", 30.0)
        with shared.branch("ns/org/m", "main") as lease:  # free once the lease ran out
            assert lease.fence > int(token.split(":")[0])
    finally:
        holder.kill()
        holder.wait()

    # A holder whose heartbeat stops (a stalled process) loses the lease; confirm then
    # refuses, and held() says it was lost.
    stalled = RedisShared(redis_server.url, prefix, lease=0.5)
    monkeypatch.setattr(shared_module._RedisLease, "_renew", lambda self: None)
    with stalled.branch("ns/org/m", "dev") as lease:
        time.sleep(0.8)
        monkeypatch.undo()
        other = RedisShared(redis_server.url, prefix, lease=5.0)
        with other.branch("ns/org/m", "dev"):
            with pytest.raises(LeaseLostError, match="ended before the commit moved it"):
                lease.confirm()
            assert not lease.held()


def test_redis_errors_are_one_error_of_ours(redis_server, tmp_path):
    wrong = RedisShared(f"redis://:wrong@127.0.0.1:{redis_server.port}/0", "x")
    with pytest.raises(SharedStateUnavailableError) as refused:
        wrong.check()
    assert "wrong" not in str(refused.value) and f"127.0.0.1:{redis_server.port}" in str(
        refused.value
    )
    gone = RedisShared(f"redis://127.0.0.1:{_closed_port()}/0", "x")
    for call in (gone.check, lambda: gone.new_session(None, "org/m"),
                 lambda: gone.issue_ticket(Ticket(None, "org/m", "0" * 64, 1))):  # fmt: skip
        with pytest.raises(SharedStateUnavailableError):
            call()
    with pytest.raises(SharedStateUnavailableError), gone.branch("ns/org/m", "main"):
        pass


def _closed_port() -> int:
    from modelpack.testing.registry import free_port

    return free_port()


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:6379",
        "redis://",
        "redis://127.0.0.1:notaport",
        "redis://127.0.0.1:6379/zero",
        "unix://relative/path",
        "redis://127.0.0.1:6379/0\nINJECT",
        "redis://" + "a" * 3000,
    ],
)
def test_a_redis_url_that_is_none_is_refused_with_one_line(url, tmp_path):
    from modelpack.errors import UsageError

    with pytest.raises(UsageError, match="--redis is not a Redis URL"):
        GatewayConfig("127.0.0.1:9/gw", settings=Settings(home=tmp_path), redis=url)
    result = _serve(tmp_path, "--redis", url)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "Error: --redis is not a Redis URL (redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], "
        "rediss://... (TLS) or unix:///PATH)"
    ]


def test_serve_without_its_redis_stops_with_one_line_and_exit_6(tmp_path):
    port = _closed_port()
    result = _serve(tmp_path, "--redis", f"redis://:topsecret@127.0.0.1:{port}/0")
    assert result.returncode == 6, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: the gateways' shared state (Redis at ")
    assert "topsecret" not in result.stderr


def _serve(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "modelpack", "serve", "--registry", "127.0.0.1:9/gw",
         "--cache", str(tmp_path / "cache"), "--port", str(_closed_port()), *args],
        env=clean_env(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_writes_answer_503_naming_no_host_when_redis_stops(registry, tmp_path):
    server = RedisServer(tmp_path / "redis").start()
    gateway = Gateway(
        f"{registry.host}/shared503", tmp_path / "gw",
        env={"MODELPACK_GATEWAY_REDIS": server.url},
    ).start()  # fmt: skip
    try:
        assert "topsecret" not in gateway.log() and server.password not in gateway.log()
        assert f"Redis at redis://127.0.0.1:{server.port}/0" in gateway.log()
        server.stop()
        body = {"operation": "upload", "objects": [{"oid": "a" * 64, "size": 3}]}
        headers = {"Content-Type": "application/vnd.git-lfs+json"}
        token = requests.get(f"{gateway.url}/api/models/org/m/xet-write-token/main", timeout=30)
        assert token.status_code in (401, 404, 503)  # no such repo, or no Redis: never a 500
        answer = requests.post(f"{gateway.url}/org/m.git/info/lfs/objects/batch", json=body,
                               headers=headers, timeout=30)  # fmt: skip
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "5"
        message = answer.headers["X-Error-Message"]
        assert message == "org/m: the gateway's shared state is unavailable; try again later"
        cas = requests.post(f"{gateway.url}/api/modelpack/xet/v1/shards", data=b"x",
                            headers={"Authorization": "Bearer abc"}, timeout=30)  # fmt: skip
        assert cas.status_code == 503 and "127.0.0.1" not in cas.text
        assert requests.get(f"{gateway.url}/healthz", timeout=10).status_code == 200
        assert "did not answer" in gateway.log()  # the operator's log says which Redis
    finally:
        gateway.stop()
        server.stop()
