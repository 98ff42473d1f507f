"""Name where an artifact is: a registry reference, ``oci:DIR[:TAG]``, or ``store:REF``.

The same words skopeo uses for its transports, so ``modelpack copy`` reads
the way ``skopeo copy`` does:

    127.0.0.1:5000/team/bert:v1       (or docker://...) a registry repository
    oci:/path/to/layout[:TAG]         an OCI image layout directory (TAG default: latest)
    store:127.0.0.1:5000/team/bert:v1 the local store under MODELPACK_HOME
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InvalidReferenceError
from .oci.reference import DEFAULT_TAG, Reference, parse_reference
from .oci.spec import Descriptor
from .oci.target import Target
from .registry.client import RegistryRepository, open_for_pull, open_repository
from .settings import Settings
from .storage.store import LayoutStore, node_store


@dataclass
class Endpoint:
    target: Target
    reference: str  # what to resolve on the target, or to tag there
    display: str
    tag_reference: Callable[[str], str] = field(default=lambda tag: tag)
    registry_ref: Reference | None = None  # set for registry endpoints
    resolved: Descriptor | None = None  # set when opening already resolved it (mirrors)

    @property
    def is_registry(self) -> bool:
        return self.registry_ref is not None

    @property
    def tag(self) -> str | None:
        """The tag to give a copy here, None for digest-only references."""
        if self.registry_ref is not None:
            return None if self.registry_ref.digest else self.registry_ref.tag
        return self.reference


def _layout(text: str, create: bool) -> Endpoint:
    body = text[len("oci:") :]
    path, sep, tag = body.rpartition(":")
    if not sep or "/" in tag or not tag:
        path, tag = body, DEFAULT_TAG
    if not path:
        raise InvalidReferenceError(f"{text!r}: expected oci:DIRECTORY[:TAG]")
    store = LayoutStore(Path(path).expanduser(), create=create)
    return Endpoint(store, tag, f"oci:{path}:{tag}")


def _store(text: str, settings: Settings) -> Endpoint:
    ref = parse_reference(text[len("store:") :])
    key = str(ref)
    return Endpoint(
        node_store(settings),
        ref.digest or key,
        f"store:{key}",
        tag_reference=lambda tag: str(ref.with_tag(tag)),
    )


def registry_of(text: str) -> str | None:
    """The registry host an endpoint names, None for ``oci:`` and ``store:``."""
    if text.startswith(("oci:", "store:")):
        return None
    return parse_reference(text.removeprefix("docker://")).registry


def open_endpoint(
    text: str, settings: Settings, *, reading: bool, command_registry: str | None = None
) -> Endpoint:
    """Parse an endpoint; ``reading`` ones resolve through registry mirrors.
    ``command_registry``: the registry the command is about when it is another one
    (MODELPACK_USERNAME/PASSWORD are for that one, registry.credentials)."""
    if text.startswith("oci:"):
        return _layout(text, create=not reading)
    if text.startswith("store:"):
        return _store(text, settings)
    ref = parse_reference(text.removeprefix("docker://"))
    if reading:
        repository, root = open_for_pull(ref, settings, command_registry=command_registry)
        return Endpoint(repository, root.digest, str(ref), registry_ref=ref, resolved=root)
    repository = open_repository(ref, settings, command_registry=command_registry)
    return Endpoint(repository, ref.target, str(ref), registry_ref=ref)


def registry_repository(endpoint: Endpoint) -> RegistryRepository | None:
    target = endpoint.target
    return target if isinstance(target, RegistryRepository) else None
