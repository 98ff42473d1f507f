"""Who a request is to the registry: its own credentials, passed through.

A client's ``Authorization`` header becomes registry credentials; each distinct
credential gets its own client (and so its own token cache), so what one
client's token may read is never read with it on behalf of another.  A request
without ``Authorization`` is anonymous at the registry, unless the operator lends
such clients the gateway's own credentials (``lend_credentials``: docker config,
MODELPACK_USERNAME/PASSWORD).
Tokens are never logged; clients are keyed by a hash of the header.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import threading
from collections import OrderedDict

from ...errors import AuthenticationError
from ...registry.client import RegistryClient, connect
from ...registry.credentials import Credentials
from ...registry.transport import raise_for_status
from ..core.config import GatewayConfig
from .ttlmap import TTLMap

MAX_CLIENTS = 256
ANONYMOUS = "anonymous"
CHECK_TTL = 30.0  # seconds a credential check's answer is kept
MAX_CHECKED = 4096


def credentials_from_header(header: str, token_user: str | None) -> Credentials:
    """``Bearer TOKEN`` or ``Basic base64(user:password)`` -> registry credentials.

    A bearer token is the password of ``token_user`` when one is configured (a
    Harbor robot account, say), else ``user:password`` if it has a colon, else
    an identity (OAuth2 refresh) token as ``modelpack login`` stores for token
    registries.
    """
    scheme, _, value = header.strip().partition(" ")
    value = value.strip()
    if scheme.lower() == "basic" and value:
        try:
            user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            sep = ""
        if sep:
            return Credentials(username=user, password=password)
    elif scheme.lower() == "bearer" and value:
        if token_user:
            return Credentials(username=token_user, password=value)
        user, sep, password = value.partition(":")
        if sep and user:
            return Credentials(username=user, password=password)
        return Credentials(username="", password="", identity_token=value)
    raise AuthenticationError("the Authorization header is neither Bearer TOKEN nor Basic")


class Clients:
    """One registry client per credential, least recently used dropped past MAX_CLIENTS."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self._clients: OrderedDict[str, RegistryClient] = OrderedDict()
        self._lock = threading.Lock()
        self._checked: TTLMap[str, bool] = TTLMap(MAX_CHECKED, CHECK_TTL)

    def check(self, header: str | None) -> None:
        """AuthenticationError unless the registry takes these credentials, asked once
        (``GET /v2/``, its challenge answered, as ``docker login`` does) before a request
        that fans out into a registry request per repository: made-up credentials cost
        that one round trip, not one per repository.  No header: nothing to check
        (anonymous, or the gateway's own credentials).  Kept CHECK_TTL s per credential."""
        if not header:
            return
        key, client = self.for_header(header)  # a header that is no credential: refused
        accepted = self._checked.get(key)
        if accepted is None:
            try:
                with client.request("GET", "/v2/", ()) as response:
                    raise_for_status(response, "checking the credentials")
                accepted = True
            except AuthenticationError:
                accepted = False
            self._checked.set(key, accepted)
        if not accepted:
            raise AuthenticationError("the registry refused the credentials")

    def for_header(self, header: str | None) -> tuple[str, RegistryClient]:
        """(a key naming the credential without revealing it, its client)."""
        if header:
            key = hashlib.sha256(header.strip().encode("utf-8", "replace")).hexdigest()[:16]
        else:
            key = ANONYMOUS
        with self._lock:
            client = self._clients.get(key)
            if client is not None:
                self._clients.move_to_end(key)
                return key, client
        credentials = credentials_from_header(header, self.config.token_user) if header else None
        client = connect(
            self.config.host,
            self.config.settings,
            credentials=credentials,
            anonymous=not header and not self.config.lend_credentials,
        )
        with self._lock:
            client = self._clients.setdefault(key, client)
            while len(self._clients) > MAX_CLIENTS:
                self._clients.popitem(last=False)
        return key, client
