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

from ..errors import AuthenticationError
from ..registry.client import RegistryClient, connect
from ..registry.credentials import Credentials
from .config import GatewayConfig

MAX_CLIENTS = 256
ANONYMOUS = "anonymous"


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
