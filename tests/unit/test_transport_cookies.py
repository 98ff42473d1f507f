"""The registry client keeps no cookies: Harbor takes a request that sends its session
cookie back for a browser session and refuses the upload for lack of a CSRF token."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from modelpack.registry.transport import Transport
from modelpack.settings import RegistryOptions


class _CookieSetter(BaseHTTPRequestHandler):
    """Sets a cookie on every answer (as Harbor's core does) and records the Cookie
    header of every request; /redirect answers 307 to /target with a cookie of its own."""

    seen: list[str | None] = []

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        type(self).seen.append(self.headers.get("Cookie"))
        self.send_response(307 if self.path == "/redirect" else 200)
        self.send_header("Set-Cookie", "sid=abc123; Path=/; HttpOnly")
        if self.path == "/redirect":
            self.send_header("Location", "/target")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def cookie_server() -> Iterator[str]:
    _CookieSetter.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _CookieSetter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_cookie_set_by_the_registry_is_never_sent_back(cookie_server):
    transport = Transport(cookie_server, RegistryOptions(plain_http=True))
    for method in ("GET", "POST", "GET"):
        response = transport.send(method, "/v2/")
        assert response.status_code == 200
        assert response.headers["Set-Cookie"].startswith("sid=")  # the server did set one
    assert _CookieSetter.seen == [None, None, None]
    assert len(transport.session.cookies) == 0


def test_no_cookie_travels_along_a_redirect(cookie_server):
    transport = Transport(cookie_server, RegistryOptions(plain_http=True))
    assert transport.send("GET", "/redirect").status_code == 200
    assert transport.send("GET", "/redirect").status_code == 200
    assert _CookieSetter.seen == [None, None, None, None]  # /redirect, /target, twice
