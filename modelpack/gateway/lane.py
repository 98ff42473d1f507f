"""The download lane (``serve --accel-redirect PREFIX --lane-port PORT``): downloads the nginx
in front asks this port for first, answered on an event loop in each worker process.

Why: on gunicorn's gthread worker every keep-alive request goes from the poller thread to a
request thread and back, under one GIL; with a cached download costing Python a header and
no body (``--accel-redirect``), that hand-over is most of the work (docs/benchmarks.md,
Where the time went).  Here one thread per process reads the requests (uvicorn, httptools) and
calls the same WSGI app, with the request marked (core/http.py's ``LANE``), on its loop.

What it answers: a download whose answer this process already keeps whole (the registry's
yes in the authorization cache, the model's manifest and blobs confirmed, the file's seal):
``X-Accel-Redirect`` to the file, with the log line, audit line and metrics the threads
would write.  Everything else (a first request, an expired answer, a file not yet in the
node cache, an error) is answered ``X-Accel-Redirect: @modelpack_gateway``: nginx sends the
same request, unchanged, to the gateway's ``--port``, whose threads answer it as before and
keep what the next request here needs.  So nothing on the loop waits for the registry, a
pull or Redis (``--redis``: the repository's write generation is read before the app is
called, without blocking, by ``GenerationReads``).

With ``--workers`` above 1, nginx's connection to the lane and its connection to the
threads may reach different processes, so a request sent back also has the lane's own
process keep what the next one needs (``Gateway.warm``, on ``WARMERS`` threads, one at a
time per credentials and file, at most ``WARM_MAX`` waiting): without it the lane of one
worker answered 1 download of 40.  That is one more registry request per credentials,
revision and process every ``--auth-cache-ttl``, as the threads of that process would ask,
and for what cannot be kept (refused credentials, a missing revision) one a minute.  The
same threads ask the registry again for a kept answer the lane served near its end
(state/authcache.py's ``REFRESH_DUE``), so a download in steady use is never sent back
when its answer ends (every request in flight then was: the lane's p99).

Bounds: 127.0.0.1 only (nginx runs beside the gateway, which it must to read its home);
a connection from outside ``--trusted-proxy``, or past ``MAX_CONNECTIONS`` of this
process, is closed as it is accepted; a request head must be complete ``--read-timeout``
seconds after its first byte (or after the connection opened), as on the threads; idle
keep-alive connections are closed after ``KEEP_ALIVE`` seconds; a connection that sends
``HEAD_READ_MAX`` bytes while a head is incomplete is closed unparsed (a head costs at most
that and one 256 KiB read); only GET and HEAD without a body (405, 400); headers of at most
``HEAD_MAX`` bytes (431).  Redis is asked without blocking the loop, with a short timeout
(state/shared.py's ``ON_LANE``, ``GenerationReads``).  The docs' nginx block sends a
download the lane does not take (refused, full, restarting) to the threads instead
(docs/gateway.md, The download lane).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import io
import logging
import secrets
import socket
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import SharedStateUnavailableError, UsageError
from ..extras import require
from .core.config import GatewayConfig
from .core.http import LANE, REASONS, REPLAY_LOCATION
from .state.audit import address_of, networks, within
from .state.authcache import GENERATIONS, REFRESH_DUE, SHARED_RETRY
from .state.shared import ON_LANE
from .state.ttlmap import TTLMap

log = logging.getLogger("modelpack.gateway")
HOST = "127.0.0.1"
HEAD_MAX = 16 * 1024  # the headers of a request (431)
HEAD_READ_MAX = 64 * 1024  # bytes read while a request head is incomplete (closed)
MAX_CONNECTIONS = 512  # nginx keeps 32 per worker process
KEEP_ALIVE = 15
BACKLOG = 2048
WARMERS = 2
WARM_MAX = 64
WARM_FAILED_TTL = 60.0
WARM_FAILED_MAX = 4096


def check_port(config: GatewayConfig) -> None:
    """Fail at start, not in every worker, when the lane's port is taken (UsageError)."""
    try:  # without SO_REUSEPORT: a port any other process listens on is refused
        socket.create_server((HOST, config.lane_port or 0)).close()
    except OSError as exc:
        raise UsageError(f"--lane-port {config.lane_port}: cannot listen on {HOST}: "
                         f"{exc.strerror or exc}") from None  # fmt: skip


