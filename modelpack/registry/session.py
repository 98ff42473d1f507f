"""What the parts of the client share: one registry host's authorized requests, and the
view of a repository that uploads and referrers need (so they do not import the
repository module that uses them).
"""

from __future__ import annotations

from typing import Protocol

import requests

from ..oci.spec import Descriptor
from .auth import Authenticator
from .transport import Transport


class RegistryClient:
    """Transport + authentication for one registry host, shared by its repositories."""

    def __init__(self, transport: Transport, auth: Authenticator) -> None:
        self.transport = transport
        self.auth = auth

    @property
    def host(self) -> str:
        return self.transport.host

    def request(
        self,
        method: str,
        path: str,
        scopes: tuple[str, ...],
        *,
        headers: dict[str, str] | None = None,
        replayable: bool = True,
        **kwargs,
    ) -> requests.Response:
        """Send with current authorization; answer one 401 challenge and resend."""
        merged = dict(headers or {})
        merged.update(self.auth.headers(scopes))
        response = self.transport.send(method, path, headers=merged, **kwargs)
        if response.status_code == 401 and replayable and self.auth.answer(response, scopes):
            response.close()
            merged.update(self.auth.headers(scopes))
            response = self.transport.send(method, path, headers=merged, **kwargs)
        return response


class RepositoryAccess(Protocol):
    """The repository operations ``upload`` and ``referrers`` build on."""

    client: RegistryClient
    name: str
    referrers_api: bool | None

    @property
    def pull_scope(self) -> tuple[str, ...]: ...

    @property
    def push_scope(self) -> tuple[str, ...]: ...

    def describe(self) -> str: ...

    def path(self, kind: str, reference: str = "") -> str: ...

    def upload_url(self, location: str) -> str: ...

    def start_upload(
        self, mount_from: str | None = None, digest: str | None = None
    ) -> str | None: ...

    def resolve(self, reference: str) -> Descriptor: ...

    def put_manifest(self, desc: Descriptor, data: bytes, reference: str) -> None: ...
