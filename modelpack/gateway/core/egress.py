"""HTTP to the upstream hub, and only where it may point: no request forgery.

A client names a repo; the upstream answers with a listing and redirects, and the
gateway fetches what they point at with its own network position.  So:

* the upstream URL the operator configured is trusted as configured (scheme, host
  and port exactly): it may be a hub on this network, even on loopback;
* anything else it redirects to must be http(s), not a downgrade from https, on
  the upstream's host or a host matching the redirect allow-list, and every
  address the host resolves to must be global (no loopback, private, link-local,
  shared, reserved or multicast address).  The address is checked in the
  connection itself, on the address connected to, so a name that resolves to a
  public address when looked at and to 127.0.0.1 when connected to (DNS rebinding)
  gets nowhere;
* redirects are followed here, at most MAX_REDIRECTS, each checked; the upstream
  token goes to the configured origin only; proxies from the environment are
  not used (a proxy would resolve the name, out of the check's sight);
* one session serves imports made with different tokens (``with_token``: one per repo
  pattern, core/upstreamtokens.py), so it keeps no cookies: a cookie the upstream set in
  answer to one org's token would otherwise go out with the next org's requests.
"""

from __future__ import annotations

import copy
import http.cookiejar
import ipaddress
import logging
import os
import socket
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import NameResolutionError, NewConnectionError
from urllib3.poolmanager import PoolManager

from ...errors import IntegrityError, RegistryUnavailableError
from ...registry.transport import USER_AGENT

log = logging.getLogger("modelpack.gateway")
MAX_REDIRECTS = 5
# Where the public hub sends file downloads (cdn-lfs*.hf.co, cas-bridge.xethub.hf.co,
# cdn-lfs.huggingface.co); --upstream-redirect-allow replaces this list.
DEFAULT_REDIRECT_HOSTS = ("*.hf.co", "*.huggingface.co")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")

Origin = tuple[str, str, int]


class RefusedError(IntegrityError):
    """An upstream answer the import will not act on; ``public`` is what a client is told
    (the detail, with hosts and paths, stays in the gateway's log)."""

    public = (
        "the upstream hub's listing or answers break this gateway's import rules "
        "(sizes, caps, redirects); nothing was imported"
    )


class EgressRefusedError(RefusedError):
    public = (
        "the upstream hub pointed at a host this gateway does not fetch from; nothing was imported"
    )


def is_global_address(text: str) -> bool:
    """A unicast address on the public internet, also when an IPv6 address carries an
    IPv4 one (mapped, 6to4, NAT64) that is not."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    addresses = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            addresses.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            addresses.append(address.sixtofour)
        if address in _NAT64:
            addresses.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return all(a.is_global and not a.is_multicast for a in addresses)


def origin(url: str) -> Origin | None:
    """(scheme, host, port) of an absolute http(s) URL, the default port made explicit."""
    try:
        parts = urlsplit(url)
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number, a broken [IPv6] host
        return None
    if port is None or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port


@dataclass(frozen=True)
class EgressPolicy:
    """The configured upstream (trusted as configured) and the hosts it may redirect to."""

    upstream: str
    redirect_hosts: tuple[str, ...] = DEFAULT_REDIRECT_HOSTS

    @property
    def trusted(self) -> Origin:
        trusted = origin(self.upstream)
        assert trusted is not None, self.upstream  # GatewayConfig checked it
        return trusted

    def check_url(self, url: str) -> None:
        """Refuse a URL the import may not fetch (before any connection to it)."""
        target = origin(url)
        if target is None or target[0] not in ("http", "https"):
            raise EgressRefusedError(f"refused to fetch {_shown(url)}: not an http(s) URL")
        if target == self.trusted:
            return
        if self.trusted[0] == "https" and target[0] != "https":
            raise EgressRefusedError(f"refused to fetch {_shown(url)}: a downgrade from https")
        host = target[1]
        if host != self.trusted[1] and not any(
            fnmatchcase(host, p.lower()) for p in self.redirect_hosts
        ):
            raise EgressRefusedError(
                f"refused to fetch {_shown(url)}: {host} is neither the upstream's host nor "
                "in --upstream-redirect-allow"
            )

    def trusts(self, scheme: str, host: str, port: int) -> bool:
        """The configured upstream, exactly: connected to as the operator's resolver says."""
        return (scheme, host.lower(), port) == self.trusted


def global_addresses(name: str, port: int) -> list[str]:
    """The addresses ``name`` resolves to, refused unless every one of them is global."""
    found = list(
        dict.fromkeys(str(i[4][0]) for i in socket.getaddrinfo(name, port, type=socket.SOCK_STREAM))
    )
    refused = [a for a in found if not is_global_address(a)]
    if refused or not found:
        raise EgressRefusedError(
            f"refused to connect to {name}:{port}: it resolves to "
            f"{', '.join(refused) or 'nothing'}, not a global address"
        )
    return found


