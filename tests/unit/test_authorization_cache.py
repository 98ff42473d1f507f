"""The authorization cache (gateway/state/authcache.py): whose answer is kept, for how
long, how many, and what a write drops.  The gateway with a real registry: tests/integration/
test_gateway_authcache.py."""

from __future__ import annotations

import base64
import math
import secrets
import threading
import time
from pathlib import Path

import pytest
from support.helpers import serve_refusal

from modelpack.errors import AuthenticationError, SharedStateUnavailableError, UsageError
from modelpack.gateway.core.config import AUTH_CACHE_TTL, AUTH_CACHE_TTL_MAX, GatewayConfig
from modelpack.gateway.state import authcache as authcache_module
from modelpack.gateway.state.authcache import (
    ANONYMOUS,
    PULL,
    PUSH,
    REFRESH_AT,
    REFRESH_DUE,
    AuthCache,
)
from modelpack.gateway.state.shared import InProcess
from modelpack.settings import Settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_one_clients_yes_never_answers_another():
    cache = AuthCache(10.0)
    alice = basic("alice", "alice-pass")
    cache.put(cache.key(alice, "ns/alice/m", PULL, "main"), "root", cache.epoch)
    assert cache.get(cache.key(alice, "ns/alice/m", PULL, "main")) == "root"
    others = [
        basic("alice", "wrong"),  # the same user name, another password
        basic("alice", "alice-pass2"),
        basic("bob", "alice-pass"),
        "Bearer alice:alice-pass",  # the same credentials in another header form
        "Basic " + base64.b64encode(b"alice:alice-pass").decode() + "=",
        None,  # anonymous
        "",
    ]
    for header in others:
        assert cache.get(cache.key(header, "ns/alice/m", PULL, "main")) is None, header
    # Another repository, action or revision is another question.
    assert cache.get(cache.key(alice, "ns/alice/other", PULL, "main")) is None
    assert cache.get(cache.key(alice, "ns/alice/m", PUSH)) is None
    assert cache.get(cache.key(alice, "ns/alice/m", PULL, "v1")) is None
    # Whitespace around the header is not part of the credential (as access.py reads it).
    assert cache.get(cache.key(f"  {alice} ", "ns/alice/m", PULL, "main")) == "root"


def test_the_key_holds_no_secret_and_means_nothing_to_another_process():
    one, two = AuthCache(10.0), AuthCache(10.0)
    header = basic("alice", "s3cret-Pa55")
    key = one.key(header, "ns/m", PULL, "main")
    assert len(key[0]) == 32 and b"s3cret" not in key[0] and header.encode() not in key[0]
    assert one.principal(header) != two.principal(header)  # a per-process HMAC key
    assert one.principal(None) == one.principal("  ") == ANONYMOUS
    assert one.principal(header) != ANONYMOUS
    with pytest.raises(ValueError):
        one.key(header, "ns/m", "delete")


def test_answers_expire_after_the_ttl():
    clock = Clock()
    cache = AuthCache(10.0, clock=clock)
    key = cache.key(basic("alice", "p"), "ns/m", PULL, "main")
    cache.put(key, "root", cache.epoch)
    clock.now += 9.9
    assert cache.get(key) == "root"
    clock.now += 0.2
    assert cache.get(key) is None and len(cache) == 0


def _due(cache: AuthCache, key: tuple) -> bool:
    """Whether serving ``key``'s answer on the lane now asks for it to be asked again."""
    REFRESH_DUE.set(False)
    cache.served(key)
    return REFRESH_DUE.get()


def test_an_answer_in_use_is_claimed_for_asking_again_once_near_its_end_never_served_past_it():
    clock = Clock()
    cache = AuthCache(10.0, clock=clock)
    key = cache.key(basic("alice", "p"), "ns/m", PULL, "main")
    assert cache.served(key) is None and not _due(cache, key)  # nothing kept
    cache.put(key, "root", cache.epoch)
    clock.now += 10.0 * REFRESH_AT - 0.1
    assert cache.served(key) == "root" and not _due(cache, key)
    clock.now += 0.2
    assert _due(cache, key) and not _due(cache, key)  # one asker per answer
    assert cache.served(key) == "root"  # still served until its end
    # The registry refused, or the refresh failed: nothing put, and the answer still ends.
    clock.now += 10.0 * (1 - REFRESH_AT)
    assert cache.served(key) is None and not _due(cache, key)
    # A refresh that is answered keeps a new answer, with a window of its own.
    cache.put(key, "root", cache.epoch)
    clock.now += 10.0 * REFRESH_AT + 0.1
    assert _due(cache, key)
    cache.put(key, "root2", cache.epoch)
    assert cache.served(key) == "root2" and not _due(cache, key)
    clock.now += 9.9
    assert cache.served(key) == "root2"
    assert AuthCache(0).served(key) is None


