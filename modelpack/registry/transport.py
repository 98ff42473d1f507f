"""HTTP to one registry host: scheme and TLS choice, retries, error mapping.

Everything above this module speaks in modelpack errors; everything below is
``requests``.  Retries cover what a flaky network or a busy registry does
(connection resets, 429, 5xx, honouring Retry-After); a request whose body is
a one-shot stream is not retried here, its caller restarts it.
"""

from __future__ import annotations

import http.cookiejar
import json
import logging
import os
import random
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .._version import __version__
from ..errors import (
    AuthenticationError,
    RegistryError,
    RegistryPolicyError,
    RegistryUnavailableError,
    TransferInterruptedError,
)
from ..oci.limits import MAX_MANIFEST_BYTES
from ..settings import RegistryOptions, is_loopback_host
from .challenge import parse_challenges

USER_AGENT = f"modelpack/{__version__}"
MAX_RESPONSE_BYTES = MAX_MANIFEST_BYTES  # any body we read whole: errors, tokens, tag lists
# -v shows each request as METHOD URL -> STATUS; never headers or bodies (credentials).
log = logging.getLogger("modelpack.http")
RETRYABLE_STATUS = {408, 429, 500, 502, 503, 504}
_NOT_TLS_MARKERS = ("WRONG_VERSION_NUMBER", "wrong version number", "record layer failure")


def _env_number(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    backoff: float = 0.5
    max_backoff: float = 8.0

    def delay(self, attempt: int, retry_after: str | None = None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), 60.0)
            except ValueError:
                pass
        base = min(self.backoff * (2**attempt), self.max_backoff)
        return base * (0.5 + random.random() / 2)


ERROR_BODY_BYTES = 64 * 1024  # of an error answer we read at most this
ERROR_MESSAGE_CHARS = 300  # and show at most this of it: one line, not a page


def _error_body(response: requests.Response) -> bytes:
    if response._content_consumed:  # read already (capped by _preload)
        return (response.content or b"")[:ERROR_BODY_BYTES]
    try:
        return response.raw.read(ERROR_BODY_BYTES, decode_content=True) or b""
    except (urllib3.exceptions.HTTPError, OSError):
        return b""


def registry_error_message(response: requests.Response) -> str:
    """The registry's own words (``errors[0].message``, shortened), else the HTTP reason."""
    try:
        errors = json.loads(_error_body(response)).get("errors") or []
        if errors:
            first = errors[0]
            code = str(first.get("code", ""))
            message = _once(" ".join(str(first.get("message", "")).split()))
            if len(message) > ERROR_MESSAGE_CHARS:
                message = message[:ERROR_MESSAGE_CHARS] + "..."
            return f"{code}: {message}".strip(": ") or response.reason
    except (ValueError, AttributeError, TypeError, RecursionError):
        pass
    return f"HTTP {response.status_code} {response.reason}".strip()


# Registry clients keep no cookies (docker, containerd and ORAS keep none either): Harbor
# sets a session cookie on every answer, and a request that sends it back is taken for a
# browser session that owes a CSRF token (FORBIDDEN: CSRF token not found in request).
NO_COOKIES = http.cookiejar.DefaultCookiePolicy(allowed_domains=[])


class _CookielessSession(requests.Session):
    """A requests session that neither stores nor sends a cookie, redirects included."""

    def __init__(self) -> None:
        super().__init__()
        self.cookies.set_policy(NO_COOKIES)

    def prepare_request(self, request: requests.Request) -> requests.PreparedRequest:
        prepared = super().prepare_request(request)
        # requests follows a redirect with this per-request jar (cookies of the redirecting
        # answer go in it, then out with the next hop): it refuses them too.
        jar = getattr(prepared, "_cookies", None)
        if isinstance(jar, http.cookiejar.CookieJar):
            jar.set_policy(NO_COOKIES)
        return prepared


