"""The OCI distribution client: transport, auth, repositories."""

from __future__ import annotations

from ..reference import Reference
from ..settings import Settings
from .auth import Authenticator
from .credentials import Credentials, find_credentials
from .repository import RegistryClient, RegistryRepository
from .transport import Transport

__all__ = [
    "Credentials",
    "RegistryClient",
    "RegistryRepository",
    "connect",
    "open_repository",
]


def connect(
    host: str, settings: Settings, credentials: Credentials | None = None
) -> RegistryClient:
    """A client for ``host`` with the options and credentials configured for it."""
    transport = Transport(host, settings.registry_options(host), pool_size=settings.concurrency + 2)
    creds = credentials if credentials is not None else find_credentials(host)
    return RegistryClient(transport, Authenticator(transport, creds))


def open_repository(reference: Reference, settings: Settings) -> RegistryRepository:
    return connect(reference.registry, settings).repository(reference.repository)