def listen(port: int) -> socket.socket:
    """A socket of this process's own on the lane's port: the kernel spreads new connections
    evenly over the workers' sockets (SO_REUSEPORT), where one shared socket let one
    worker's loop take three connections of four."""
    return socket.create_server((HOST, port), backlog=BACKLOG, reuse_port=True)


def start(app: Any, config: GatewayConfig) -> threading.Thread:
    """Serve the lane from a daemon thread of this worker process."""
    purpose = "modelpack serve --lane-port"
    uvicorn = require("uvicorn", purpose=purpose, extra="serve")
    httptools = require("uvicorn.protocols.http.httptools_impl", purpose=purpose,
                        extra="serve", package="httptools")  # fmt: skip
    trusted = networks(config.trusted_proxies)
    warmers = Warmers(app.warm, replays=config.workers > 1, repository_of=app.repository_of)
    reader = app.shared.generation_reader()  # its client connects in the lane's loop
    generations = GenerationReads(reader) if reader is not None else None
    sock = listen(config.lane_port or 0)
    server = uvicorn.Server(
        uvicorn.Config(
            Lane(app, trusted, warmers, generations),
            http=_connection_class(httptools.HttpToolsProtocol, trusted, config.read_timeout),
            loop="asyncio",
            lifespan="off",
            log_config=None,  # the gateway's logging stays as it is
            access_log=False,  # the app logs each request it answers
            server_header=False,
            proxy_headers=False,  # the peer is nginx; X-Forwarded-For is the app's to judge
            timeout_keep_alive=KEEP_ALIVE,
            limit_concurrency=MAX_CONNECTIONS,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="download-lane", daemon=True
    )
    thread.start()
    return thread


def _connection_class(base: type, trusted: tuple, head_timeout: float) -> type:
    """uvicorn's connection (httptools) with the lane's bounds on connections and on
    request heads: their time, and the bytes read while one is incomplete (httptools
    itself bounds neither)."""

    class LaneConnection(base):  # type: ignore[misc, valid-type]
        head_since: float | None = None
        head_bytes = 0

        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            peer = self.client[0] if self.client else ""
            if len(self.connections) > MAX_CONNECTIONS or not within(address_of(peer), trusted):
                transport.abort()  # before a byte is read: no head, no thread, no fd kept
                return
            self.head_since = self.loop.time()
            self._watch_head()

        def data_received(self, data: bytes) -> None:
            if self.head_since is None and (self.cycle is None or self.cycle.response_complete):
                self.head_since, self.head_bytes = self.loop.time(), 0  # a new head starts
            if self.head_since is not None:
                self.head_bytes += len(data)
                if self.head_bytes > HEAD_READ_MAX:
                    self.transport.close()  # unparsed: a head past the bound takes no more
                    return
            super().data_received(data)
            if self.cycle is not None and not self.cycle.response_complete:
                self.head_since = None  # complete: the request is being answered

        def _watch_head(self) -> None:
            if self.transport.is_closing():
                return
            since, now = self.head_since, self.loop.time()
            if since is not None and now - since >= head_timeout:
                self.transport.close()
                return
            wait = head_timeout if since is None else since + head_timeout - now
            self.loop.call_later(wait, self._watch_head)

    return LaneConnection


class Warmers:
    """``warm(environ)`` on a few threads, once at a time per key, a bounded queue; what
    could not be kept (refused credentials, a missing revision or file) is not tried again
    for ``WARM_FAILED_TTL`` seconds, per credentials and URL and, for a refusal, per
    credentials and repository (``repository_of`` a path; anonymous clients may read one
    repository and not another): a bad password costs the registry one more login then,
    not one a request."""

    def __init__(
        self,
        warm: Callable[..., str],
        replays: bool = True,
        repository_of: Callable[[str], str | None] = lambda path: None,
    ) -> None:
        self.warm = warm
        self.replays = replays  # warm what was sent back (another process's threads answer it)
        self.repository_of = repository_of
        self.pool = ThreadPoolExecutor(WARMERS, thread_name_prefix="lane-warm")
        self.waiting: set[tuple[str, str]] = set()
        self.failed: TTLMap[tuple[str, str], bool] = TTLMap(WARM_FAILED_MAX, WARM_FAILED_TTL)
        self.secret = secrets.token_bytes(32)
        self.lock = threading.Lock()

    def submit(self, environ: dict[str, Any], fresh: bool = False) -> bool:
        """Warm ``environ``'s download (``fresh``: asking the registry again) unless it is
        being warmed, the queue is full or it failed of late; True if it will be."""
        header = environ.get("HTTP_AUTHORIZATION")
        who = (
            "-"
            if header is None
            else hmac.new(  # "-": no header; never the header itself
                self.secret, header.encode("utf-8", "surrogatepass"), hashlib.sha256
            ).hexdigest()
        )
        uri = str(environ.get("RAW_URI"))
        key, refused = (who, uri), (who, "@" + (self.repository_of(uri.split("?")[0]) or ""))
        with self.lock:
            if key in self.waiting or len(self.waiting) >= WARM_MAX:
                return False
            if self.failed.get(key) or self.failed.get(refused):
                return False
            self.waiting.add(key)
        environ = {**environ, LANE: False}
        self.pool.submit(self._run, key, refused, environ, fresh)
        return True

    def _run(
        self,
        key: tuple[str, str],
        refused: tuple[str, str],
        environ: dict[str, Any],
        fresh: bool,
    ) -> None:
        outcome = "failed"
        try:
            outcome = self.warm(environ, fresh=fresh)
        except Exception:
            log.exception("download lane: keeping %s failed", environ.get("RAW_URI"))
        finally:
            with self.lock:
                self.waiting.discard(key)
                if outcome not in ("kept", "pending"):
                    self.failed.set(key, True)
                if outcome == "refused":
                    self.failed.set(refused, True)


class GenerationReads:
    """Redis's write generation of a repository for the requests on the loop (state/
    authcache.py), without blocking it: one GET per repository at a time, shared by every
    request that arrived before it was sent (a request never takes the answer of a GET
    sent before it arrived, so it sees every write answered before it asked)."""

    def __init__(self, read: Callable[[str], Awaitable[str | None]]) -> None:
        self.read = read
        self.waiting: dict[str, asyncio.Future] = {}  # for the next GET of a repository
        self.flying: set[str] = set()
        self.failed: tuple[float, Exception] | None = None  # (until, the error)

    async def get(self, repository: str) -> object:
        """The generation, or the SharedStateUnavailableError the read ended with (given at
        once for ``SHARED_RETRY`` seconds after one, as the threads skip Redis then)."""
        loop = asyncio.get_running_loop()
        if self.failed is not None and loop.time() < self.failed[0]:
            return self.failed[1]
        future = self.waiting.get(repository)
        if future is None:
            future = self.waiting[repository] = loop.create_future()
            if repository not in self.flying:
                self._send(repository)
        return await asyncio.shield(future)  # a request cancelled cancels no other's answer

    def _send(self, repository: str) -> None:
        self.flying.add(repository)
        asyncio.ensure_future(self._read(repository))

    async def _read(self, repository: str) -> None:
        """One GET, for every request waiting when it starts: those that arrived in the
        same turn of the loop as the one that asked for it share it too."""
        future = self.waiting.pop(repository)  # who arrives from now on waits for the next
        try:
            answer: object = await self.read(repository)
        except Exception as error:  # handed to the requests, as the threads would meet it
            if isinstance(error, SharedStateUnavailableError):
                self.failed = (asyncio.get_running_loop().time() + SHARED_RETRY, error)
            answer = error
        except BaseException:  # cancelled: so are the requests' waits, not the requests
            future.cancel()
            raise
        finally:
            self.flying.discard(repository)
            if repository in self.waiting:  # arrived while this one was on its way
                self._send(repository)
        if not future.done():
            future.set_result(answer)


class Lane:
    """The ASGI side: a request as WSGI's environ, the app's headers back (never a body)."""

    def __init__(
        self,
        app: Any,
        trusted: tuple,
        warmers: Warmers | None = None,
        generations: GenerationReads | None = None,  # None: one gateway, no Redis to ask
    ) -> None:
        self.app = app
        self.trusted = trusted  # networks
        self.warmers = warmers
        self.generations = generations

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        ON_LANE.set(True)
        status, headers = await self.respond(scope)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def respond(self, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]]]:
        """The answer, with the request's generation read first (without blocking)."""
        read: dict[str, object] = {}
        if self.generations is not None and (
            repository := self.app.repository_of(_raw_path(scope))
        ):
            read[repository] = await self.generations.get(repository)
        GENERATIONS.set(read)
        REFRESH_DUE.set(False)
        return self.answer(scope)

    def answer(self, scope: dict[str, Any]) -> tuple[int, list[tuple[bytes, bytes]]]:
        peer = scope.get("client") or ("", 0)
        if not within(address_of(str(peer[0])), self.trusted):
            return _refusal(403, "this port answers the nginx in front only (--trusted-proxy)")
        if scope["method"] not in ("GET", "HEAD"):
            return _refusal(405, "the download lane answers GET and HEAD only")
        if sum(len(name) + len(value) + 4 for name, value in scope["headers"]) > HEAD_MAX:
            return _refusal(431, f"request headers past {HEAD_MAX} bytes")
        environ = _environ(scope, peer)
        if environ is None:
            return _refusal(400, "a download has no body")
        answer: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None):
            answer[:] = [status, headers]

        body = self.app(environ, start_response)
        if hasattr(body, "close"):
            body.close()
        status, headers = answer
        code = int(status.split(" ", 1)[0])
        if self.warmers is not None:
            due = REFRESH_DUE.get()  # the registry's kept answer was near its end
            if due or (self.warmers.replays and ("X-Accel-Redirect", REPLAY_LOCATION) in headers):
                self.warmers.submit(environ, fresh=due)
        return code, [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers]


