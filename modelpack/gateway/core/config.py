"""What a gateway serves and how: the registry it fronts, the node cache, policies."""

from __future__ import annotations

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

XET_FILE_MAX = 50 * 1024**3  # the hub's per-file limit is 50 GB
XET_SESSION_MAX = 1024**4  # 1 TiB: a 405B model in bf16 (810 GB) in one upload_folder
GiB = 1024**3
# The registry's yes to a credential is kept this long (state/authcache.py): revocation
# latency.  At most AUTH_CACHE_TTL_MAX, so it stays a matter of minutes.
AUTH_CACHE_TTL = 10.0
AUTH_CACHE_TTL_MAX = 300.0

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
    ``upstream_token`` (sent to the upstream only); ``upstream_redirect_allow``: host
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
    ``auth_cache_ttl``: seconds the registry's yes to a credential, repository and
    action is kept (0: every request asks the registry; state/authcache.py)."""

    registry: str
    settings: Settings = field(default_factory=Settings)
    verify_key: str | os.PathLike[str] | None = None
    token_user: str | None = None
    lend_credentials: bool = False
    bind: str = "127.0.0.1"  # this machine only, unless the operator says otherwise
    port: int = 8080
    threads: int = 64
    read_timeout: float = 10.0
    max_pulls: int | None = None
    upstream: str | None = None
    upstream_allow: tuple[str, ...] = ()
    upstream_token: str | None = field(default=None, repr=False)  # never in a log line
    upstream_redirect_allow: tuple[str, ...] | None = None
    upstream_caps: Caps | None = None
    offline: bool = False
    inline_max: int = 10 * 1024 * 1024
    xet_file_max: int = XET_FILE_MAX
    xet_session_max: int = XET_SESSION_MAX
    public_url: tuple[str, ...] = ()
    allow_unsafe_pickle: bool = False
    auth_cache_ttl: float = AUTH_CACHE_TTL
    auth_cache_ttl_max: ClassVar[float] = AUTH_CACHE_TTL_MAX  # for the CLI's range

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
        if self.read_timeout <= 0:
            raise UsageError("--read-timeout must be positive")
        if self.max_pulls is None:
            self.max_pulls = max(1, self.threads // 2)
        if self.inline_max < 0:
            raise UsageError("--inline-max must not be negative")
        if self.max_pulls < 1:
            raise UsageError("--max-pulls must be at least 1")
        if self.xet_file_max < 1 or self.xet_session_max < 1:
            raise UsageError("--xet-file-max and --xet-session-max must be at least 1")
        if not 0 <= self.auth_cache_ttl <= AUTH_CACHE_TTL_MAX:  # NaN fails both
            raise UsageError(
                f"--auth-cache-ttl must be between 0 and {AUTH_CACHE_TTL_MAX:g} seconds "
                f"(not {self.auth_cache_ttl}); 0 asks the registry on every request"
            )
        self._check_upstream()
        self.public_url = _public_urls(self.public_url)

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
            if self.upstream_allow or self.upstream_token:
                raise UsageError("--upstream-allow and --upstream-token need --upstream URL")
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
        return [*lines, *self._upstream_banner()]

    def _upstream_banner(self) -> list[str]:
        if not self.upstream:
            return ["  offline: only what the registry has"] if self.offline else []
        if self.offline:
            return [f"  offline: nothing is imported from {self.upstream}"]
        return [
            f"  repos the registry lacks are imported from {self.upstream} "
            f"when they match {' '.join(self.upstream_allow)}"
        ]

    def repository(self, repo_id: str) -> str:
        """The OCI repository that serves hub repo ``repo_id`` (already canonical)."""
        return f"{self.namespace}/{repo_id}" if self.namespace else repo_id


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
