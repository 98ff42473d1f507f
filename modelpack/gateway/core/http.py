"""The little HTTP this gateway needs on top of WSGI: requests, responses, Range."""

from __future__ import annotations

import io
import json
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, quote, unquote

from .hub import HubError

if TYPE_CHECKING:
    from .config import GatewayConfig

REASONS = {
    200: "OK", 206: "Partial Content", 304: "Not Modified", 307: "Temporary Redirect",
    400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 409: "Conflict", 412: "Precondition Failed",
    413: "Content Too Large", 415: "Unsupported Media Type", 416: "Range Not Satisfiable",
    422: "Unprocessable Content",
    429: "Too Many Requests",
    499: "Client Closed Request", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable",
}  # fmt: skip
_RANGE_RE = re.compile(r"^bytes=([0-9]*)-([0-9]*)\Z")
# What huggingface_hub sends (httpx's json=, its LFS batch, its commit); none of them is
# a type a browser may send to another site without asking (crosssite.py).
JSON_TYPES = ("application/json", "application/vnd.git-lfs+json")
NDJSON_TYPES = ("application/x-ndjson",)
# The environ key the download lane (gateway/lane.py) marks its requests with.
LANE = "modelpack.lane"
# What the lane answers a request it sends back: the docs' nginx block names its location
# to the gateway's threads so (docs/gateway.md, Downloads sent by nginx).
REPLAY_LOCATION = "@modelpack_gateway"


class Replay(Exception):
    """The download lane (gateway/lane.py) cannot answer this request from what the
    process already knows (an answer kept, a file sealed): nginx sends it again to the
    gateway's threads."""


