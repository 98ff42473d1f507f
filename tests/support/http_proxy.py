"""An HTTP proxy on loopback that can misbehave on purpose.

As a reverse proxy (``upstream`` set) it stands in front of a registry and,
by rule, answers 503/429 instead, cuts a response or a request body after N
bytes (a connection reset mid-blob), flips a byte of a response (a bad hop),
or redirects blob downloads to another
host; it can also play a server that ignores ``Range`` (``strip_range``).  As a forward proxy (``upstream`` None) it serves ``GET http://...``
requests, as HTTP_PROXY clients send them.  It counts every byte.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import ThreadingHTTPServer
from urllib.parse import urlsplit

from .serving import QuietHandler, serve, shutdown

HOP_HEADERS = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "upgrade"}


@dataclass
class Fault:
    """Applies to requests where ``match(method, path)`` is true, ``times`` times."""

    match: Callable[[str, str], bool]
    status: int | None = None  # answer this instead of forwarding
    retry_after: str | None = None
    drop_response_after: int | None = None  # close the socket after N body bytes
    drop_request_after: int | None = None  # close after reading N request body bytes
    redirect_to: Callable[[str], str] | None = None  # path -> Location (a 307)
    body: bytes | None = None  # with ``status``: answer this body
    corrupt_at: int | None = None  # flip the bits of the response body byte at this offset
    content_type: str = "application/json"
    times: int = 1
    range: str | None = None  # only requests with this Range header (one piece)


@dataclass
class Exchange:
    method: str
    path: str  # as the client asked for it
    status: int
    at: float
    request_headers: dict[str, str]
    response_bytes: int = 0
    request_bytes: int = 0
    # Set when the handler is done with the exchange (answered, cut, or the client went away):
    # only then are the byte counters final.
    finished: threading.Event = field(default_factory=threading.Event, repr=False)


@dataclass
class HttpProxy:
    upstream: str | None = None  # "http://127.0.0.1:5000"; None: forward proxy
    rewrite: Callable[[str], str] | None = None  # path seen -> path sent upstream
    inject_headers: dict[str, str] = field(default_factory=dict)  # added upstream
    # Slow blob downloads down: seconds to sleep after each 64 KiB of a blob body.
    blob_delay: float = 0.0
    faults: list[Fault] = field(default_factory=list)
    exchanges: list[Exchange] = field(default_factory=list)
    strip_range: bool = False  # forward without Range: the upstream answers 200, whole
    # Blob GETs being answered right now, and the most there ever were at once.
    blob_gets_open: int = 0
    blob_gets_peak: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        assert self._server is not None
        return f"127.0.0.1:{self._server.server_address[1]}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def bytes_served(self, predicate: Callable[[Exchange], bool]) -> int:
        """Response bytes of the matching exchanges, once each of them has finished."""
        return sum(e.response_bytes for e in self.finished_exchanges(predicate))

    def bytes_received(self, predicate: Callable[[Exchange], bool]) -> int:
        return sum(e.request_bytes for e in self.finished_exchanges(predicate))

    def finished_exchanges(
        self, predicate: Callable[[Exchange], bool], timeout: float = 60.0
    ) -> list[Exchange]:
        """The matching exchanges, after waiting for each handler to finish with it.

        A handler can still be writing to a client that is gone (a killed puller) or
        counting the last chunk a client has already read: counts taken before that
        would move afterwards.
        """
        with self._lock:
            matching = [e for e in self.exchanges if predicate(e)]
        deadline = time.monotonic() + timeout
        for exchange in matching:
            if not exchange.finished.wait(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{exchange.method} {exchange.path} still in progress")
        return matching

    def _take_fault(self, method: str, path: str, range_: str | None = None) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.range is not None and fault.range != range_:
                    continue
                if fault.times > 0 and fault.match(method, path):
                    fault.times -= 1
                    return fault
        return None

    def start(self) -> HttpProxy:
        proxy = self

        class Handler(QuietHandler):
            def _record(self, exchange: Exchange) -> None:
                with proxy._lock:
                    proxy.exchanges.append(exchange)

            def _simple(self, status: int, headers: dict[str, str], exchange: Exchange) -> None:
                self._drain_request()
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()
                exchange.status = status

            def _drain_request(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                while length > 0:
                    data = self.rfile.read(min(length, 1 << 16))
                    if not data:
                        break
                    length -= len(data)

            def _cut(self) -> None:
                # The connection ends mid-message: the client sees a truncated body.
                self.close_connection = True
                try:
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

            def _handle(self) -> None:
                target = self.path
                if proxy.upstream is None:  # forward proxy: absolute URI
                    parts = urlsplit(target)
                    origin, path = (
                        f"{parts.scheme}://{parts.netloc}",
                        parts.path + (f"?{parts.query}" if parts.query else ""),
                    )
                else:
                    origin, path = proxy.upstream, target
                exchange = Exchange(
                    self.command, path, 0, time.monotonic(), dict(self.headers.items())
                )
                self._record(exchange)  # counters keep updating while it streams
                blob_get = self.command == "GET" and "/blobs/sha256:" in path
                if blob_get:
                    with proxy._lock:
                        proxy.blob_gets_open += 1
                        proxy.blob_gets_peak = max(proxy.blob_gets_peak, proxy.blob_gets_open)
                try:
                    self._forward(exchange, origin, path)
                finally:
                    if blob_get:
                        with proxy._lock:
                            proxy.blob_gets_open -= 1
                    exchange.finished.set()

            def _forward(self, exchange: Exchange, origin: str, path: str) -> None:
                if proxy.rewrite is not None:
                    path = proxy.rewrite(path)
                fault = proxy._take_fault(self.command, path, self.headers.get("Range"))
                if fault is not None and fault.status is not None and fault.body is not None:
                    self._drain_request()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", fault.content_type)
                    self.send_header("Content-Length", str(len(fault.body)))
                    self.end_headers()
                    self.wfile.write(fault.body)
                    exchange.status, exchange.response_bytes = fault.status, len(fault.body)
                    return
                if fault is not None and fault.status is not None:
                    headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
                    self._simple(fault.status, headers, exchange)
                    return
                if fault is not None and fault.redirect_to is not None:
                    self._simple(307, {"Location": fault.redirect_to(path)}, exchange)
                    return
                up = urlsplit(origin)
                connection = http.client.HTTPConnection(up.hostname, up.port, timeout=60)
                connection.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    if name.lower() not in HOP_HEADERS and name not in proxy.inject_headers:
                        if proxy.strip_range and name.lower() == "range":
                            continue
                        connection.putheader(name, value)
                for name, value in proxy.inject_headers.items():
                    connection.putheader(name, value)
                connection.endheaders()
                length = int(self.headers.get("Content-Length") or 0)
                while length > 0:
                    data = self.rfile.read(min(length, 1 << 16))
                    if not data:
                        break
                    exchange.request_bytes += len(data)
                    length -= len(data)
                    if (
                        fault is not None
                        and fault.drop_request_after is not None
                        and exchange.request_bytes >= fault.drop_request_after
                    ):
                        connection.close()
                        self._cut()
                        return
                    connection.send(data)
                response = connection.getresponse()
                exchange.status = response.status
                self.send_response(response.status)
                body_length = response.getheader("Content-Length")
                for name, value in response.getheaders():
                    if name.lower() not in HOP_HEADERS:
                        self.send_header(name, value)
                body = None
                if body_length is None and self.command != "HEAD":
                    body = response.read()
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                limit = fault.drop_response_after if fault is not None else None
                if body is not None:
                    self.wfile.write(body)
                    exchange.response_bytes = len(body)
                elif self.command != "HEAD":
                    while data := response.read(1 << 16):
                        data = _corrupted(data, fault, exchange.response_bytes)
                        if limit is not None and exchange.response_bytes + len(data) > limit:
                            data = data[: limit - exchange.response_bytes]
                            self.wfile.write(data)
                            exchange.response_bytes += len(data)
                            connection.close()
                            self._cut()
                            return
                        self.wfile.write(data)
                        exchange.response_bytes += len(data)
                        if proxy.blob_delay and "/blobs/sha256:" in path:
                            time.sleep(proxy.blob_delay)
                connection.close()

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _handle  # noqa: N815

        self._server = serve(Handler)
        return self

    def stop(self) -> None:
        shutdown(self._server)
        self._server = None


def _corrupted(data: bytes, fault: Fault | None, offset: int) -> bytes:
    """``data`` (the body bytes from ``offset`` on) with the fault's byte flipped."""
    if fault is None or fault.corrupt_at is None:
        return data
    at = fault.corrupt_at - offset
    if not 0 <= at < len(data):
        return data
    return data[:at] + bytes([data[at] ^ 0xFF]) + data[at + 1 :]


