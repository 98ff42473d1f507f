"""Registry authentication: answer ``WWW-Authenticate`` challenges.

Basic: send the credentials.  Bearer (the distribution token spec, what
Harbor, Docker Hub, GHCR use): ask the realm for a token with the exact
scopes of the operation, cache it per scope set until it expires, and fetch
a new one when the registry says 401 again.  Anonymous tokens work the same
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
        self._basic = False
        self._lock = threading.Lock()

    def headers(self, scopes: tuple[str, ...]) -> dict[str, str]:
        """The Authorization header to send for an operation needing ``scopes``."""
        with self._lock:
            token = self._tokens.get(scopes)
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
                self._fetch_token(challenge, scopes)
                return True
            if challenge.scheme == "basic":
                if not self.credentials:
                    return False
                with self._lock:
                    if self._basic:  # these credentials were already refused
                        return False
                    self._basic = True
                return True
        return False

    def _fetch_token(self, challenge: Challenge, scopes: tuple[str, ...]) -> None:
        requested = list(scopes) or [s for s in challenge.params.get("scope", "").split(" ") if s]
        document = self.request_token(challenge, requested)
        value = document.get("token") or document.get("access_token")
        log.debug(
            "token for %s from %s", " ".join(scopes) or "(no scope)", challenge.params["realm"]
        )
        lifetime = document.get("expires_in") or DEFAULT_TOKEN_LIFETIME
        try:
            lifetime = max(int(lifetime), 1)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        # Renew a little early so a long request does not start with a dying token.
        expires_at = time.monotonic() + lifetime * 0.9
        with self._lock:
            self._tokens[scopes] = _Token(value, expires_at)

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
