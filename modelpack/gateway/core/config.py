"""What a gateway serves and how: the registry it fronts, the node cache, policies."""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

from ...errors import UsageError
from ...oci.reference import parse_reference
from ...settings import Settings, is_loopback_host, parse_size
from .egress import DEFAULT_REDIRECT_HOSTS, origin
from .upstreamtokens import TokenRule, check_token, parse_token_rules

XET_CACHE_MIN = 256 * 1024**2  # a few xorbs: what one reconstruction's fetches need at once
XET_FILE_MAX = 50 * 1024**3  # the hub's per-file limit is 50 GB
XET_SESSION_MAX = 1024**4  # 1 TiB: a 405B model in bf16 (810 GB) in one upload_folder
GiB = 1024**3
UPSTREAM_MISS_TTL = 600  # seconds a miss is remembered (docs/gateway.md says why)
UPSTREAM_MISS_MAX = 10_000  # misses remembered at once
UPSTREAM_MISS_TTL_MAX = 7 * 86400
UPSTREAM_MISS_MAX_MAX = 1_000_000
PROTECT_MAX = 64  # --protect patterns
TRUSTED_PROXIES_MAX = 64  # --trusted-proxy addresses or networks
AUDIT_ROTATE_MIN = 64 * 1024  # --audit-log-max-bytes: a few hundred lines at least
AUDIT_BACKUPS_MAX = 100
WORKERS_MAX = 64  # --workers: processes, each with --threads threads and its own Redis pool
# A --protect pattern: an OCI tag's characters and fnmatch's *, ? and [...].
_PROTECT_RE = re.compile(r"^[A-Za-z0-9_.*?\[\]!-]{1,128}\Z")
# The registry's yes to a credential is kept this long (state/authcache.py): revocation
# latency.  At most AUTH_CACHE_TTL_MAX, so it stays a matter of minutes.
AUTH_CACHE_TTL = 10.0
AUTH_CACHE_TTL_MAX = 300.0

# An X-Accel-Redirect prefix: path segments nginx needs no escaping for, no "..".
_ACCEL_PREFIX = re.compile(r"/(?:[A-Za-z0-9_-][A-Za-z0-9._-]*/)+")
# A Host header worth looking at: a name or IPv4 address, or a bracketed IPv6 one, and a port.
_HOST_RE = re.compile(r"^(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?\Z")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def browser_origin(scheme: str, host: str) -> str | None:
    """``scheme://host[:port]`` as browsers write an ``Origin``: lower case, no default
    port; None for a scheme other than http(s) or a host that is no host."""
    scheme, host = scheme.lower(), host.lower()
    if scheme not in _DEFAULT_PORTS or not _HOST_RE.match(host):
        return None
    if host.endswith(f":{_DEFAULT_PORTS[scheme]}"):
        host = host.rsplit(":", 1)[0]
    return f"{scheme}://{host}"


@dataclass(frozen=True)
class Caps:
    """Bounds on one upstream import (upstream/files.py holds a listing to them); each has
    an environment override (docs/gateway.md)."""

    files: int = 10_000  # as MODELPACK_MAX_LAYERS: one layer per file
    file_bytes: int = 64 * GiB  # the public hub takes files up to 50 GB
    repo_bytes: int = 1024 * GiB
    listing_bytes: int = 16 * 1024 * 1024  # ~60,000 siblings with sizes and hashes

    @classmethod
    def from_env(cls) -> Caps:
        def read(name: str, default: int) -> int:
            variable = f"MODELPACK_GATEWAY_UPSTREAM_{name}"
            value = os.environ.get(variable)
            return parse_size(value, variable) if value else default

        defaults = cls()
        return cls(
            files=read("MAX_FILES", defaults.files),
            file_bytes=read("MAX_FILE_BYTES", defaults.file_bytes),
            repo_bytes=read("MAX_REPO_BYTES", defaults.repo_bytes),
            listing_bytes=read("MAX_LISTING_BYTES", defaults.listing_bytes),
        )


