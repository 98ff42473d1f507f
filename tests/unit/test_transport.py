"""The registry transport: it keeps no cookies (Harbor takes a request that sends its session
cookie back for a browser session and refuses the upload for lack of a CSRF token), and it
says which of Harbor's refusals a user met (tests/integration/test_harbor.py meets them)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests

from modelpack.errors import AuthenticationError, RegistryPolicyError
from modelpack.registry.transport import Transport, raise_for_status
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


def _answer(status: int, code: str, message: str, *, refused: str | None = None):  # noqa: ANN202
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps({"errors": [{"code": code, "message": message}]}).encode()
    response._content_consumed = True  # as transport.send leaves a small body: read
    if refused:
        response.refused_account = refused
    return response


HARBOR_PUSH = "unauthorized to access repository: team/x, action: push"


@pytest.mark.parametrize(
    ("answer", "error", "words"),
    [
        # Harbor's doubled reason said once, and with credentials sent a refusal, not "log in"
        (_answer(401, "UNAUTHORIZED", f"{HARBOR_PUSH}: {HARBOR_PUSH}", refused="robot$team+ro"),
         AuthenticationError, f"refused robot$team+ro (UNAUTHORIZED: {HARBOR_PUSH})"),
        (_answer(401, "UNAUTHORIZED", HARBOR_PUSH), AuthenticationError, "requires authentication"),
        (_answer(412, "PRECONDITION", "Failed to process request due to 'x:v1' configured as immutable."),
         RegistryPolicyError, "a tag immutability rule protects it"),
        (_answer(403, "DENIED", "adding 1 KiB of storage resource, which when updated to current "
                 "usage of 5 KiB will exceed the configured upper limit of 4 KiB."),
         RegistryPolicyError, "would exceed the project's storage quota"),
        (_answer(403, "DENIED", "requested access to the resource is denied"),
         AuthenticationError, "access denied"),
    ],
)  # fmt: skip
def test_harbor_refusals_are_named(answer, error, words):
    with pytest.raises(error) as caught:
        raise_for_status(answer, "pushing team/x:v1")
    assert words in caught.value.message
    assert caught.value.message.count("unauthorized to access") <= 1