def _at_once(count: int, call) -> list:  # noqa: ANN001
    """``call()`` on ``count`` threads started together: their results (or errors)."""
    barrier, results = threading.Barrier(count), [None] * count

    def run(n: int) -> None:
        barrier.wait()
        try:
            results[n] = call()
        except Exception as exc:  # noqa: BLE001 - handed back to the test
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def test_concurrent_misses_of_one_key_ask_the_registry_once():
    cache = AuthCache(10.0)
    key = cache.key(basic("alice", "p"), "ns/m", PULL, "main")
    asked = []

    def ask() -> str:
        asked.append(1)
        time.sleep(0.3)  # the registry's round trip, while the others arrive
        return "root"

    assert _at_once(16, lambda: cache.answer(key, ask)) == ["root"] * 16
    assert len(asked) == 1
    # Other credentials are another question: asked for themselves.
    other = cache.key(basic("bob", "p"), "ns/m", PULL, "main")
    assert cache.answer(other, ask) == "root" and len(asked) == 2
    # ``fresh`` asks even with an answer kept, and keeps the new one.
    assert cache.answer(key, lambda: "root2", fresh=True) == "root2"
    assert cache.get(key) == "root2"


def test_when_the_first_asker_keeps_nothing_the_others_ask_for_themselves():
    cache = AuthCache(10.0)
    key = cache.key(basic("alice", "wrong"), "ns/m", PULL, "main")
    asked = []

    def refused() -> str:
        asked.append(1)
        time.sleep(0.2)
        raise AuthenticationError("the registry refused alice")

    results = _at_once(4, lambda: cache.answer(key, refused))
    assert all(isinstance(r, AuthenticationError) for r in results) and len(asked) == 4
    assert cache.get(key) is None and not cache._asking  # nothing kept, nobody waiting
    # With the cache off every request asks, at once, as before.
    off, calls = AuthCache(0), []
    assert _at_once(4, lambda: off.answer(key, lambda: calls.append(1) or "root")) == ["root"] * 4
    assert len(calls) == 4


def test_a_spray_of_made_up_credentials_cannot_grow_it():
    cache = AuthCache(300.0, max_items=64)
    for _ in range(5000):  # an open registry takes any credential: every one a yes
        header = basic(secrets.token_hex(8), secrets.token_hex(16))
        cache.put(cache.key(header, "ns/m", PULL, "main"), "root", cache.epoch)
    assert len(cache) == 64
    assert len(cache._answers) == 64  # the map itself, not only what is unexpired


def test_a_refusal_is_never_kept():
    cache = AuthCache(10.0)
    key = cache.key(basic("bob", "p"), "ns/m", PULL, "main")
    cache.put(key, None, cache.epoch)
    assert cache.get(key) is None and len(cache) == 0


def test_a_write_drops_the_repositorys_answers_and_those_in_flight():
    cache = AuthCache(10.0)
    alice, bob = basic("alice", "a"), basic("bob", "b")
    for who in (alice, bob):
        cache.put(cache.key(who, "ns/m", PULL, "main"), "old", cache.epoch)
        cache.put(cache.key(who, "ns/other", PULL, "main"), "other", cache.epoch)
    asked = cache.epoch  # a read asked the registry before the commit...
    cache.forget("ns/m")
    cache.put(cache.key(alice, "ns/m", PULL, "main"), "old", asked)  # ...and answers after it
    assert cache.get(cache.key(alice, "ns/m", PULL, "main")) is None
    assert cache.get(cache.key(bob, "ns/m", PULL, "main")) is None
    assert cache.get(cache.key(bob, "ns/other", PULL, "main")) == "other"
    cache.put(cache.key(alice, "ns/m", PULL, "main"), "new", cache.epoch)
    assert cache.get(cache.key(alice, "ns/m", PULL, "main")) == "new"