def requests_to(method: str, fragment: str) -> Callable[[str, str], bool]:
    """A Fault matcher: this HTTP method and a path containing ``fragment``."""
    return lambda m, path: m == method and fragment in path


def exchanges_matching(proxy: HttpProxy, method: str, fragment: str) -> list[Exchange]:
    return [e for e in proxy.exchanges if e.method == method and fragment in e.path]


@dataclass
class StorageRedirect:
    """``front``: a proxy to a basic-auth registry; ``storage``: a second host serving the
    same blobs and authenticating by itself, as a presigned object-store URL does."""

    front: HttpProxy
    storage: HttpProxy

    def redirect(
        self, match: Callable[[str, str], bool], query: str = "", times: int = 100
    ) -> None:
        """Answer matching requests at ``front`` with a redirect to the same path at storage."""
        port = self.storage.host.split(":")[1]
        self.front.add(
            Fault(match, redirect_to=lambda p: f"http://localhost:{port}{p}{query}", times=times)
        )


@contextmanager
def registry_with_storage(monkeypatch, user: str = "bob", password: str = "bob-pass"):  # noqa: ANN001, ANN201
    """A basic-auth registry whose credentials the client has (MODELPACK_USERNAME/PASSWORD),
    behind a front proxy that can redirect blob GETs to a storage host."""
    import base64

    from modelpack.testing import RegistryServer

    with RegistryServer(users={user: password}) as registry:
        basic = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        storage = HttpProxy(upstream=registry.url, inject_headers={"Authorization": basic}).start()
        front = HttpProxy(upstream=registry.url).start()
        try:
            monkeypatch.setenv("MODELPACK_USERNAME", user)
            monkeypatch.setenv("MODELPACK_PASSWORD", password)
            yield StorageRedirect(front, storage)
        finally:
            storage.stop()
            front.stop()
