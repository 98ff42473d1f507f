"""The one interface every place content can live behind (oras-go's ``Target``).

The local store, an ``oci:DIR`` layout, an unpack directory and a registry
repository all implement it, so push, pull and copy are one graph walk
(:mod:`modelpack.copy`) between two targets.
"""

from __future__ import annotations

import io
from contextlib import AbstractContextManager
from typing import BinaryIO, Protocol, runtime_checkable

from .digests import verify_bytes
from .errors import IntegrityError
from .limits import MAX_MANIFEST_BYTES
from .spec import Descriptor


@runtime_checkable
class Target(Protocol):
    """Content-addressed storage with named references."""

    def describe(self) -> str:
        """A short human name for messages (``registry 127.0.0.1:5000/team/bert``)."""
        ...

    def resolve(self, reference: str) -> Descriptor:
        """The manifest descriptor a tag or digest names; NotFoundError if none."""
        ...

    def exists(self, desc: Descriptor) -> bool: ...

    def fetch(self, desc: Descriptor) -> AbstractContextManager[BinaryIO]:
        """A stream of the content's bytes; callers verify what they read."""
        ...

    def push(self, desc: Descriptor, content: BinaryIO, reference: str | None = None) -> None:
        """Store exactly ``desc``'s bytes read from ``content`` (verified);
        for a manifest, ``reference`` also tags it in the same step."""
        ...

    def tag(self, desc: Descriptor, reference: str) -> None: ...


def fetch_bytes(target: Target, desc: Descriptor, limit: int = MAX_MANIFEST_BYTES) -> bytes:
    """Read a small blob (manifest, config) whole and verify it against ``desc``."""
    if desc.size > limit:
        raise IntegrityError(
            f"{desc.digest} from {target.describe()} is {desc.size} bytes; "
            f"manifests and configs are capped at {limit}"
        )
    with target.fetch(desc) as stream:
        data = stream.read(desc.size + 1)
    verify_bytes(data, desc.digest, desc.size, f"{desc.digest} from {target.describe()}")
    return data


def push_bytes(target: Target, desc: Descriptor, data: bytes, reference: str | None = None) -> None:
    target.push(desc, io.BytesIO(data), reference)