def test_a_ttl_of_zero_keeps_nothing():
    cache = AuthCache(0)
    key = cache.key(None, "ns/m", PULL, "main")
    cache.put(key, "root", cache.epoch)
    assert not cache.enabled and cache.get(key) is None and len(cache) == 0
    cache.forget("ns/m")  # nothing to drop, no error
    for ttl in (-1.0, AUTH_CACHE_TTL_MAX + 1, math.nan):
        with pytest.raises(ValueError):
            AuthCache(ttl)


@pytest.mark.parametrize("ttl", [-1.0, AUTH_CACHE_TTL_MAX + 0.5, math.nan, math.inf])
def test_the_config_refuses_a_ttl_out_of_bounds(tmp_path, ttl):
    settings = Settings(home=tmp_path, plain_http=True)
    with pytest.raises(UsageError, match="--auth-cache-ttl must be between 0 and 300"):
        GatewayConfig("127.0.0.1:9/gw", settings=settings, auth_cache_ttl=ttl)
    assert GatewayConfig("127.0.0.1:9/gw", settings=settings).auth_cache_ttl == AUTH_CACHE_TTL
    assert GatewayConfig("127.0.0.1:9/gw", settings=settings, auth_cache_ttl=0).auth_cache_ttl == 0


@pytest.mark.parametrize("value", ["-1", "301", "nan", "x"])
def test_serve_refuses_a_bad_ttl_with_one_line_and_exit_2(tmp_path, value):
    assert "--auth-cache-ttl" in serve_refusal(tmp_path, f"--auth-cache-ttl={value}")


class Replicas(InProcess):
    """The generations of state/shared.py's RedisShared, in a dict every cache of the test
    sees (as replicas see one Redis); ``down`` makes it fail as an unreachable Redis does.
    (tests/integration/test_gateway_shared_state.py has RedisShared's own.)"""

    replicated = True

    def __init__(self) -> None:
        super().__init__(Path("/nonexistent"))
        self.generations: dict[str, str] = {}
        self.down = False
        self.asked = 0

    def generation(self, repository: str) -> str | None:
        self.asked += 1
        if self.down:
            raise SharedStateUnavailableError("Redis at 127.0.0.1:9 did not answer")
        # as RedisShared: a repository without one gets a random one at its first read
        return self.generations.setdefault(repository, secrets.token_hex(8))

    def new_generation(self, repository: str) -> None:
        if self.down:
            raise SharedStateUnavailableError("Redis at 127.0.0.1:9 did not answer")
        self.generations[repository] = secrets.token_hex(8)


def test_a_write_through_one_replica_drops_the_answers_every_replica_kept():
    shared = Replicas()
    a, b = AuthCache(10.0, shared=shared), AuthCache(10.0, shared=shared)
    alice = basic("alice", "a")
    for cache in (a, b):
        key = cache.key(alice, "ns/m", PULL, "main")
        answer, stamp = cache.lookup(key)
        assert answer is None
        cache.put(key, "old", stamp)
        assert cache.get(key) == "old"
        other = cache.key(alice, "ns/other", PULL, "main")
        cache.put(other, "other", cache.lookup(other)[1])
    a.forget("ns/m")  # a commit through replica a
    assert b.get(b.key(alice, "ns/m", PULL, "main")) is None  # b asks the registry again
    assert b.get(b.key(alice, "ns/other", PULL, "main")) == "other"  # others stay
    key = b.key(alice, "ns/m", PULL, "main")
    b.put(key, "new", b.lookup(key)[1])
    assert b.get(key) == "new"


def test_an_answer_asked_for_before_another_replicas_write_is_not_kept():
    shared = Replicas()
    a, b = AuthCache(10.0, shared=shared), AuthCache(10.0, shared=shared)
    key = b.key(None, "ns/m", PULL, "main")
    _, stamp = b.lookup(key)  # b asks the registry...
    a.forget("ns/m")  # ...a commit through a moves main meanwhile...
    b.put(key, "old", stamp)  # ...and b's answer, from before it, arrives
    assert b.get(key) is None
    # A replica with the cache off still tells the others about its writes.
    off = AuthCache(0, shared=shared)
    b.put(key, "new", b.lookup(key)[1])
    off.forget("ns/m")
    assert b.get(key) is None


