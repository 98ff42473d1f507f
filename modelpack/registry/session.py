"""What the parts of the client share: one registry host's authorized requests, and the
view of a repository that uploads and referrers need (so they do not import the
repository module that uses them).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol
from urllib.parse import urljoin

import requests

from ..errors import RegistryError
from ..oci.spec import Descriptor
from .auth import Authenticator
from .transport import Transport

# Pages of one listing (tags, referrers) we follow through ``Link: <...>; rel="next"``:
# a thousand times the registry's page size (distribution serves 100 tags a page by
# default), and a registry that links page to page forever cannot keep us there.
MAX_PAGES = 1000


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
        """Send with current authorization; answer one 401 challenge and resend.

        A URL on another origin (an upload ``Location``, say) is sent without our
        Authorization and its challenges are not answered: credentials and tokens
        are for this registry only.
        """
        merged = dict(headers or {})
        ours = self.transport.same_origin(path)
        if ours:
            merged.update(self.auth.headers(scopes))
        response = self.transport.send(method, path, headers=merged, **kwargs)
        if (
            response.status_code == 401
            and ours
            and replayable
            and self.auth.answer(response, scopes)
        ):
            response.close()
            merged.update(self.auth.headers(scopes))
            response = self.transport.send(method, path, headers=merged, **kwargs)
        if response.status_code == 401 and ours and self.auth.credentials is not None:
            # read by transport.raise_for_status: who was refused (a name, never a secret)
            response.refused_account = self.auth.credentials.username or "the stored login"  # type: ignore[attr-defined]
        return response

    def pages(
        self, path: str, scopes: tuple[str, ...], what: str, **kwargs
    ) -> Iterator[requests.Response]:
        """GET ``path``, then each page its ``Link`` header names as ``next``.

        Only links on this registry (scheme, host and port) are followed, and at
        most MAX_PAGES of them; anything else is a RegistryError, so a registry cannot
        send us, with its Authorization, to another host.  Each response is open
        while the caller holds it.
        """
        url = path  # relative: the first request may still settle http vs https (loopback)
        for _ in range(MAX_PAGES):
            with self.request("GET", url, scopes, **kwargs) as response:
                yield response
                link = response.links.get("next", {}).get("url")
            if not link:
                return
            url = urljoin(self.transport.url(url), link)
            if not self.transport.same_origin(url):
                raise RegistryError(
                    f"{what}: registry {self.host} links the next page to another host "
                    f"({url.split('?', 1)[0]}); refused",
                    hint="a registry's pages must stay on the registry; report it to its operator",
                )
        raise RegistryError(
            f"{what}: registry {self.host} sent more than {MAX_PAGES} pages; refused",
            hint="the registry links pages in a loop, or the listing is too long to read",
        )


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
