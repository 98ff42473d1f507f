"""The audit trail (``serve --audit-log FILE|-``): one JSON object per line for every read
of a file, every write, every upstream import and every refusal.

A line has ``time`` (RFC 3339, UTC, milliseconds), ``user`` (the registry user the
credentials name; ``null`` for anonymous), ``client`` (the peer's address, or what a
trusted proxy's ``X-Forwarded-For`` says), ``action``, ``repo``, ``revision``, ``path``
(for files), ``status`` (the HTTP status sent) and ``bytes`` (sent for requests without
a body, received for those with one, fetched from the upstream for an import); and, when
there is one, ``digest`` (an LFS object or a xorb), ``commit`` (a commit made) and
``error`` (the refusal's message).  docs/gateway.md ("Audit") has the whole contract and
modelpack/schemas/gateway-audit.schema.json the shape.

Never a credential: ``user`` is a name (an identity token, which names none, is shown as
``token:`` and 12 hex of an HMAC of it under a key kept in the node cache, or in Redis
for replicas, so a weak "token" that is really a password cannot be guessed back from
the log, and every replica names one token alike), the Authorization
header is never looked at for anything else, and ``path`` is never a URL (an LFS upload's
URL is its ticket).
Every text field is cut to a bound, so a line stays under 4 KiB (PIPE_BUF: a line to a
pipe is one atomic write).

Writing: a file through concurrent-log-handler's ConcurrentRotatingFileHandler (each line
one append under an flock; the path's inode compared with the open file's before each
line, so logrotate's rename is noticed without a signal; with ``max_bytes`` the file is
rotated by size under the same flock, so processes sharing it, such as gunicorn's old and
new worker during a reload, neither lose nor interleave lines), or stdout (``-``), flushed
per line.  The standard library's WatchedFileHandler has no size rotation and its
RotatingFileHandler rotates per process (two writers rename each other's files away): see
docs/architecture.md.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ...errors import ModelpackError, SharedStateUnavailableError
from ...extras import require
from ..core.config import GatewayConfig
from ..core.http import Request
from .access import credentials_from_header
from .metrics import Metrics
from .shared import Shared

log = logging.getLogger("modelpack.gateway")

# Written whatever their status: what a client read or changed.
DOWNLOAD = "download"
WRITES = frozenset(
    {
        "create-repo",
        "commit",
        "create-branch",
        "create-tag",
        "delete-branch",
        "delete-tag",
        "super-squash",
        "lfs-upload",
        "xet-xorb",
        "xet-shard",
        "git-push",
    }
)
READS = frozenset({DOWNLOAD, "git-fetch"})  # a file's bytes (LFS), a git fetch's objects
IMPORT = "import"
# (route, method) -> action where one route name covers several actions.
_ACTIONS = {
    ("resolve", "GET"): DOWNLOAD,
    ("lfs-download", "GET"): DOWNLOAD,
    ("xet-reconstruction", "GET"): DOWNLOAD,  # a Xet download: the file's bytes asked for
    ("resolve", "HEAD"): "file-metadata",
    ("branch", "POST"): "create-branch",
    ("branch", "DELETE"): "delete-branch",
    ("tag", "POST"): "create-tag",
    ("tag", "DELETE"): "delete-tag",
}
# Not refusals: nothing there, a Range past the end.
_NOT_REFUSALS = frozenset({404, 416})
# Each text field's bound, as JSON (escapes counted): the sum stays under PIPE_BUF.
BOUNDS = {
    "user": 256,
    "client": 64,
    "action": 32,
    "repo": 256,
    "revision": 256,
    "path": 1100,
    "digest": 80,
    "commit": 64,
    "error": 400,
}
MAX_HOPS = 32  # X-Forwarded-For entries looked at, from the right
_ERROR_EVERY = 60.0  # seconds between two log lines about failed audit writes
KEY_RETRY = 30.0  # seconds before a replica asks Redis for the shared key again


@dataclass(frozen=True)
class Who:
    """Who a request (or the import it started) is, as the audit trail names it."""

    user: str | None
    client: str


def is_refusal(status: int) -> bool:
    """A status that says no: 4xx but 404 (not there) and 416 (a Range past the end)."""
    return 400 <= status < 500 and status not in _NOT_REFUSALS


_PROCESS_KEY = secrets.token_bytes(32)


def node_key(path: Path) -> bytes:
    """The key identity tokens are fingerprinted with: 32 random bytes in ``path``
    (mode 0600), made by the first process that needs it, so every gateway sharing the
    node cache, and each restart, names one token alike; a key of this process when
    the file cannot be had."""
    for _ in range(2):
        try:
            data = path.read_bytes()
            if len(data) == 32:
                return data
            path.unlink()  # cut short by a crash between create and write: make anew
        except FileNotFoundError:
            pass
        except OSError:
            return _PROCESS_KEY
        key = secrets.token_bytes(32)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            continue  # another process made it: read that one
        except OSError:
            return _PROCESS_KEY
        with os.fdopen(fd, "wb") as out:
            out.write(key)
        return key
    return _PROCESS_KEY


def user_of(
    authorization: str | None,
    token_user: str | None,
    key: bytes | Callable[[], bytes] = _PROCESS_KEY,
) -> str | None:
    """The registry user ``authorization`` names: Basic's and ``Bearer USER:PASSWORD``'s
    user, ``--token-user`` for a bare Bearer token when it is set, ``token:`` + 12 hex of
    an HMAC-SHA256 under ``key`` of an identity token (it names nobody; without the key
    the fingerprint says nothing of the token, even a guessable one), None for none
    (anonymous) or for a header that is no credential."""
    if not authorization:
        return None
    try:
        credentials = credentials_from_header(authorization, token_user)
    except ModelpackError:
        return None
    if credentials.username:
        return credentials.username
    if credentials.identity_token:
        token = credentials.identity_token.encode("utf-8", "replace")
        secret = key() if callable(key) else key  # asked for only when a token needs it
        return f"token:{hmac.new(secret, token, hashlib.sha256).hexdigest()[:12]}"
    return None


def networks(values: Iterable[str]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(v, strict=False) for v in values)


def address_of(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An IP address from a peer address or an X-Forwarded-For entry (``1.2.3.4``,
    ``1.2.3.4:5678``, ``[::1]:80``, ``::1``); IPv4 inside IPv6 as IPv4; None for
    anything else."""
    text = text.strip()
    return _parsed_address(text) if len(text) <= ADDRESS_MAX else None