class Transport:
    """A pooled HTTP session bound to one registry host."""

    def __init__(
        self, host: str, options: RegistryOptions, *, pool_size: int = 8, retries: int = 4
    ) -> None:
        self.host = host
        self.options = options
        self.retry = RetryPolicy(attempts=max(1, retries))
        self.timeout = (
            _env_number("MODELPACK_CONNECT_TIMEOUT", 15.0),
            _env_number("MODELPACK_READ_TIMEOUT", 120.0),
        )
        self.session = _CookielessSession()
        self.session.headers["User-Agent"] = USER_AGENT
        self.session.trust_env = True
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=max(pool_size, 2), max_retries=0)
        self.session.mount("https://", adapter)
        self.session.mount("http://", adapter)
        # Passed on every request: requests lets REQUESTS_CA_BUNDLE override a
        # session-level setting (psf/requests#3829), which would ignore --ca-file.
        self.verify: bool | str = True
        if options.insecure:
            self.verify = False
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
        elif options.ca_file:
            self.verify = options.ca_file
        self._scheme = "http" if options.plain_http else "https"
        self._scheme_settled = options.plain_http or not is_loopback_host(host)
        self._lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"{self._scheme}://{self.host}"

    def url(self, path: str) -> str:
        return path if "://" in path else f"{self.base_url}{path}"

    def same_origin(self, url: str) -> bool:
        """True when ``url`` (a path, or absolute) is on this registry: the same scheme,
        host and port.  Only such URLs get our Authorization header."""
        origin = _origin(self.url(url))
        return origin is not None and origin == _origin(self.base_url)

    def _tls_failure(self, exc: requests.exceptions.SSLError) -> RegistryUnavailableError:
        return RegistryUnavailableError(
            f"TLS handshake with {self.host} failed: {_short(exc)}",
            hint="pass --ca-file with the registry's CA, --insecure to skip verification, "
            "or --plain-http if it speaks plain HTTP",
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        retry: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """One request, retried on transient failures; the final response is returned."""
        kwargs.setdefault("timeout", self.timeout)
        kwargs.setdefault("verify", self.verify)
        # Bodies we do not stream are read here with a cap: a registry must not be able
        # to make us hold a 10 GB error page or token document in memory.
        streamed = kwargs.pop("stream", False)
        kwargs["stream"] = True
        attempts = self.retry.attempts if retry else 1
        last_error: Exception | None = None
        for attempt in range(attempts):
            try:
                response = self.session.request(method, self.url(path), **kwargs)
            except requests.exceptions.SSLError as exc:
                if not self._scheme_settled and any(m in str(exc) for m in _NOT_TLS_MARKERS):
                    # A loopback registry speaking plain HTTP, as docker allows by default.
                    with self._lock:
                        self._scheme, self._scheme_settled = "http", True
                    path = path if "://" not in path else path.replace("https://", "http://", 1)
                    return self.send(method, path, retry=retry, **kwargs)
                raise self._tls_failure(exc) from exc
            except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
                last_error = exc
                if attempt + 1 < attempts:
                    time.sleep(self.retry.delay(attempt))
                    continue
                if not retry:  # a one-shot body: the caller restarts the whole transfer
                    raise TransferInterruptedError(
                        f"connection to {self.host} lost during {method}: {_short(exc)}"
                    ) from exc
                raise unreachable(self.host, exc) from exc
            self._scheme_settled = True
            if not streamed:
                _preload(response, self.host)
            log.debug(
                "%s %s -> %s",
                method,
                _path_only(response.url, keep_host=True),
                response.status_code,
            )
            if response.status_code in RETRYABLE_STATUS and attempt + 1 < attempts:
                delay = self.retry.delay(attempt, response.headers.get("Retry-After"))
                response.close()
                time.sleep(delay)
                continue
            if response.status_code in RETRYABLE_STATUS:
                raise RegistryUnavailableError(
                    f"registry {self.host} answered {registry_error_message(response)} "
                    f"to {method} {_path_only(response.url)} after {attempts} attempts",
                    hint="the registry is overloaded or down; try again later",
                )
            return response
        raise RegistryUnavailableError(f"cannot reach registry {self.host}: {last_error}")


def _preload(response: requests.Response, host: str) -> None:
    """Read a small body (at most MAX_RESPONSE_BYTES) the way requests would for stream=False."""
    try:
        data = response.raw.read(MAX_RESPONSE_BYTES + 1, decode_content=True)
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        response.close()
        raise TransferInterruptedError(f"connection to {host} lost mid-response: {exc}") from exc
    if len(data) > MAX_RESPONSE_BYTES:
        response.close()
        raise RegistryError(
            f"registry {host} sent a response body larger than {MAX_RESPONSE_BYTES} bytes to "
            f"{response.request.method} {_path_only(response.url)}; refused"
        )
    response._content = data  # what requests' own non-streamed read would have set
    response._content_consumed = True
    response.raw.release_conn()


def _once(message: str) -> str:
    """``X: X`` as ``X`` (Harbor repeats its reason: "unauthorized to access repository:
    team/x, action: push: unauthorized to access repository: team/x, action: push")."""
    half = (len(message) - 2) // 2
    if half > 0 and message[half : half + 2] == ": " and message[:half] == message[half + 2 :]:
        return message[:half]
    return message


# Harbor's words when a write would exceed a project's storage quota (403 DENIED).
_QUOTA_WORDS = ("exceed the configured upper limit", "quota")


def _policy_refusal(status: int, message: str, what: str) -> RegistryPolicyError | None:
    """A registry rule, not the credentials, refused the write: Harbor answers an immutable
    tag with 412 and a full quota with 403; one line each, with what to do."""
    if status == 412 and "immutable" in message:
        return RegistryPolicyError(
            f"{what}: the registry refused to move the tag: a tag immutability rule protects "
            f"it ({message})",
            hint="push under a new tag, or ask a project admin to change the rule",
        )
    if status == 403 and any(words in message.lower() for words in _QUOTA_WORDS):
        return RegistryPolicyError(
            f"{what}: the push would exceed the project's storage quota ({message})",
            hint="ask an admin to raise the project's quota or delete artifacts, then push "
            "again: what the registry already holds is not sent again",
        )
    if status == 412:
        return RegistryPolicyError(f"{what}: a policy of the registry refused it ({message})")
    return None


def raise_for_status(response: requests.Response, what: str) -> None:
    """Map a final non-2xx answer to the modelpack error for it."""
    if response.status_code < 400:
        return
    message = registry_error_message(response)
    if refusal := _policy_refusal(response.status_code, message, what):
        raise refusal
    challenge_errors = {
        c.params.get("error", "")
        for c in parse_challenges(response.headers.get("WWW-Authenticate", ""))
    }
    if response.status_code == 401 and "insufficient_scope" in challenge_errors:
        raise AuthenticationError(
            f"{what}: access denied ({message})",
            hint="the credentials lack permission for this repository and action",
        )
    # Set by RegistryClient.request on a 401 to a request made with credentials: they were
    # sent (and a token issued for them), so this is a refusal, not a missing login.
    account = getattr(response, "refused_account", None)
    if response.status_code == 401 and account is not None:
        raise AuthenticationError(
            f"{what}: access denied: the registry refused {account} ({message})",
            hint="the account may not do this here (its project role or robot permissions), "
            "or its password is wrong",
        )
    if response.status_code == 401:
        raise AuthenticationError(
            f"{what}: the registry requires authentication ({message})",
            hint="run `modelpack login HOST`, or set MODELPACK_USERNAME/MODELPACK_PASSWORD "
            "(and MODELPACK_REGISTRY=HOST when the command talks to two registries)",
        )
    if response.status_code == 403:
        raise AuthenticationError(
            f"{what}: access denied ({message})",
            hint="the credentials lack permission for this repository",
        )
    raise RegistryError(f"{what}: {message}")


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute URL, the default port made explicit."""
    parts = urlsplit(url)
    try:
        port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    except ValueError:  # a port that is not a number
        return None
    if port is None or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port


DOCKER_HUB_HOSTS = ("registry-1.docker.io", "docker.io", "index.docker.io")


def unreachable(host: str, exc: Exception) -> RegistryUnavailableError:
    """One line for a registry that cannot be reached: what failed, on which host, and the
    likely fix (a name that does not resolve is usually a reference without its host)."""
    text = str(exc)
    if (
        "NameResolutionError" in text
        or "Name or service not known" in text
        or "nodename nor servname" in text
    ):
        if host in DOCKER_HUB_HOSTS:
            return RegistryUnavailableError(
                f"cannot resolve {host} (Docker Hub): the reference names no registry host, "
                "so Docker Hub was assumed",
                hint="write the registry into the reference, e.g. 127.0.0.1:5000/team/bert:v1",
            )
        return RegistryUnavailableError(
            f"cannot resolve the registry host {host}",
            hint="check the host name in the reference and your DNS",
        )
    if "Connection refused" in text or "ConnectionRefusedError" in text:
        return RegistryUnavailableError(
            f"registry {host} refused the connection: nothing listens there",
            hint="check the port, that the registry is running, and --plain-http",
        )
    if isinstance(exc, requests.exceptions.Timeout) or "timed out" in text:
        return RegistryUnavailableError(
            f"registry {host} did not answer in time",
            hint="check your network or proxy settings; MODELPACK_CONNECT_TIMEOUT raises the limit",
        )
    return RegistryUnavailableError(
        f"cannot reach registry {host}: {_short(exc)}",
        hint="check the host and port, your network, and --plain-http",
    )


def _short(exc: Exception) -> str:
    text = str(exc)
    for marker in ("Caused by ", "Failed to establish a new connection: "):
        if marker in text:
            text = text.split(marker, 1)[1]
    return text.strip("()\"' ")[:200]


def _path_only(url: str, *, keep_host: bool = False) -> str:
    """A URL without its query (which may carry a storage signature) and scheme."""
    rest = url.split("://", 1)[-1].split("?", 1)[0]
    return rest if keep_host else rest.split("/", 1)[-1]