@dataclass
class GatewayConfig:
    """``registry`` is ``HOST[:PORT][/NAMESPACE]``: hub repo ``org/name`` is served
    from OCI repository ``NAMESPACE/org/name`` on HOST.  ``settings.home`` is the
    node cache.  ``verify_key`` refuses models without a valid signature by that
    key.  ``token_user``: a client's ``Bearer TOKEN`` is used as the password of
    this registry user (else as ``user:password``, else as an identity token).
    ``lend_credentials``: requests without ``Authorization`` use the gateway's own
    registry credentials (else they are anonymous).  ``read_timeout``: seconds a
    client has to send a whole request head.  ``max_pulls``: concurrent requests
    waiting on a pull-through (more get 429 and retry); None: half the threads.
    ``upstream``: a hub URL to import repos the registry lacks from (upstream/),
    only those matching an ``upstream_allow`` fnmatch pattern, with
    ``upstream_token`` (sent to the upstream only), or for repo ids matching a pattern the
    token of ``upstream_token_for`` (``PATTERN=TOKEN`` values) or ``upstream_token_file``
    (``PATTERN=FILE``, read here), most specific pattern first (core/upstreamtokens.py;
    the rules end up in ``upstream_tokens``); ``upstream_miss_ttl``, ``upstream_miss_max``:
    how long (0: not at all) and how many upstream misses are remembered
    (upstream/misses.py); ``upstream_redirect_allow``: host
    patterns the upstream may redirect downloads to (None: the public hub's CDNs; any
    address must still be global, egress.py); ``upstream_caps``: bounds on one import
    (None: the defaults and their MODELPACK_GATEWAY_UPSTREAM_MAX_* overrides, read here
    so that a bad value stops the start, not a worker).  ``offline``: no upstream
    requests, serve only what the registry has.  ``inline_max``: uploads of files
    up to this size come inline in the commit (preupload says "regular"), larger
    ones through Xet or LFS (docs/gateway.md, Uploads).  ``xet_file_max``: the
    largest file a Xet shard may put together (the hub's 50 GB limit);
    ``xet_session_max``: the bytes one Xet token may send as xorbs, and publish as
    files (writes/xet.py says why both are bounded).  ``public_url``: the
    ``http(s)://HOST[:PORT]`` clients reach this gateway at (several, or a comma
    list, when it has several names): every absolute URL it hands out is one of
    them (see ``base_url``).  ``allow_unsafe_pickle``: commits and imports keep pickle
    files that run code when loaded (refused by default; writes/scanning.py).
    ``audit_log``: a file (or ``-``, stdout) that gets one JSON line per file read, write,
    upstream import and refusal (state/audit.py), rotated at ``audit_log_max_bytes`` (0:
    never; logrotate's rename is noticed) keeping ``audit_log_backups`` old files.
    ``trusted_proxies``: addresses or networks whose ``X-Forwarded-For`` names the client
    in the audit trail (never trusted from anyone else).  ``protect``: fnmatch patterns of
    branches and tags that no commit, tag creation or deletion through the gateway moves
    once they exist (writes/protected.py).
    ``auth_cache_ttl``: seconds the registry's yes to a credential, repository and
    action is kept (0: every request asks the registry; state/authcache.py).
    ``accel_redirect``: a URI prefix the nginx in front maps to the gateway's home: a
    download the node cache holds is answered to that nginx (a trusted proxy that says
    it maps the prefix) with ``X-Accel-Redirect``, and nginx sends the bytes
    (read/handoff.py).  ``lane_port``: with ``accel_redirect``, a port on 127.0.0.1 where
    that nginx asks for downloads first, answered on an event loop from what each process
    keeps (gateway/lane.py)."""

    registry: str
    settings: Settings = field(default_factory=Settings)
    verify_key: str | os.PathLike[str] | None = None
    token_user: str | None = None
    lend_credentials: bool = False
    bind: str = "127.0.0.1"  # this machine only, unless the operator says otherwise
    port: int = 8080
    threads: int = 64
    workers: int = 1
    read_timeout: float = 10.0
    max_pulls: int | None = None
    upstream: str | None = None
    upstream_allow: tuple[str, ...] = ()
    upstream_token: str | None = field(default=None, repr=False)  # never in a log line
    upstream_token_for: tuple[str, ...] = field(default=(), repr=False)  # PATTERN=TOKEN
    upstream_token_file: tuple[str, ...] = ()  # PATTERN=FILE
    upstream_miss_ttl: float = UPSTREAM_MISS_TTL
    upstream_miss_max: int = UPSTREAM_MISS_MAX
    upstream_redirect_allow: tuple[str, ...] | None = None
    upstream_caps: Caps | None = None
    offline: bool = False
    inline_max: int = 10 * 1024 * 1024
    xet_file_max: int = XET_FILE_MAX
    xet_session_max: int = XET_SESSION_MAX
    # With --redis: the xorbs a replica keeps (each also a registry blob), least used go first.
    xet_cache_max: int | str = "100GiB"
    public_url: tuple[str, ...] = ()
    allow_unsafe_pickle: bool = False
    redis: str | None = field(default=None, repr=False)  # may carry a password
    upstream_tokens: tuple[TokenRule, ...] = field(init=False, default=(), repr=False)
    audit_log: str | None = None
    audit_log_max_bytes: int | str = 0  # a size: 104857600 or "100MiB"
    audit_log_backups: int = 5
    trusted_proxies: tuple[str, ...] = ()
    protect: tuple[str, ...] = ()
    auth_cache_ttl: float = AUTH_CACHE_TTL
    accel_redirect: str | None = None
    lane_port: int | None = None
    auth_cache_ttl_max: ClassVar[float] = AUTH_CACHE_TTL_MAX  # for the CLI's range
    workers_max: ClassVar[int] = WORKERS_MAX

    def __post_init__(self) -> None:
        text = self.registry.strip().removeprefix("https://")
        if text.startswith("http://"):
            text = text.removeprefix("http://")
            self.settings = self.settings.with_overrides(plain_http=True)
        host, _, namespace = text.strip("/").partition("/")
        probe = "/".join(p for p in (host, namespace, "probe") if p)
        try:
            parse_reference(probe)
        except UsageError as exc:
            raise UsageError(
                f"--registry {self.registry!r} is not HOST[:PORT][/NAMESPACE]: {exc.message}"
            ) from None
        self.host, self.namespace = host, namespace
        if self.verify_key is not None and not Path(self.verify_key).is_file():
            raise UsageError(f"--verify-key {self.verify_key}: no such file")
        if self.threads < 1:
            raise UsageError("--threads must be at least 1")
        if not 1 <= self.workers <= WORKERS_MAX:
            raise UsageError(f"--workers must be 1 to {WORKERS_MAX}")
        if self.read_timeout <= 0:
            raise UsageError("--read-timeout must be positive")
        if self.max_pulls is None:
            self.max_pulls = max(1, self.threads // 2)
        if self.inline_max < 0:
            raise UsageError("--inline-max must not be negative")
        if self.max_pulls < 1:
            raise UsageError("--max-pulls must be at least 1")
        self.xet_cache_max = parse_size(self.xet_cache_max, "--xet-cache-max")
        if 0 < self.xet_cache_max < XET_CACHE_MIN:
            raise UsageError(
                f"--xet-cache-max must be 0 or at least {XET_CACHE_MIN} bytes (256MiB)"
            )
        if self.xet_file_max < 1 or self.xet_session_max < 1:
            raise UsageError("--xet-file-max and --xet-session-max must be at least 1")
        if not 0 <= self.auth_cache_ttl <= AUTH_CACHE_TTL_MAX:  # NaN fails both
            raise UsageError(
                f"--auth-cache-ttl must be between 0 and {AUTH_CACHE_TTL_MAX:g} seconds "
                f"(not {self.auth_cache_ttl}); 0 asks the registry on every request"
            )
        self._check_upstream()
        self.public_url = _public_urls(self.public_url)
        self.redis = _redis_url(self.redis)
        if self.workers > 1 and not self.redis:
            raise UsageError(
                f"--workers {self.workers} needs --redis URL: the workers share upload "
                "tickets, Xet tokens and branch locks there, as replicas do "
                "(docs/gateway.md, Running several replicas)"
            )
        self._check_audit()
        self.protect = _protect_patterns(self.protect)
        self._check_accel_redirect()

    def _check_accel_redirect(self) -> None:
        """A prefix nginx can map to the home's ``models/`` and ``store/blobs/`` with no
        escaping (docs/gateway.md, Downloads sent by nginx), and the proxies that may be
        answered with it named."""
        if not self.accel_redirect:
            self.accel_redirect = None
            if self.lane_port is not None:
                raise UsageError(
                    "--lane-port needs --accel-redirect: the lane answers downloads only by "
                    "handing them to the nginx in front (docs/gateway.md, The download lane)"
                )
            return
        if self.lane_port is not None and (
            not 1 <= self.lane_port <= 65535 or self.lane_port == self.port
        ):
            raise UsageError(f"--lane-port must be a port from 1 to 65535 other than --port "
                             f"(not {self.lane_port})")  # fmt: skip
        if not _ACCEL_PREFIX.fullmatch(self.accel_redirect):
            raise UsageError(
                f"--accel-redirect {self.accel_redirect!r}: a URI path that starts and ends "
                "with '/' (letters, digits, '.', '_', '-'), e.g. /_modelpack_cache/"
            )
        if not self.trusted_proxies:
            raise UsageError(
                "--accel-redirect needs --trusted-proxy: only the proxy that maps the prefix "
                "may be answered with it (any other client gets the bytes)"
            )

    def _check_audit(self) -> None:
        """The audit log must be writable now: a worker that cannot open it would fail
        every start after the fork, far from the operator's eyes."""
        self.trusted_proxies = _trusted_proxies(self.trusted_proxies)
        self.audit_log_max_bytes = parse_size(self.audit_log_max_bytes, "--audit-log-max-bytes")
        if 0 < self.audit_log_max_bytes < AUDIT_ROTATE_MIN:
            raise UsageError(f"--audit-log-max-bytes must be at least {AUDIT_ROTATE_MIN} bytes")
        if not 1 <= self.audit_log_backups <= AUDIT_BACKUPS_MAX:
            raise UsageError(f"--audit-log-backups must be 1 to {AUDIT_BACKUPS_MAX}")
        if not self.audit_log or self.audit_log == "-":
            self.audit_log = self.audit_log or None
            return
        path = Path(self.audit_log).expanduser()
        if path.is_dir():
            raise UsageError(f"--audit-log {self.audit_log}: a directory, not a file")
        try:  # made 0640 when new: user names and addresses are not for every account
            os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640))
        except OSError as exc:
            raise UsageError(
                f"--audit-log {self.audit_log}: cannot append to it: {exc.strerror}",
                hint="name a file in a folder the gateway may write to, or '-' for stdout",
            ) from None
        self.audit_log = str(path.resolve())

    def _check_upstream(self) -> None:
        self.upstream_allow = tuple(p.strip() for p in self.upstream_allow if p.strip())
        if self.upstream_redirect_allow is None:
            self.upstream_redirect_allow = DEFAULT_REDIRECT_HOSTS
        self.upstream_redirect_allow = tuple(
            p.strip().lower() for p in self.upstream_redirect_allow if p.strip()
        )
        for pattern in self.upstream_redirect_allow:
            if "/" in pattern or ":" in pattern:
                raise UsageError(
                    f"--upstream-redirect-allow {pattern!r} is a host name pattern "
                    "(e.g. '*.hf.co'), not a URL"
                )
        if not self.upstream:
            if (
                self.upstream_allow
                or self.upstream_token
                or self.upstream_token_for
                or self.upstream_token_file
            ):
                raise UsageError(
                    "--upstream-allow, --upstream-token, --upstream-token-for and "
                    "--upstream-token-file need --upstream URL"
                )
            return
        self.upstream = self.upstream.strip().rstrip("/")
        if not self.upstream.startswith(("http://", "https://")) or origin(self.upstream) is None:
            raise UsageError(f"--upstream {self.upstream!r} is not an http(s):// URL")
        if self.upstream_caps is None:
            self.upstream_caps = Caps.from_env()
        if not self.upstream_allow:
            # Proxying is opt-in per org or repo: an open proxy would let any client
            # fill the registry (disk, egress, licences) with whatever it names.
            raise UsageError(
                "--upstream needs at least one --upstream-allow PATTERN "
                "(e.g. 'myorg/*'; '*' proxies every repo)"
            )
        if not 0 <= self.upstream_miss_ttl <= UPSTREAM_MISS_TTL_MAX:
            raise UsageError(
                f"--upstream-miss-ttl must be 0 to {UPSTREAM_MISS_TTL_MAX} seconds (0: none)"
            )
        if not 1 <= self.upstream_miss_max <= UPSTREAM_MISS_MAX_MAX:
            raise UsageError(f"--upstream-miss-max must be 1 to {UPSTREAM_MISS_MAX_MAX}")
        self._check_upstream_tokens()

    def _check_upstream_tokens(self) -> None:
        token = (self.upstream_token or "").strip()  # a blank variable is no token
        self.upstream_token = check_token(token, "--upstream-token") if token else None
        self.upstream_tokens = parse_token_rules(self.upstream_token_for, self.upstream_token_file)
        if self.upstream_token and any(rule.pattern == "*" for rule in self.upstream_tokens):
            raise UsageError(
                "--upstream-token and a token for the pattern '*' both name the token for "
                "every repo: give one of them"
            )

    @property
    def listen_url(self) -> str:
        """``http://ADDRESS:PORT`` of the listening socket (127.0.0.1 for any address)."""
        host = "127.0.0.1" if self.bind in ("0.0.0.0", "::", "") else self.bind
        return f"http://[{host}]:{self.port}" if ":" in host else f"http://{host}:{self.port}"

    def base_url(self, host: str | None, scheme: str) -> str:
        """Where a client that sent this ``Host`` reaches the gateway, for the absolute
        URLs it hands out (upload hrefs, the Xet CAS, next pages, the page's snippets).

        A Host header is the client's to choose: reflected as is, it lets whoever can
        make a client (or a cache in between) see a hostile Host hand out upload URLs
        that send the client's bytes elsewhere.  So it is used only when it is one of
        ``public_url``, else the first of those; without ``public_url``, only a loopback
        name or the listen address is taken from Host, anything else gets
        ``listen_url``."""
        asked = browser_origin(scheme, host or "")
        if self.public_url:
            return asked if asked in self.public_url else self.public_url[0]
        if asked is not None and host and self._reflected(host):
            return asked
        return self.listen_url

    def _reflected(self, host: str) -> bool:
        name = urlsplit(f"//{host}").hostname or ""
        own = self.bind.strip("[]").lower() not in ("0.0.0.0", "::", "")
        return is_loopback_host(host) or (own and name == self.bind.strip("[]").lower())

    def banner(self) -> list[str]:
        """What an operator needs on start: the HF_ENDPOINT to set and how repo ids map."""
        url = self.public_url[0] if self.public_url else self.listen_url
        prefix = f"{self.host}/{self.namespace}/" if self.namespace else f"{self.host}/"
        lines = [
            f"modelpack serve: Hugging Face clients use HF_ENDPOINT={url}",
            f"  repo id ORG/NAME, revision TAG -> {prefix}ORG/NAME:TAG "
            f"(e.g. snapshot_download('ORG/NAME', revision='v1'))",
        ]
        if not self.public_url and self.bind in ("0.0.0.0", "::"):
            lines.append(
                f"  upload URLs and next pages name {url} to clients that reach this gateway "
                "by another name: pass --public-url http(s)://NAME[:PORT]"
            )
        if self.workers > 1:
            lines.append(f"  {self.workers} worker processes of {self.threads} threads each")
        if self.lane_port is not None:
            lines.append(f"  downloads the nginx in front asks for first: 127.0.0.1:"
                         f"{self.lane_port} (the download lane)")  # fmt: skip
        if self.redis:
            lines.append(f"  replicas share uploads and branch locks through Redis at "
                         f"{redis_location(self.redis)}")  # fmt: skip
        return [*lines, *self._upstream_banner()]

    def _upstream_banner(self) -> list[str]:
        if not self.upstream:
            return ["  offline: only what the registry has"] if self.offline else []
        if self.offline:
            return [f"  offline: nothing is imported from {self.upstream}"]
        lines = [
            f"  repos the registry lacks are imported from {self.upstream} "
            f"when they match {' '.join(self.upstream_allow)}"
        ]
        if self.upstream_tokens:  # the patterns, never a token
            patterns = " ".join(rule.pattern for rule in self.upstream_tokens)
            lines.append(f"  upstream tokens of their own for repos matching {patterns}")
        return lines

    def repository(self, repo_id: str) -> str:
        """The OCI repository that serves hub repo ``repo_id`` (already canonical)."""
        return f"{self.namespace}/{repo_id}" if self.namespace else repo_id