ADDRESS_MAX = 64  # "[" IPv6 with a zone "]:" port fits; nothing longer is an address


@functools.lru_cache(maxsize=1024)  # every request parses its peer's, up to three times
def _parsed_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if text.startswith("[") and "]" in text:
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def within(address: ipaddress.IPv4Address | ipaddress.IPv6Address | None, trusted: tuple) -> bool:
    """Whether ``address`` is in one of the ``trusted`` networks (None never is)."""
    return address is not None and any(address in network for network in trusted)


def client_of(environ: dict[str, Any], trusted: tuple) -> str:  # noqa: ANN001
    """The client's address: the peer's, unless the peer is a trusted proxy; then the
    first address of ``X-Forwarded-For``, read from the right, that is not a trusted
    proxy (each proxy appends the address it was reached from, so only the entries the
    trusted proxies appended are believed: whatever a client wrote there itself is to
    their left).  An entry that is no address stops the walk at the last one that was."""
    peer = str(environ.get("REMOTE_ADDR") or "")
    address = address_of(peer)
    if address is None:
        return peer[: BOUNDS["client"]] or "-"
    if not within(address, trusted):
        return str(address)
    forwarded = str(environ.get("HTTP_X_FORWARDED_FOR") or "")
    client = address
    for hop in reversed(forwarded.rsplit(",", MAX_HOPS)[-MAX_HOPS:]):
        found = address_of(hop)
        if found is None:
            break
        client = found
        if not within(found, trusted):
            break
    return str(client)


