"""Registry authentication: answer ``WWW-Authenticate`` challenges.

Basic: send the credentials.  Bearer (the distribution token spec, what
Harbor, Docker Hub, GHCR use): ask the realm for a token with the exact
scopes of the operation, cache it per scope set until it expires, and fetch
a new one when the registry says 401 again.  Anonymous tokens work the same
way with no credentials.  Passwords never appear in messages or logs.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import requests

from ..errors import AuthenticationError
from .credentials import Credentials
from .transport import Transport, registry_error_message

_TOKEN_RE = re.compile(
    r'\s*([A-Za-z][A-Za-z0-9_.-]*)(?:\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*)))?\s*,?'
)
DEFAULT_TOKEN_LIFETIME = 60  # seconds, the token spec's default for expires_in


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer", lower case
    params: dict[str, str]


def parse_challenges(header: str) -> list[Challenge]:
    """Split a WWW-Authenticate value into challenges: a scheme word, then k=v params."""
    challenges: list[Challenge] = []
    for match in _TOKEN_RE.finditer(header):
        word, quoted, bare = match.groups()
        if quoted is None and bare is None:
            challenges.append(Challenge(word.lower(), {}))
        elif challenges:
            value = quoted.replace('\\"', '"') if quoted is not None else bare
            challenges[-1].params[word.lower()] = value
    return challenges


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
        params: list[tuple[str, str]] = []
        if service := challenge.params.get("service"):
            params.append(("service", service))
        requested = list(scopes) or [s for s in challenge.params.get("scope", "").split(" ") if s]
        params.extend(("scope", scope) for scope in requested)
        headers = {}
        if self.credentials:
            headers["Authorization"] = self.credentials.basic_header()
            params.append(("account", self.credentials.username))
        realm = challenge.params["realm"]
        response = self.transport.send("GET", realm, params=params, headers=headers)
        if response.status_code in (401, 403):
            raise AuthenticationError(
                f"registry {self.transport.host} refused the credentials"
                f"{' for ' + self.credentials.username if self.credentials else ''} "
                f"({registry_error_message(response)})",
                hint="check the user name and password, or run `modelpack login`",
            )
        if response.status_code >= 400:
            raise AuthenticationError(
                f"token server {realm} answered {registry_error_message(response)}"
            )
        try:
            document = response.json()
        except ValueError:
            raise AuthenticationError(f"token server {realm} did not answer JSON") from None
        value = document.get("token") or document.get("access_token")
        if not value:
            raise AuthenticationError(f"token server {realm} returned no token")
        lifetime = document.get("expires_in") or DEFAULT_TOKEN_LIFETIME
        try:
            lifetime = max(int(lifetime), 1)
        except (TypeError, ValueError):
            lifetime = DEFAULT_TOKEN_LIFETIME
        # Renew a little early so a long request does not start with a dying token.
        expires_at = time.monotonic() + lifetime * 0.9
        with self._lock:
            self._tokens[scopes] = _Token(value, expires_at)

    def forget(self, scopes: tuple[str, ...]) -> None:
        with self._lock:
            self._tokens.pop(scopes, None)
