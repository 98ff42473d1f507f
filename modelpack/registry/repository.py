"""One repository on a registry, as a :class:`~modelpack.oci.target.Target`.

Speaks the OCI distribution API: manifests by tag or digest, blobs streamed
in both directions (never held whole in memory), uploads (``upload.py``),
cross-repository mounts, existence checks with HEAD, ranged downloads for
resuming, and referrers (``referrers.py``).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import quote, urljoin

import requests
import urllib3

from ..errors import (
    BlobNotFoundError,
    IntegrityError,
    ModelpackError,
    RangeIgnoredError,
    ReferenceNotFoundError,
    RegistryError,
    TransferInterruptedError,
    UsageError,
)
from ..oci.digests import CHUNK_SIZE, is_digest, sha256_bytes, verify_bytes
from ..oci.limits import MAX_MANIFEST_BYTES
from ..oci.spec import MANIFEST_MEDIA_TYPES, Descriptor, parse_document
from .referrers import index_referrer, is_companion_tag, list_referrers, referrer_descriptor
from .session import RegistryClient
from .transport import raise_for_status, registry_error_message
from .upload import chunk_size_for, upload_blob

MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)


class ResponseStream:
    """File-like view of a streamed HTTP response body."""

    def __init__(self, response: requests.Response) -> None:
        self._response = response

    def read(self, n: int = -1) -> bytes:
        try:
            if n is None or n < 0:
                return self._response.raw.read(decode_content=True)
            return self._response.raw.read(n, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            host = self._response.url.split("://", 1)[-1].split("/", 1)[0]
            raise TransferInterruptedError(
                f"connection to {host} lost mid-download: {exc}"
            ) from exc

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._response.close()


class RegistryRepository:
    """One repository (``team/bert``) on a registry; satisfies ``RepositoryAccess``."""

    def __init__(self, client: RegistryClient, name: str, mirror_of: str | None = None) -> None:
        self.client = client
        self.name = name
        self.mirror_of = mirror_of  # the registry this one mirrors (MODELPACK_MIRRORS), if any
        self.referrers_api: bool | None = None  # learnt from the first referrers call
        self._manifests: dict[str, bytes] = {}

    # -- helpers ------------------------------------------------------------

    @property
    def registry(self) -> str:
        return self.client.host

    @property
    def pull_scope(self) -> tuple[str, ...]:
        return (f"repository:{self.name}:pull",)

    @property
    def push_scope(self) -> tuple[str, ...]:
        return (f"repository:{self.name}:pull,push",)

    def path(self, kind: str, reference: str = "") -> str:
        """``/v2/NAME/KIND/REFERENCE`` with every part percent-quoted; a dot segment
        (which HTTP clients collapse, leaving the repository) is refused."""
        parts = [*self.name.split("/"), kind, *reference.split("/")]
        if any(part in (".", "..") for part in parts):
            raise UsageError(
                f"{self.describe()}: {reference!r} is not a tag or digest",
                hint="a tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}, a digest ALGORITHM:HEX",
            )
        return "/v2/" + "/".join(quote(part, safe=":@") for part in parts)

    def upload_url(self, location: str) -> str:
        return urljoin(self.client.transport.url(self.path("blobs", "uploads/")), location)

    def describe(self) -> str:
        return f"{self.client.host}/{self.name}"

    # -- manifests ----------------------------------------------------------

    def _get_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        response = self.client.request(
            "GET",
            self.path("manifests", reference),
            self.pull_scope,
            headers={"Accept": MANIFEST_ACCEPT},
            stream=True,
        )
        with response:
            separator = "@" if is_digest(reference) else ":"
            what = f"{self.describe()}{separator}{reference}"
            if response.status_code == 404:
                raise ReferenceNotFoundError(
                    f"{what} not found ({registry_error_message(response)})",
                    hint=f"check the repository and tag; `modelpack tags {self.describe()}` "
                    "lists the tags",
                )
            raise_for_status(response, what)
            data = response.raw.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
            if len(data) > MAX_MANIFEST_BYTES:
                raise IntegrityError(f"{what}: manifest larger than {MAX_MANIFEST_BYTES} bytes")
            digest = sha256_bytes(data)
            if is_digest(reference) and reference.startswith("sha256:") and digest != reference:
                raise IntegrityError(
                    f"{what}: registry returned a manifest whose digest is {digest}"
                )
            claimed = response.headers.get("Docker-Content-Digest", "")
            if claimed.startswith("sha256:") and claimed != digest:
                raise IntegrityError(
                    f"{what}: manifest bytes hash to {digest} but the registry claims {claimed}"
                )
            header_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        desc = _manifest_descriptor(data, digest, header_type, what)
        self._manifests[digest] = data
        return desc, data

    def resolve(self, reference: str) -> Descriptor:
        if reference in self._manifests:  # a digest we already fetched and verified
            data = self._manifests[reference]
            return _manifest_descriptor(data, reference, "", reference)
        return self._get_manifest(reference)[0]

    def put_manifest(self, desc: Descriptor, data: bytes, reference: str) -> None:
        response = self.client.request(
            "PUT",
            self.path("manifests", reference),
            self.push_scope,
            headers={"Content-Type": desc.media_type},
            data=data,
        )
        with response:
            raise_for_status(response, f"pushing manifest {self.describe()}:{reference}")
            indexed_by_registry = "OCI-Subject" in response.headers
        self._manifests[desc.digest] = data
        document = parse_document(data, f"manifest {desc.digest}")
        subject = document.get("subject")
        if subject and not indexed_by_registry:
            subject_digest = Descriptor.from_dict(subject, f"manifest {desc.digest}").digest
            index_referrer(self, subject_digest, referrer_descriptor(desc, document))

    def tag(self, desc: Descriptor, reference: str) -> None:
        data = self._manifests.get(desc.digest)
        if data is None:
            _, data = self._get_manifest(desc.digest)
        self.put_manifest(desc, data, reference)

    def referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        return list_referrers(self, subject, artifact_type)

    def not_found_hint(self) -> str:
        """Which tags do exist (the hint a user needs after a typo), best effort: one more
        request, so it is asked for where a miss reaches the user, not on every miss."""
        listing = f"`modelpack tags {self.describe()}` lists them"
        try:
            tags = self.user_tags()
        except ModelpackError:
            return f"check the repository and tag; {listing}"
        if not tags:
            return f"{self.describe()} has no tags: check the repository name"
        shown = ", ".join(tags[:8]) + (f" and {len(tags) - 8} more" if len(tags) > 8 else "")
        return f"tags in {self.describe()}: {shown} ({listing})"

    def user_tags(self) -> list[str]:
        """The tags people gave, without the ``sha256-<hex>.sig``-style companion tags."""
        return [tag for tag in self.list_tags() if not is_companion_tag(tag)]

    def list_tags(self) -> list[str]:
        tags: list[str] = []
        what = f"listing tags of {self.describe()}"
        for response in self.client.pages(self.path("tags", "list"), self.pull_scope, what):
            if response.status_code == 404:
                return []
            raise_for_status(response, what)
            tags.extend(_tag_page(response, what))
        return tags

    # -- Target -------------------------------------------------------------

    def exists(self, desc: Descriptor) -> bool:
        kind = "manifests" if desc.media_type in MANIFEST_MEDIA_TYPES else "blobs"
        response = self.client.request(
            "HEAD",
            self.path(kind, desc.digest),
            self.pull_scope,
            headers={"Accept": MANIFEST_ACCEPT} if kind == "manifests" else None,
        )
        response.close()
        if response.status_code == 404:
            return False
        raise_for_status(response, f"{self.describe()}@{desc.digest}")
        return True

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[BinaryIO]:
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            data = self._manifests.get(desc.digest)
            if data is None:
                _, data = self._get_manifest(desc.digest)
            yield io.BytesIO(data)
            return
        with self.fetch_from(desc, 0) as stream:
            yield stream

    @contextlib.contextmanager
    def fetch_from(self, desc: Descriptor, offset: int) -> Iterator[BinaryIO]:
        """Stream a blob from ``offset``; redirects to storage are followed
        (requests drops our Authorization header when the host changes)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.client.request(
            "GET", self.path("blobs", desc.digest), self.pull_scope, headers=headers, stream=True
        )
        with response:
            what = f"blob {desc.digest} in {self.describe()}"
            if response.status_code == 404:
                raise BlobNotFoundError(f"{what} not found")
            raise_for_status(response, what)
            stream = ResponseStream(response)
            if offset and response.status_code != 206:
                _skip(stream, offset, what)  # the server ignored Range: read past the prefix
            yield stream

    @contextlib.contextmanager
    def fetch_range(self, desc: Descriptor, start: int, end: int) -> Iterator[BinaryIO]:
        """Stream bytes ``[start, end)`` of a blob (one piece of a ranged download); a
        redirect to storage is followed with the Range and without our Authorization,
        as in :meth:`fetch_from`."""
        response = self.client.request(
            "GET",
            self.path("blobs", desc.digest),
            self.pull_scope,
            headers={"Range": f"bytes={start}-{end - 1}"},
            stream=True,
        )
        with response:
            what = f"blob {desc.digest} in {self.describe()}"
            if response.status_code == 404:
                raise BlobNotFoundError(f"{what} not found")
            raise_for_status(response, what)
            if response.status_code != 206:
                raise RangeIgnoredError(f"{what}: the server ignores Range requests")
            answered = response.headers.get("Content-Range", "")
            if not answered.startswith(f"bytes {start}-{end - 1}/"):
                raise RegistryError(
                    f"{what}: asked for bytes {start}-{end - 1}, got {answered or 'no range'}"
                )
            yield ResponseStream(response)

    def push(self, desc: Descriptor, content: BinaryIO, reference: str | None = None) -> None:
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            data = content.read(MAX_MANIFEST_BYTES + 1)
            verify_bytes(data, desc.digest, desc.size, f"manifest {desc.digest}")
            self.put_manifest(desc, data, reference or desc.digest)
            return
        if reference is not None:
            raise RegistryError("only manifests can be tagged")
        chunk = chunk_size_for(desc.size, self.client.transport.options.chunk_size)
        upload_blob(self, desc, content, chunk)

    # -- blob upload sessions -----------------------------------------------

    def start_upload(self, mount_from: str | None = None, digest: str | None = None) -> str | None:
        """POST an upload; returns its URL, or None when a mount made it unnecessary."""
        scopes = self.push_scope
        params: dict[str, str] = {}
        if mount_from and digest:
            scopes = (*scopes, f"repository:{mount_from}:pull")
            params = {"mount": digest, "from": mount_from}
        response = self.client.request(
            "POST", self.path("blobs", "uploads/"), scopes, params=params, data=b""
        )
        with response:
            if response.status_code == 201 and mount_from:
                return None
            raise_for_status(response, f"starting upload to {self.describe()}")
            location = response.headers.get("Location")
            if response.status_code != 202 or not location:
                raise RegistryError(
                    f"starting upload to {self.describe()}: unexpected HTTP {response.status_code}"
                )
        return self.upload_url(location)

    def mount(self, desc: Descriptor, from_repository: str) -> bool:
        """Cross-repository mount; True if the registry linked the blob without upload."""
        location = self.start_upload(mount_from=from_repository, digest=desc.digest)
        if location is None:
            return True
        # Not mounted: cancel the session the registry opened instead.
        with contextlib.suppress(Exception):
            self.client.request("DELETE", location, self.push_scope).close()
        return False


def _manifest_descriptor(data: bytes, digest: str, header_type: str, what: str) -> Descriptor:
    document = parse_document(data, f"{what}: manifest")
    media_type, artifact_type = document.get("mediaType"), document.get("artifactType")
    return Descriptor(
        media_type=media_type if isinstance(media_type, str) and media_type else header_type,
        digest=digest,
        size=len(data),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
    )


def _tag_page(response: requests.Response, what: str) -> list[str]:
    """The tags of one ``tags/list`` page: a JSON object whose ``tags`` are strings."""
    try:
        document = response.json()
    except (ValueError, RecursionError):
        document = None
    tags = document.get("tags") if isinstance(document, dict) else None
    if tags is None and isinstance(document, dict):
        return []
    if not isinstance(tags, list) or not all(isinstance(tag, str) for tag in tags):
        raise RegistryError(f"{what}: the registry's answer is not a tag list")
    return tags


def _skip(stream: ResponseStream, count: int, what: str) -> None:
    while count > 0:
        data = stream.read(min(CHUNK_SIZE, count))
        if not data:
            raise TransferInterruptedError(
                f"{what}: stream ended while skipping to the resume offset"
            )
        count -= len(data)