def rfc3339(now: float) -> str:
    moment = datetime.fromtimestamp(now, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def bounded(text: str, limit: int) -> str:
    """``text`` cut (ending in ``...``) so that its JSON form, escapes and quotes
    counted, has at most ``limit`` characters."""
    size = len(json.dumps(text))
    if size <= limit:
        return text
    keep = len(text)
    while keep and size + 3 > limit:
        keep = min(keep - 1, keep * limit // size)
        size = len(json.dumps(text[:keep]))
    return text[:keep] + "..."


def event_line(fields: dict[str, Any]) -> str:
    """One audit line: the fields in their order, text fields bounded, ASCII JSON."""
    line: dict[str, Any] = {}
    for name in ("time", "user", "client", "action", "repo", "revision", "path", "status",
                 "bytes", "digest", "commit", "error"):  # fmt: skip
        value = fields.get(name)
        if value is None and name in ("digest", "commit", "error"):
            continue
        if isinstance(value, str) and name in BOUNDS:
            value = bounded(value, BOUNDS[name])
        line[name] = value
    return json.dumps(line, separators=(",", ":"))


class _Failures:
    """What a handler does with a line it could not write: count it, and say so on the
    gateway's log now and then (not once per request while a disk is full)."""

    metrics: Metrics | None = None
    _said = 0.0

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 - logging's name
        if self.metrics is not None:
            self.metrics.audit_write_failed()
        now = time.monotonic()
        if now - self._said >= _ERROR_EVERY:
            self._said = now
            error = sys.exc_info()[1]
            log.error("audit: a line could not be written to the audit log: %s", error)


class AuditLog:
    """Where the lines go: a file (rotated by size when ``max_bytes``) or stdout (``-``)."""

    def __init__(
        self, target: str, max_bytes: int = 0, backups: int = 5, metrics: Metrics | None = None
    ) -> None:
        handler: logging.Handler
        if target == "-":

            class Stream(_Failures, logging.StreamHandler):
                pass

            handler = Stream(sys.stdout)
        else:
            base = require(
                "concurrent_log_handler",
                purpose="modelpack serve's --audit-log FILE",
                extra="serve",
                package="concurrent-log-handler",
            ).ConcurrentRotatingFileHandler

            class File(_Failures, base):  # type: ignore[misc, valid-type]
                pass

            handler = File(
                target,
                maxBytes=max_bytes,
                backupCount=backups if max_bytes else 0,
                encoding="ascii",
                # No umask= here: the handler would set the process's umask around its
                # open, and a cache file another thread makes meanwhile would get it.
            )
        handler.metrics = metrics  # type: ignore[attr-defined]
        self.handler = handler

    def write(self, line: str) -> None:
        """One line (no newline in it: JSON has none), written before this returns."""
        record = logging.makeLogRecord({"msg": line, "levelno": logging.INFO})
        self.handler.handle(record)

    def close(self) -> None:
        self.handler.close()


class Audit:
    """The gateway's audit trail: which events are written, and their fields.

    ``shared``: with replicas (``--redis``) the key identity tokens are fingerprinted with
    is the one in Redis (state/shared.py), asked for on the first such token, so every
    replica names one token alike; while Redis does not answer, this node's key is used
    (asked again after KEY_RETRY seconds, never once per request)."""

    def __init__(
        self, config: GatewayConfig, metrics: Metrics, shared: Shared | None = None
    ) -> None:
        self.metrics = metrics
        self.token_user = config.token_user
        self.trusted = networks(config.trusted_proxies)
        self.node_key = node_key(config.settings.home / "audit.key")
        self._shared = shared if shared is not None and shared.replicated else None
        self._key = None if self._shared is not None else self.node_key
        self._key_retry = 0.0
        self.log: AuditLog | None = None
        if config.audit_log:
            self.log = AuditLog(
                config.audit_log, config.audit_log_max_bytes, config.audit_log_backups, metrics
            )

    def key(self) -> bytes:
        """The key identity tokens are fingerprinted with (see the class)."""
        if self._key is not None:
            return self._key
        now = time.monotonic()
        if self._shared is not None and now >= self._key_retry:
            try:
                self._key = self._shared.audit_key() or self.node_key
                return self._key
            except SharedStateUnavailableError as exc:
                self._key_retry = now + KEY_RETRY
                log.warning("audit: %s; identity tokens are named with this node's key "
                            "until it answers", exc)  # fmt: skip
        return self.node_key

    def who(self, request: Request) -> Who:
        """The user the request's credentials name (those it acts for: an LFS ticket's,
        a Xet token's), and the client's address."""
        facts = request.audit
        authorization = (
            facts["credentials"] if "credentials" in facts else request.header("Authorization")
        )
        user = user_of(authorization, self.token_user, self.key)
        return Who(user, client_of(request.environ, self.trusted))

    def request_done(
        self, request: Request, route: str, status: int, sent: int, error: str | None = None
    ) -> None:
        """After the answer went out (``sent`` body bytes of it): a line when the request
        read a file, wrote, or was refused."""
        facts = request.audit
        route = str(facts.get("route") or route)
        action = _ACTIONS.get((route, request.method), route)
        if action not in WRITES and action not in READS and not is_refusal(status):
            return
        if self.log is None:  # counted only: who asked is not worked out for nothing
            self.metrics.audited(action, status)
            return
        received = getattr(request.environ.get("wsgi.input"), "count", 0)
        with_body = request.method in ("POST", "PUT", "PATCH", "DELETE")
        who = self.who(request)
        self.event(
            who,
            action,
            status,
            facts.get("bytes", received if with_body else sent),
            repo=facts.get("repo"),
            revision=facts.get("revision"),
            path=facts.get("path"),
            digest=facts.get("digest"),
            commit=facts.get("commit"),
            error=error if status >= 400 else None,
        )

    def event(self, who: Who, action: str, status: int, count: int, **fields: Any) -> None:
        """Count the event, and write its line when there is an audit log."""
        self.metrics.audited(action, status)
        if self.log is None:
            return
        line = event_line(
            {
                "time": rfc3339(time.time()),
                "user": who.user,
                "client": who.client,
                "action": action,
                "status": status,
                "bytes": count,
                **fields,
            }
        )
        self.log.write(line)