class _Checked:
    """Connects only to addresses the policy allows: the check is on the address the
    socket connects to, so a second DNS answer cannot differ from the one checked."""

    scheme = "http"

    def __init__(self, *args: Any, egress: EgressPolicy, **kwargs: Any) -> None:
        self.egress = egress
        super().__init__(*args, **kwargs)  # type: ignore[call-arg]

    def _new_conn(self):  # noqa: ANN202 - a socket
        if self.egress.trusts(self.scheme, self.host, self.port):
            return super()._new_conn()  # type: ignore[misc]
        try:
            addresses = global_addresses(self._dns_host, self.port)
        except socket.gaierror as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        # Connect to the checked address itself; self.host (TLS server name, Host) is
        # derived from _dns_host, so the name is back in place before connect() goes on.
        name, failure = self._dns_host, None
        try:
            for address in addresses:
                self._dns_host = address
                try:
                    return super()._new_conn()  # type: ignore[misc]
                except NewConnectionError as exc:
                    failure = exc
            raise failure or NewConnectionError(self, f"no address for {name}")
        finally:
            self._dns_host = name


class _CheckedHTTPConnection(_Checked, HTTPConnection):
    pass


class _CheckedHTTPSConnection(_Checked, HTTPSConnection):
    scheme = "https"


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _CheckedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _CheckedHTTPSConnection


class _CheckedPoolManager(PoolManager):
    def __init__(self, *args: Any, egress: EgressPolicy, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.egress = egress
        self.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}

    def _new_pool(self, scheme, host, port, request_context=None):  # noqa: ANN001, ANN202
        context = dict(request_context or self.connection_pool_kw)
        context["egress"] = self.egress  # handed to each connection of the pool
        return super()._new_pool(scheme, host, port, context)


class _CheckedAdapter(HTTPAdapter):
    def __init__(self, egress: EgressPolicy) -> None:
        self.egress = egress
        super().__init__(pool_connections=4, pool_maxsize=8, max_retries=0)

    def init_poolmanager(self, connections, maxsize, block=False, **kwargs):  # noqa: ANN001, ANN201
        self.poolmanager = _CheckedPoolManager(
            num_pools=connections, maxsize=maxsize, block=block, egress=self.egress, **kwargs
        )

    def send(self, request, **kwargs):  # noqa: ANN001, ANN003, ANN201
        kwargs["proxies"] = {}  # always a direct connection: the check sees the address
        return super().send(request, **kwargs)


class Egress:
    """GETs to the upstream and where it redirects, under an :class:`EgressPolicy`;
    ``token`` goes to the upstream's origin (``with_token`` for another one)."""

    def __init__(self, policy: EgressPolicy, token: str | None = None) -> None:
        self.policy = policy
        self.token = token
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, no netrc credentials for other hosts
        # No cookies kept: the session is shared by imports made with different tokens.
        self.session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
        self.session.headers["User-Agent"] = USER_AGENT
        adapter = _CheckedAdapter(policy)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)
        self.verify: bool | str = (
            os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("SSL_CERT_FILE") or True
        )
        self.timeout = (
            float(os.environ.get("MODELPACK_CONNECT_TIMEOUT") or 15),
            float(os.environ.get("MODELPACK_READ_TIMEOUT") or 120),
        )

    def with_token(self, token: str | None) -> Egress:
        """The same connections and policy, sending ``token`` (None: no token)."""
        other = copy.copy(self)
        other.token = token
        return other

    def get(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        """The final answer to GET ``url`` (streamed), every redirect checked first."""
        for _ in range(MAX_REDIRECTS + 1):
            self.policy.check_url(url)
            sent = dict(headers or {})
            if self.token and origin(url) == self.policy.trusted:
                sent["Authorization"] = f"Bearer {self.token}"
            try:
                response = self.session.get(
                    url,
                    headers=sent,
                    stream=True,
                    allow_redirects=False,
                    timeout=self.timeout,
                    verify=self.verify,
                )
            except requests.RequestException as exc:
                raise RegistryUnavailableError(
                    f"cannot reach the upstream hub for {_shown(url)}: {type(exc).__name__}"
                ) from exc
            except ValueError:  # requests parses a redirect's Location even when not following
                raise EgressRefusedError(
                    f"refused: {_shown(url)} redirects to a URL that does not parse"
                ) from None
            if not response.is_redirect:
                return response
            location = response.headers["Location"]
            response.close()
            log.info("upstream: %s redirects to %s", _shown(url), _shown(location))
            try:
                url = urljoin(url, location)
            except ValueError:
                raise EgressRefusedError(f"refused: a redirect to {location[:200]!r}") from None
        raise EgressRefusedError(f"refused: more than {MAX_REDIRECTS} redirects from the upstream")


def _shown(url: str) -> str:
    """A URL for the log, without its query (a CDN's signature)."""
    return url.split("?", 1)[0][:300]