def _trusted_proxies(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--trusted-proxy`` values (each possibly a comma list) as networks (a bare
    address is a network of one)."""
    found: list[str] = []
    for text in (t.strip() for value in values for t in value.split(",")):
        if not text:
            continue
        try:
            found.append(str(ipaddress.ip_network(text, strict=False)))
        except ValueError:
            raise UsageError(f"--trusted-proxy {text!r} is not an IP address or network "
                             "(e.g. 10.0.0.5 or 10.0.0.0/24)") from None  # fmt: skip
    if len(found) > TRUSTED_PROXIES_MAX:
        raise UsageError(f"--trusted-proxy: at most {TRUSTED_PROXIES_MAX} addresses or networks")
    return tuple(dict.fromkeys(found))


def _protect_patterns(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--protect`` values (each possibly a comma list), checked: tag characters and
    fnmatch's wildcards only, at most PROTECT_MAX of them."""
    found: list[str] = []
    for text in (t.strip() for value in values for t in value.split(",")):
        if not text:
            continue
        if not _PROTECT_RE.match(text):
            raise UsageError(f"--protect {text!r} is not a pattern of branch and tag names "
                             "(letters, digits, _ . - and the wildcards * ? [...], at most "
                             "128 characters; e.g. 'v*' or 'release-*')")  # fmt: skip
        found.append(text)
    if len(found) > PROTECT_MAX:
        raise UsageError(f"--protect: at most {PROTECT_MAX} patterns")
    return tuple(dict.fromkeys(found))


def _public_urls(values: tuple[str, ...]) -> tuple[str, ...]:
    """``--public-url`` values (each possibly a comma list) as origins, in order."""
    found: list[str] = []
    for text in (t.strip() for value in values for t in value.split(",")):
        if not text:
            continue
        parts = urlsplit(text)
        try:
            port_ok = parts.port is None or parts.port > 0
        except ValueError:
            port_ok = False
        url = browser_origin(parts.scheme, parts.netloc) if port_ok else None
        if parts.path not in ("", "/") or parts.query or parts.fragment or "@" in parts.netloc:
            url = None
        if url is None:
            raise UsageError(f"--public-url {text!r} is not http(s)://HOST[:PORT]",
                             hint="the gateway serves at the root of its address")  # fmt: skip
        found.append(url)
    return tuple(dict.fromkeys(found))


REDIS_URL_MAX = 2048


def _redis_url(value: str | None) -> str | None:
    """``--redis``: a URL redis-py opens (``redis://[[USER]:PASSWORD@]HOST[:PORT][/DB]``,
    ``rediss://`` with TLS, ``unix:///PATH``); checked here so a wrong one stops the start
    with one line, never a worker."""
    if value is None or not value.strip():
        return None
    text = value.strip()
    refused = UsageError(
        "--redis is not a Redis URL",
        hint="redis://[[USER]:PASSWORD@]HOST[:PORT][/DB], rediss://... (TLS) or unix:///PATH",
    )
    if len(text) > REDIS_URL_MAX or any(ord(c) < 0x21 or ord(c) == 0x7F for c in text):
        raise refused
    parts = urlsplit(text)
    try:
        port = parts.port
    except ValueError:
        raise refused from None
    if parts.scheme in ("redis", "rediss"):
        database = parts.path.strip("/")
        if not parts.hostname or port == 0 or (database and not database.isdigit()):
            raise refused
    elif parts.scheme == "unix":
        if parts.hostname or not parts.path.startswith("/"):
            raise refused
    else:
        raise refused
    return text


def redis_location(url: str) -> str:
    """Where a Redis URL points, without its credentials (for logs and the banner)."""
    parts = urlsplit(url)
    if parts.scheme == "unix":
        return parts.path
    host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
    return f"{parts.scheme}://{host}:{parts.port or 6379}{parts.path or ''}"