def _raw_path(scope: dict[str, Any]) -> str:
    return (scope.get("raw_path") or scope["path"].encode()).decode("latin-1")


def _environ(scope: dict[str, Any], peer: tuple[str, int]) -> dict[str, Any] | None:
    """WSGI's environ for a request without a body (None: it has one)."""
    query = scope.get("query_string") or b""
    raw = _raw_path(scope)
    environ: dict[str, Any] = {
        "REQUEST_METHOD": scope["method"],
        "RAW_URI": raw + ("?" + query.decode("latin-1") if query else ""),
        "QUERY_STRING": query.decode("latin-1"),
        "SERVER_PROTOCOL": f"HTTP/{scope.get('http_version', '1.1')}",
        "SERVER_SOFTWARE": "modelpack-lane",
        "REMOTE_ADDR": str(peer[0]),
        "REMOTE_PORT": str(peer[1]),
        "wsgi.url_scheme": scope.get("scheme", "http"),
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": io.StringIO(),
        LANE: True,
    }
    for name, value in scope["headers"]:
        key = name.decode("latin-1").upper()
        if key == "TRANSFER-ENCODING" or (key == "CONTENT-LENGTH" and value.strip() != b"0"):
            return None
        if "_" in key:  # gunicorn drops these too: X_Foo would stand in for X-Foo
            continue
        key = "HTTP_" + key.replace("-", "_")
        text = value.decode("latin-1")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    return environ


def _refusal(status: int, message: str) -> tuple[int, list[tuple[bytes, bytes]]]:
    log.warning("download lane: %d %s %s", status, REASONS.get(status, ""), message)
    return status, [(b"x-error-message", message.encode()), (b"content-length", b"0")]
