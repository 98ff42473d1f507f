"""Registry authentication: answer ``WWW-Authenticate`` challenges.

Basic: send the credentials.  Bearer (the distribution token spec, what
Harbor, Docker Hub, GHCR use): ask the realm for a token with the exact
scopes of the operation, cache it per scope set until it expires, and fetch
a new one when the registry says 401 again.  ``prefetch`` asks one token for
many scopes at once (a listing reading many repositories: Harbor checks a
password with 600,000 PBKDF2 rounds per token request); a scope the token
server did not grant is answered 401 and asked for alone, as before.  Anonymous tokens work the same
way with no credentials.  Passwords never appear in messages or logs.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import requests

from ..errors import AuthenticationError
from ..settings import is_loopback_host
from .challenge import Challenge, parse_challenges
from .credentials import Credentials
from .transport import Transport, registry_error_message

DEFAULT_TOKEN_LIFETIME = 60  # seconds, the token spec's default for expires_in
CLIENT_ID = "modelpack"
# A bearer token goes into a header: printable, no spaces or control characters.
_TOKEN_RE = re.compile(r"[\x21-\x7e]{1,16384}")
MAX_COVERED = 4096  # scopes held by prefetched tokens (expired ones are dropped past it)
log = logging.getLogger("modelpack.http")


def _may_send_credentials(realm: str, transport: Transport) -> bool:
    """Credentials go to a token realm over TLS, to loopback, or where the user chose
    plain HTTP for this registry, never in the clear to some other host."""
    parts = urlsplit(realm)
    if parts.scheme == "https":
        return True
    host = parts.netloc.rsplit("@", 1)[-1]
    return transport.options.plain_http or is_loopback_host(host)


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Holds credentials and tokens for one registry host; thread-safe."""

    def __init__(self, transport: Transport, credentials: Credentials | None) -> None:
        self.transport = transport
        self.credentials = credentials
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._covering: dict[str, _Token] = {}  # scope -> a token asked for many at once
        self._challenge: Challenge | None = None  # the registry's bearer challenge, once seen
        self._basic = False
        self._lock = threading.Lock()

    def headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """The Authorization header to send for an operation needing ``scopes``."""
        with self._lock:
            token = self._tokens.get(scopes) or self._covered(scopes)
            if token and token.expires_at > time.monotonic():
                return {"Authorization": f"Bearer {token.value}"}
            if self._basic and self.credentials:
                return {"Authorization": self.credentials.basic_header()}
        return {}

    def answer(self, response: requests.Response, scopes: tuple[str, ...]) -> bool:
        """Handle a 401: True when new authorization was obtained and a retry may pass."""
        challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        for challenge in challenges:
            if challenge.scheme == "bearer" and challenge.params.get("realm"):
                with self._lock:
                    self._challenge = challenge
                self._fetch_token(challenge, scopes)
                return True
            if challenge.scheme == "basic":
                if not self.credentials or _sent_basic(response):
                    return False  # none to send, or these were sent and refused
                with self._lock:  # another request's answer may have set it meanwhile
                    self._basic = True
                return True
        return False

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> None:
        requested = list(scopes) or [s for s in challenge.params.get("scope", "").split(" ") if s]
        token = _token(self.request_token(challenge, requested))
        log.debug(
            "token for %s from %s", " ".join(scopes) or "(no scope)", challenge.params["realm"]
        )
        with self._lock:
            self._tokens[scopes] = token

    def prefetch(self, scopes: list[str]) -> bool:
        """One token for all of ``scopes`` (once a bearer challenge was seen): the requests
        needing any one of them then start with it.  False when nothing was fetched."""
        with self._lock:
            challenge = self._challenge
            now = time.monotonic()
            wanted = [s for s in dict.fromkeys(scopes) if not self._held(s, now)]
        if challenge is None or len(wanted) < 2:
            return False
        try:
            token = _token(self.request_token(challenge, wanted))
        except AuthenticationError as exc:  # each request asks on its own, as without this
            log.debug("token for %d scopes at once: %s", len(wanted), exc)
            return False
        with self._lock:
            if len(self._covering) + len(wanted) > MAX_COVERED:
                self._covering = {s: t for s, t in self._covering.items() if t.expires_at > now}
                if len(self._covering) + len(wanted) > MAX_COVERED:
                    self._covering.clear()
            self._covering.update(dict.fromkeys(wanted, token))
        return True

    def _held(self, scope: str, now: float) -> bool:
        token = self._tokens.get((scope,)) or self._covering.get(scope)
        return token is not None and token.expires_at > now

    def _covered(self, scopes: tuple[str, ...]) -> _Token | None:
        """A prefetched token asked for every one of ``scopes`` (the same one), if any."""
        if not scopes:
            return None
        first = self._covering.get(scopes[0])
        return first if first and all(self._covering.get(s) is first for s in scopes) else None

    def request_token(
        self, challenge: Challenge, scopes: list[str], *, offline: bool = False
    ) -> dict:
        """Ask the realm for a token: OAuth2 refresh-token POST when we hold an
        identity token, else GET with Basic credentials (or anonymously)."""
        realm = challenge.params["realm"]
        service = challenge.params.get("service")
        creds = self.credentials
        if creds is not None and not _may_send_credentials(realm, self.transport):
            raise AuthenticationError(
                f"registry {self.transport.host} sends credentials to {realm}, "
                "over plain HTTP to another host; refused",
                hint="use an https token realm, or --plain-http if this is intended",
            )
        if creds is not None and creds.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": creds.identity_token,
                "client_id": CLIENT_ID,
                "scope": " ".join(scopes),
            }
            if service:
                form["service"] = service
            response = self.transport.send("POST", realm, data=form)
        else:
            params: list[tuple[str, str]] = [("service", service)] if service else []
            params.extend(("scope", scope) for scope in scopes)
            headers = {}
            if creds is not None:
                headers["Authorization"] = creds.basic_header()
                params.append(("account", creds.username))
            if offline:
                params += [("offline_token", "true"), ("client_id", CLIENT_ID)]
            response = self.transport.send("GET", realm, params=params, headers=headers)
        with response:
            if response.status_code in (401, 403):
                who = f" for {creds.username}" if creds and creds.username else ""
                raise AuthenticationError(
                    f"registry {self.transport.host} refused the credentials{who} "
                    f"({registry_error_message(response)})",
                    hint="check the user name and password, or run `modelpack login`",
                )
            if response.status_code >= 400:
                raise AuthenticationError(
                    f"token server for {self.transport.host} answered "
                    f"{registry_error_message(response)}"
                )
            try:
                document = response.json()
            except ValueError:
                raise AuthenticationError(
                    f"token server for {self.transport.host} did not answer JSON"
                ) from None
        token = (
            document.get("token") or document.get("access_token")
            if isinstance(document, dict)
            else None
        )
        if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
            raise AuthenticationError(
                f"token server for {self.transport.host} returned no usable token"
            )
        return document

    def check_login(self) -> str | None:
        """Prove the credentials work (as ``docker login`` does); return an
        identity (refresh) token if the token server issued one."""
        response = self.transport.send("GET", "/v2/")
        with response:
            if response.status_code == 200:
                return None
            if response.status_code != 401:
                raise AuthenticationError(
                    f"login to {self.transport.host}: unexpected answer "
                    f"{registry_error_message(response)} from /v2/"
                )
            challenges = parse_challenges(response.headers.get("WWW-Authenticate", ""))
        for challenge in challenges:
            if challenge.scheme == "bearer" and challenge.params.get("realm"):
                document = self.request_token(challenge, [], offline=True)
                refresh = document.get("refresh_token")
                return refresh if isinstance(refresh, str) and refresh else None
            if challenge.scheme == "basic" and self.credentials:
                headers = {"Authorization": self.credentials.basic_header()}
                with self.transport.send("GET", "/v2/", headers=headers) as retry:
                    if retry.status_code == 200:
                        return None
                    raise AuthenticationError(
                        f"registry {self.transport.host} refused the credentials for "
                        f"{self.credentials.username} ({registry_error_message(retry)})",
                        hint="check the user name and password",
                    )
        raise AuthenticationError(
            f"login to {self.transport.host}: the registry offers no usable authentication"
        )

    def forget(self, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(scopes, None)
            for scope in scopes:
                self._covering.pop(scope, None)


def _sent_basic(response: requests.Response) -> bool:
    """Whether the refused request carried Basic credentials.  Concurrent first requests
    all go out without any: each answers the challenge, not only the first to see one."""
    request = getattr(response, "request", None)
    sent = str(request.headers.get("Authorization") or "") if request is not None else ""
    return sent[:6].lower() == "basic "


def _token(document: dict) -> _Token:
    """A token server's answer (checked by ``request_token``) as a token with its expiry."""
    lifetime = document.get("expires_in") or DEFAULT_TOKEN_LIFETIME
    try:
        lifetime = max(int(lifetime), 1)
    except (TypeError, ValueError):
        lifetime = DEFAULT_TOKEN_LIFETIME
    # Renew a little early so a long request does not start with a dying token.
    value = document.get("token") or document.get("access_token")
    return _Token(value, time.monotonic() + lifetime * 0.9)