@dataclass
class Request:
    method: str
    path: str  # as sent, percent-encoded, without the query
    segments: list[str]  # decoded path segments, without the leading empty one
    query: dict[str, list[str]]
    environ: dict[str, Any]
    # What the routes learn for the audit trail (state/audit.py): ``route``, ``repo``,
    # ``revision``, ``path``, ``digest``, ``commit``, and ``credentials`` when the request
    # acts for credentials other than its own header (an LFS ticket's, a Xet token's).
    audit: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_environ(cls, environ: dict[str, Any]) -> Request:
        # The raw target keeps %2F inside a segment (a revision "refs%2Fpr%2F1").
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI")
        if not raw:
            raw = quote(environ.get("PATH_INFO", "/").encode("latin-1").decode("utf-8", "replace"))
            if environ.get("QUERY_STRING"):
                raw += "?" + environ["QUERY_STRING"]
        path, _, query = raw.partition("?")
        segments = [unquote(s) for s in path.split("/")[1:]]
        if segments and segments[-1] == "":
            segments.pop()
        return cls(
            environ.get("REQUEST_METHOD", "GET").upper(),
            path,
            segments,
            parse_qs(query),
            environ,
        )

    @property
    def shown_path(self) -> str:
        """The path as log lines show it: an LFS upload URL's last part is its ticket,
        which stands for the client's credentials, so it is left out."""
        if self.audit.get("route") == "lfs-upload":
            return self.path.rsplit("/", 1)[0] + "/TICKET"
        return self.path

    def header(self, name: str) -> str | None:
        return self.environ.get("HTTP_" + name.upper().replace("-", "_"))

    @property
    def on_lane(self) -> bool:
        """Answered on the download lane's event loop: nothing may wait for the registry,
        a pull or a file's whole check (``Replay`` instead)."""
        return self.environ.get(LANE) is True

    def require_type(self, accepted: tuple[str, ...]) -> None:
        """415 unless the body's ``Content-Type`` is one of ``accepted`` (parameters
        such as ``charset`` aside): a body parsed as JSON must say it is JSON."""
        media = (self.environ.get("CONTENT_TYPE") or "").split(";", 1)[0].strip().lower()
        if media not in accepted:
            raise HubError(415, f"the request body must be sent as Content-Type: {accepted[0]}"
                           f" (not {media or 'none'})")  # fmt: skip

    @property
    def scheme(self) -> str:
        """``https`` when the server, or a TLS proxy in front (``X-Forwarded-Proto``),
        says so: a link never drops to plain HTTP with the client's token on it."""
        if (self.header("X-Forwarded-Proto") or "").strip().lower() == "https":
            return "https"
        return "https" if self.environ.get("wsgi.url_scheme") == "https" else "http"

    def base_url(self, config: GatewayConfig) -> str:
        """The gateway's URL for this client (never a Host it is not known by)."""
        return config.base_url(self.header("Host"), self.scheme)

    def flag(self, name: str) -> bool:
        return (self.query.get(name) or [""])[-1].lower() in ("1", "true", "yes")

    def form(self) -> dict[str, list[str]]:
        try:
            length = int(self.environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > 1 << 20:
            raise HubError(400, "request body too large")
        body = self.environ["wsgi.input"].read(length) if length else b""
        kind = self.environ.get("CONTENT_TYPE", "")
        if kind.startswith("application/json"):
            try:
                data = json.loads(body or b"{}")
            except (ValueError, RecursionError):
                raise HubError(400, "request body is not JSON") from None
            if not isinstance(data, dict):
                raise HubError(400, "request body is not a JSON object")
            return {
                k: [str(x) for x in (v if isinstance(v, list) else [v])] for k, v in data.items()
            }
        return parse_qs(body.decode("utf-8", "replace"))


@dataclass
class Response:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | Iterable[bytes] = b""
    file: io.RawIOBase | None = None  # sent from ``offset`` for ``length`` bytes
    offset: int = 0
    length: int = 0
    source: str = ""  # "cache" / "registry" / "proxy": where served bytes came from
    handoff: str = ""  # X-Accel-Redirect: the proxy in front sends ``length`` bytes

    @classmethod
    def json(cls, document: Any, status: int = 200, headers: dict[str, str] | None = None):
        body = json.dumps(document).encode()
        return cls(status, {"Content-Type": "application/json", **(headers or {})}, body)

    @classmethod
    def text(cls, text: str, content_type: str = "text/plain; charset=utf-8") -> Response:
        return cls(200, {"Content-Type": content_type}, text.encode())

    @classmethod
    def error(cls, error: HubError) -> Response:
        return cls(
            error.status,
            {"Content-Type": "application/json", **error.response_headers()},
            error.body(),
        )

    def status_line(self) -> str:
        return f"{self.status} {REASONS.get(self.status, 'Unknown')}"


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range -> (first, last) inclusive; None to send the whole file.

    As the hub's storage (S3) answers: several ranges or a malformed header are
    ignored (RFC 9110 allows it); a range that starts at or past the end, a
    zero-length suffix, and every range of an empty file raise 416 with
    ``Content-Range: bytes */size``.  Positions of any length are fine (a 5000-digit
    one is just past the end).
    """
    if not header:
        return None
    match = _RANGE_RE.match(header.strip())
    if not match or (not match.group(1) and not match.group(2)):
        return None
    first, last = match.group(1), match.group(2)
    if not first:  # suffix: the last N bytes
        count = _position(last)
        if count == 0 or size == 0:
            raise _unsatisfiable(size)
        return max(size - count, 0), size - 1
    start = _position(first)
    if last and _position(last) < start:
        return None  # invalid: ignored
    if start >= size:
        raise _unsatisfiable(size)
    return start, min(_position(last), size - 1) if last else size - 1


def _position(digits: str) -> int:
    """A byte position; past any file's end when it has more digits than int64 holds."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 18 else 1 << 63


def _unsatisfiable(size: int) -> HubError:
    return HubError(416, f"Range not satisfiable (the file has {size} bytes)", None,
                    {"Content-Range": f"bytes */{size}"})  # fmt: skip


class Body:
    """A response body that reports how many bytes went out when the server closes it."""

    def __init__(self, chunks: Iterable[bytes], on_close: Callable[[int, bool], None]) -> None:
        self._chunks = chunks
        self._on_close = on_close
        self.sent = 0
        self.failed = False

    def __iter__(self) -> Iterator[bytes]:
        try:
            for chunk in self._chunks:
                self.sent += len(chunk)
                yield chunk
        except BaseException:
            self.failed = True
            raise

    def close(self) -> None:
        closer = getattr(self._chunks, "close", None)
        if closer is not None:
            closer()
        self._on_close(self.sent, self.failed)


class CountingInput:
    """``wsgi.input`` that counts the body bytes read (the audit trail's bytes received)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream
        self.count = 0

    def read(self, size: int | None = -1) -> bytes:
        data = self._stream.read() if size is None or size < 0 else self._stream.read(size)
        self.count += len(data)
        return data

    def readline(self, size: int | None = -1) -> bytes:
        data = self._stream.readline() if size is None or size < 0 else self._stream.readline(size)
        self.count += len(data)
        return data

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


class ClosingFile(io.FileIO):
    """A file whose ``close`` reports the response done (for ``wsgi.file_wrapper``,
    which gunicorn sends with sendfile(2)).

    ``position`` is where the last ``seek`` or ``read`` left it, which is how far a
    response got: socket.sendfile seeks the file past the last byte it sent, also when
    the client went away mid-file (gunicorn then moves the descriptor back with a bare
    lseek after a whole file, which ``position`` does not see), and the plain path reads
    what it sends."""

    on_close: Callable[[], None] | None = None
    position: int = 0

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        self.position = super().seek(offset, whence)
        return self.position

    def read(self, size: int | None = -1) -> bytes:
        data = super().read(size)
        self.position += len(data or b"")
        return data or b""

    def close(self) -> None:
        callback, self.on_close = self.on_close, None
        super().close()
        if callback is not None:
            callback()


def read_range(file: io.RawIOBase, offset: int, length: int) -> Iterator[bytes]:
    """The plain-Python way to send part of a file (servers without file_wrapper ranges)."""
    try:
        file.seek(offset)
        while length > 0:
            data = file.read(min(1 << 20, length))
            if not data:
                break
            length -= len(data)
            yield data
    finally:
        file.close()