def test_without_redis_nothing_is_kept_or_served_and_redis_is_asked_again_later():
    clock = Clock()
    shared = Replicas()
    cache = AuthCache(10.0, shared=shared, clock=clock)
    key = cache.key(None, "ns/m", PULL, "main")
    cache.put(key, "root", cache.lookup(key)[1])
    assert cache.get(key) == "root"
    shared.down = True
    assert cache.get(key) is None  # a kept answer is not served unchecked
    asked = shared.asked
    _, stamp = cache.lookup(key)
    cache.put(key, "root", stamp)  # nor is one kept without its generation
    assert shared.asked == asked  # and Redis is not asked once per request meanwhile
    cache.forget("ns/m")  # a write's forget never raises: the write is done
    shared.down = False
    cache.put(key, "root", cache.epoch)  # epoch carries no generation: nothing kept
    clock.now += 5.0  # SHARED_RETRY later Redis is asked again, and answers
    assert cache.get(key) is None
    cache.put(key, "root", cache.lookup(key)[1])
    assert cache.get(key) == "root" and shared.asked > asked


@pytest.mark.parametrize(
    ("options", "named"),
    [(["--workers", "2"], "--redis"), (["--workers", "0"], "--workers"),
     (["--workers", "65"], "--workers")],
)  # fmt: skip
def test_serve_refuses_workers_it_cannot_run_with_one_line_and_exit_2(tmp_path, options, named):
    """More than one worker process needs --redis: the workers share tickets and tokens."""
    assert named in serve_refusal(tmp_path, *options)


def test_a_stuck_registry_request_holds_the_others_for_ask_wait_at_most(monkeypatch):
    monkeypatch.setattr(authcache_module, "ASK_WAIT", 0.5)
    cache = AuthCache(10.0)
    key = cache.key(None, "ns/m", PULL, "main")  # every anonymous reader of ns/m
    stuck, asked = threading.Event(), []

    def ask() -> str:
        asked.append(1)
        if len(asked) == 1:
            stuck.wait(30)  # the first request's connection hangs
            return "root"
        raise AuthenticationError("the registry refused")  # nothing kept meanwhile

    first = threading.Thread(target=cache.answer, args=(key, ask))
    first.start()
    while not asked:
        time.sleep(0.01)
    started = time.monotonic()
    results = _at_once(3, lambda: cache.answer(key, ask))
    assert all(isinstance(r, AuthenticationError) for r in results), results
    assert 0.4 < time.monotonic() - started < 5  # waited, then asked for themselves
    started = time.monotonic()  # asked for longer than ASK_WAIT already: nobody waits
    with pytest.raises(AuthenticationError):
        cache.answer(key, ask)
    assert time.monotonic() - started < 0.4
    stuck.set()
    first.join(10)
    assert not cache._asking and cache.get(key) == "root"


def test_nobody_waits_for_another_when_nothing_could_be_kept():
    shared = Replicas()
    shared.down = True  # Redis not answering: no answer is kept, so none to share
    cache = AuthCache(10.0, shared=shared)
    key = cache.key(None, "ns/m", PULL, "main")

    def ask() -> str:
        time.sleep(0.3)
        return "root"

    started = time.monotonic()
    assert _at_once(4, lambda: cache.answer(key, ask)) == ["root"] * 4
    assert time.monotonic() - started < 0.55  # at once, not one after the first


def test_past_ask_wait_one_waiter_asks_in_the_stuck_ones_place_not_all(monkeypatch):
    monkeypatch.setattr(authcache_module, "ASK_WAIT", 0.5)
    cache = AuthCache(10.0)
    key = cache.key(None, "ns/m", PULL, "main")
    stuck, asked = threading.Event(), []

    def ask() -> str:
        asked.append(1)
        if len(asked) == 1:
            stuck.wait(30)
        else:
            time.sleep(0.1)  # the registry answers this one
        return "root"

    first = threading.Thread(target=cache.answer, args=(key, ask))
    first.start()
    while not asked:
        time.sleep(0.01)
    assert _at_once(10, lambda: cache.answer(key, ask)) == ["root"] * 10
    assert len(asked) == 2  # the stuck one and one in its place: not one each
    stuck.set()
    first.join(10)
