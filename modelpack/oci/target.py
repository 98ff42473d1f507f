"""The one interface every place content can live behind (oras-go's ``Target``).

The local store, an ``oci:DIR`` layout, an unpack directory and a registry
repository all implement it, so push, pull and copy are one graph walk
(:mod:`modelpack.oci.copy`) between two targets.

What only some targets can do is a named capability below, checked with
``isinstance`` (oras-go's ``registry.Mounter``, ``content.ReadOnlyStorage``);
docs/architecture.md has the table of which target implements which.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from ..errors import IntegrityError
from .digests import verify_bytes
from .limits import MAX_MANIFEST_BYTES
from .spec import Descriptor, Manifest


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


# ``opener(offset)`` streams a blob's bytes from ``offset`` on.
Opener = Callable[[int], AbstractContextManager[BinaryIO]]


@runtime_checkable
class RangeFetcher(Protocol):
    """A source that streams a blob from an offset, so an interrupted transfer resumes."""

    def fetch_from(self, desc: Descriptor, offset: int) -> AbstractContextManager[BinaryIO]: ...


@runtime_checkable
class PieceFetcher(Protocol):
    """A source that streams bytes ``[start, end)`` of a blob, so one big blob can come
    over several connections at once (:mod:`modelpack.oci.pieces`).  A server that
    answers with the whole blob instead raises RangeIgnoredError."""

    def fetch_range(
        self, desc: Descriptor, start: int, end: int
    ) -> AbstractContextManager[BinaryIO]: ...


@runtime_checkable
class ResumablePusher(Protocol):
    """A destination that keeps what arrived and asks ``opener(offset)`` only for the rest."""

    def push_resumable(self, desc: Descriptor, opener: Opener) -> None: ...


@runtime_checkable
class Mounter(Protocol):
    """A registry that links a blob from a sibling repository instead of receiving it."""

    def mount(self, desc: Descriptor, from_repository: str) -> bool: ...


@runtime_checkable
class SpaceChecker(Protocol):
    """A destination on this node's disk: a copy that cannot fit is refused before it starts."""

    def require_space(self, blobs: list[Descriptor]) -> None: ...


@runtime_checkable
class ReferrerLister(Protocol):
    """A source that lists the artifacts (signatures, SBOMs) whose ``subject`` is a manifest."""

    def referrers(
        self, subject: Descriptor, artifact_type: str | None = None
    ) -> list[Descriptor]: ...


@runtime_checkable
class FileTreeWriter(Protocol):
    """A destination that writes each layer as the file it names and is committed whole.

    The same bytes under two paths are two files here (not one blob), and a manifest
    with only some of its layers (``--include``) is complete for it: it never stores
    the manifest as content that would claim the missing blobs.  It is shown the
    manifest before its blobs (``plan``): a layer may name no path of its own, and
    the manifest's format then says where it goes (Model Runner's older models).
    """

    def plan(self, manifest: Manifest) -> None: ...

    def commit(self) -> Path: ...


class ReadOnlyTarget:
    """The write half of a Target that is only ever a copy's source (a model being built, an
    image being written, a store seen through fetched manifests): writing to one is a bug."""

    def push(self, desc: Descriptor, content: BinaryIO, reference: str | None = None) -> None:
        raise NotImplementedError(f"{type(self).__name__} is read-only")

    def tag(self, desc: Descriptor, reference: str) -> None:
        raise NotImplementedError(f"{type(self).__name__} is read-only")


def referrers_of(target: Target, subject: Descriptor, artifact_type: str | None = None):
    """``subject``'s referrers where ``target`` can list them, else none."""
    if isinstance(target, ReferrerLister):
        return target.referrers(subject, artifact_type)
    return []


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
