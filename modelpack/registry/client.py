"""The OCI distribution client: transport, auth, repositories, mirrors."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from urllib.parse import urlsplit

from ..errors import ModelpackError, ReferenceNotFoundError, UsageError
from ..oci.reference import Reference
from ..oci.spec import Descriptor
from ..settings import RegistryOptions, Settings
from .auth import Authenticator
from .credentials import Credentials, find_credentials, stored_credentials
from .repository import RegistryRepository
from .session import RegistryClient
from .transport import Transport

__all__ = [
    "Credentials",
    "Mirror",
    "RegistryClient",
    "RegistryRepository",
    "connect",
    "open_for_pull",
    "open_repository",
]

log = logging.getLogger("modelpack.registry")
DOCKER_HUB_API = "registry-1.docker.io"  # docker.io names Docker Hub; its API lives here


def connect(
    host: str,
    settings: Settings,
    credentials: Credentials | None = None,
    options: RegistryOptions | None = None,
    *,
    command_registry: str | None = None,
    anonymous: bool = False,
) -> RegistryClient:
    """A client for ``host`` with the options and credentials configured for it
    (``command_registry``, default ``host``: see ``credentials``); none at all when
    ``anonymous``."""
    transport = Transport(
        DOCKER_HUB_API if host == "docker.io" else host,
        options or settings.registry_options(host),
        pool_size=settings.concurrency + 2,
        retries=settings.retries,
    )
    if anonymous:
        credentials = None
    elif credentials is None:
        credentials = find_credentials(host, command_registry)
    return RegistryClient(transport, Authenticator(transport, credentials))


def open_repository(
    reference: Reference, settings: Settings, *, command_registry: str | None = None
) -> RegistryRepository:
    """``reference``'s repository; ``command_registry``: the registry the command is
    about, when it is not this one (the destination of a copy)."""
    client = connect(reference.registry, settings, command_registry=command_registry)
    return RegistryRepository(client, reference.repository)


@dataclass(frozen=True)
class Mirror:
    """A pull-through cache for one upstream host: ``[http[s]://]host[:port][/prefix]``."""

    host: str
    plain_http: bool
    prefix: str = ""

    @classmethod
    def parse(cls, text: str) -> Mirror:
        parts = urlsplit(text if "://" in text else f"https://{text}")
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"mirror {text!r} is not [http[s]://]HOST[:PORT][/PREFIX]")
        return cls(parts.netloc, parts.scheme == "http", parts.path.strip("/"))

    def repository_for(self, repository: str) -> str:
        return f"{self.prefix}/{repository}" if self.prefix else repository


def mirror_repositories(
    reference: Reference, settings: Settings, *, command_registry: str | None = None
) -> list[RegistryRepository]:
    """Repositories to try before the upstream, in the configured order.

    A mirror without credentials of its own gets those ``docker login`` stored
    for the upstream: a pass-through mirror (Dragonfly's dfdaemon, a caching
    proxy) forwards them to the registry that asks.  MODELPACK_USERNAME/PASSWORD
    never: they are for one registry (a mirror only when MODELPACK_REGISTRY names it).
    """
    upstream_credentials = None
    repositories = []
    for text in settings.registry_options(reference.registry).mirrors:
        mirror = Mirror.parse(text)
        options = replace(
            settings.registry_options(mirror.host),
            plain_http=mirror.plain_http or settings.plain_http,
        )
        upstream = command_registry or reference.registry
        client = connect(mirror.host, settings, options=options, command_registry=upstream)
        if client.auth.credentials is None:
            if upstream_credentials is None:
                upstream_credentials = stored_credentials(reference.registry)[0]
            client.auth.credentials = upstream_credentials
        repositories.append(
            RegistryRepository(
                client, mirror.repository_for(reference.repository), mirror_of=reference.registry
            )
        )
    return repositories


def open_for_pull(
    reference: Reference, settings: Settings, *, command_registry: str | None = None
) -> tuple[RegistryRepository, Descriptor]:
    """Resolve ``reference`` through its mirrors in order, then the upstream registry.

    A mirror that is down, lacks the artifact or refuses us is skipped; the
    bytes are verified against the digest either way, so a mirror can make
    a pull slower or faster, never different.
    """
    for repository in mirror_repositories(reference, settings, command_registry=command_registry):
        try:
            return repository, repository.resolve(reference.target)
        except ModelpackError as exc:
            log.info("mirror %s skipped for %s: %s", repository.describe(), reference, exc)
    repository = open_repository(reference, settings, command_registry=command_registry)
    try:
        return repository, repository.resolve(reference.target)
    except ReferenceNotFoundError as exc:  # the miss the user sees: say which tags exist
        raise ReferenceNotFoundError(exc.message, hint=repository.not_found_hint()) from exc
