"""What clients make the gateway remember is capped in count and age (issue 28, defect 10)."""

from __future__ import annotations

import pytest
from support.helpers import Clock

from modelpack.gateway.core.config import GatewayConfig
from modelpack.gateway.core.http import Request
from modelpack.gateway.core.hub import HubError
from modelpack.gateway.state.shared import MAX_SESSIONS, MAX_TICKETS, InProcess, Ticket
from modelpack.gateway.state.ttlmap import TTLMap
from modelpack.gateway.writes.xet import Xet
from modelpack.settings import Settings


def test_a_ttl_map_drops_the_oldest_past_its_size_and_everything_past_its_age():
    clock = Clock()
    seen: TTLMap[str, int] = TTLMap(3, 10.0, clock)
    for i in range(5):
        seen.set(f"k{i}", i)
    assert len(seen) == 3 and seen.get("k0") is None and seen.get("k4") == 4
    seen.set("k2", 22)  # set again: the newest now
    seen.set("k5", 5)
    assert seen.get("k3") is None and seen.get("k2") == 22
    clock.now += 10.0
    assert seen.get("k5") is None and len(seen) == 0
    seen.set("a", 1)
    assert seen.pop("a") == 1 and seen.pop("a") is None
    with pytest.raises(ValueError):
        TTLMap(0, 1.0)


def test_upload_tickets_are_capped(tmp_path):
    """(The same with Redis: tests/integration/test_gateway_shared_state.py.)"""
    shared = InProcess(tmp_path)
    keys = [shared.issue_ticket(Ticket("Basic x", "org/m", "0" * 64, i))
            for i in range(MAX_TICKETS + 50)]  # fmt: skip
    assert len(shared._tickets) == MAX_TICKETS
    assert shared.ticket(keys[0]) is None  # the oldest went first
    kept = shared.ticket(keys[-1])
    assert kept is not None and kept.size == MAX_TICKETS + 49
    shared.ticket_used(keys[-1])
    assert shared.ticket(keys[-1]) is None  # good until one upload with it succeeds


def _request(**headers: str) -> Request:
    environ = {"REQUEST_METHOD": "GET", "RAW_URI": "/", "HTTP_HOST": "127.0.0.1:8080",
               "wsgi.url_scheme": "http"}  # fmt: skip
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    return Request.from_environ(environ)


def test_xet_sessions_are_capped(tmp_path):
    config = GatewayConfig("127.0.0.1:9/gw", settings=Settings(home=tmp_path, plain_http=True))
    shared = InProcess(tmp_path)
    xet = Xet(config, clients=None, shared=shared)  # type: ignore[arg-type]  # no registry
    tokens = []
    for _ in range(MAX_SESSIONS + 5):
        answer = xet.write_token(_request(AUTHORIZATION="Basic x"), "org/m", "http://gw")
        tokens.append(answer.headers["X-Xet-Access-Token"])
    assert len(shared._sessions) == MAX_SESSIONS
    with pytest.raises(HubError) as refused:
        xet._session(_request(AUTHORIZATION=f"Bearer {tokens[0]}"))
    assert refused.value.status == 401
    assert xet._session(_request(AUTHORIZATION=f"Bearer {tokens[-1]}")).repo_id == "org/m"


def test_preupload_sizes_kept_per_scope_are_capped(tmp_path):
    """Before: every lfs size a preupload listed was kept for as long as the scope was
    used (bob's 2 MiB preuploads of 60,000 sizes each: +75 MiB of RSS in 10 requests)."""
    from modelpack.gateway.state.shared import MAX_ANNOUNCED, scope_of

    config = GatewayConfig("127.0.0.1:9/gw", settings=Settings(home=tmp_path, plain_http=True))
    shared = InProcess(tmp_path)
    xet = Xet(config, clients=None, shared=shared)  # type: ignore[arg-type]  # no registry
    for start in range(0, 3 * MAX_ANNOUNCED, 50_000):
        xet.announce("Basic x", "org/m", list(range(start, start + 50_000)))
    sizes = shared._scope(scope_of("Basic x", "org/m")).sizes
    assert len(sizes) == MAX_ANNOUNCED
    last = 3 * MAX_ANNOUNCED - 3 * MAX_ANNOUNCED % 50_000 + 49_999
    assert last in sizes and 0 not in sizes  # the newest kept, the oldest gone
    xet.announce("Basic x", "org/m", [5])  # announced again: the newest once more
    assert list(sizes)[-1] == 5 and len(sizes) == MAX_ANNOUNCED


def test_odd_json_from_anonymous_clients_is_a_400_not_a_500():
    """Before: a listing cursor nested 2,900 deep or holding 1e400, and a paths-info body
    nested deep or not an object, raised RecursionError/OverflowError/AttributeError: 500
    and a traceback in the log per request."""
    import base64
    import io

    from modelpack.gateway.read.catalog import _cursor_offset

    for text in (b"[" * 2900, b'{"offset": 1e400}', b'{"offset": "x"}', b"[]"):
        with pytest.raises(HubError) as refused:
            _cursor_offset(base64.urlsafe_b64encode(text).decode().rstrip("="))
        assert refused.value.status == 400
    for body in (b"[" * 100_000, b"[1, 2]", b'"x"'):
        request = _request()
        request.environ.update({"CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
                                "CONTENT_TYPE": "application/json"})  # fmt: skip
        with pytest.raises(HubError) as refused:
            request.form()
        assert refused.value.status == 400


def test_made_up_methods_cannot_grow_the_request_counters():
    """A client may send any method token; /metrics counts the known ones by name and the
    rest as one ``other``, so a spray of made-up methods adds one series, not one each."""
    from modelpack.gateway.state.metrics import METHODS, Metrics

    metrics = Metrics()
    for n in range(2000):
        metrics.request(f"X{n:05d}", "other", 405)
    metrics.request("GET", "resolve", 200)
    series = [line for line in metrics.render().splitlines()
              if line.startswith("modelpack_gateway_requests_total{")]  # fmt: skip
    assert len(series) == 2, series
    assert 'method="other"' in series[0] + series[1] and "2000.0" in series[0] + series[1]
    assert len(metrics._children) == 2 and "GET" in METHODS
