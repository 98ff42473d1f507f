"""One repository on a registry, as a :class:`~modelpack.target.Target`.

Speaks the OCI distribution API: manifests by tag or digest, blobs streamed
in both directions (never held whole in memory), monolithic uploads via
POST + PUT, cross-repository mounts, existence checks with HEAD.
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Iterator
from typing import BinaryIO
from urllib.parse import urljoin

import requests
import urllib3

from ..digests import CHUNK_SIZE, VerifyingReader, is_digest, sha256_bytes, verify_bytes
from ..errors import (
    AuthorizationExpiredError,
    BlobNotFoundError,
    IntegrityError,
    ReferenceNotFoundError,
    RegistryError,
    TransferInterruptedError,
)
from ..spec import MANIFEST_MEDIA_TYPES, Descriptor
from ..target import MAX_MANIFEST_BYTES
from .auth import Authenticator
from .transport import Transport, raise_for_status, registry_error_message

MANIFEST_ACCEPT = ", ".join(MANIFEST_MEDIA_TYPES)


class UploadBody:
    """A request body that streams a blob in large chunks, hashing as it goes.

    No ``read`` attribute on purpose: http.client then iterates us and sends
    our 1 MiB chunks instead of reading 8-16 KiB blocks.
    """

    def __init__(self, reader: VerifyingReader) -> None:
        self.reader = reader

    def __len__(self) -> int:
        return self.reader.size - self.reader.count

    def __iter__(self) -> Iterator[bytes]:
        return self.reader.chunks(CHUNK_SIZE)


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
            raise TransferInterruptedError(
                f"connection to {self._response.url.split('/v2/')[0]} lost mid-download: {exc}"
            ) from exc

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._response.close()


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

    def repository(self, name: str) -> RegistryRepository:
        return RegistryRepository(self, name)


class RegistryRepository:
    def __init__(self, client: RegistryClient, name: str) -> None:
        self.client = client
        self.name = name
        self._manifests: dict[str, bytes] = {}

    # -- helpers ------------------------------------------------------------

    @property
    def pull_scope(self) -> tuple[str, ...]:
        return (f"repository:{self.name}:pull",)

    @property
    def push_scope(self) -> tuple[str, ...]:
        return (f"repository:{self.name}:pull,push",)

    def _path(self, kind: str, reference: str = "") -> str:
        return f"/v2/{self.name}/{kind}/{reference}"

    def describe(self) -> str:
        return f"{self.client.host}/{self.name}"

    # -- manifests ----------------------------------------------------------

    def _get_manifest(self, reference: str) -> tuple[Descriptor, bytes]:
        response = self.client.request(
            "GET",
            self._path("manifests", reference),
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
                    hint="check the repository and tag; `modelpack inspect --remote` shows what exists",
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
            media_type = response.headers.get("Content-Type", "").split(";")[0].strip()
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise IntegrityError(f"{what}: manifest is not JSON") from exc
        if not isinstance(document, dict):
            raise IntegrityError(f"{what}: manifest is not a JSON object")
        media_type = document.get("mediaType") or media_type
        desc = Descriptor(
            media_type=media_type,
            digest=digest,
            size=len(data),
            artifact_type=document.get("artifactType"),
        )
        self._manifests[digest] = data
        return desc, data

    def resolve(self, reference: str) -> Descriptor:
        if reference in self._manifests:  # a digest we already fetched and verified
            data = self._manifests[reference]
            document = json.loads(data)
            return Descriptor(
                media_type=document.get("mediaType", ""),
                digest=reference,
                size=len(data),
                artifact_type=document.get("artifactType"),
            )
        return self._get_manifest(reference)[0]

    # -- Target -------------------------------------------------------------

    def exists(self, desc: Descriptor) -> bool:
        kind = "manifests" if desc.media_type in MANIFEST_MEDIA_TYPES else "blobs"
        response = self.client.request(
            "HEAD",
            self._path(kind, desc.digest),
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
        with self.open_blob(desc) as stream:
            yield stream

    @contextlib.contextmanager
    def open_blob(self, desc: Descriptor, offset: int = 0) -> Iterator[ResponseStream]:
        """Stream a blob from ``offset``; redirects to storage are followed
        (requests drops our Authorization header when the host changes)."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.client.request(
            "GET", self._path("blobs", desc.digest), self.pull_scope, headers=headers, stream=True
        )
        with response:
            what = f"blob {desc.digest} in {self.describe()}"
            if response.status_code == 404:
                raise BlobNotFoundError(f"{what} not found")
            raise_for_status(response, what)
            if offset and response.status_code != 206:
                raise RegistryError(f"{what}: registry ignored the Range request")
            yield ResponseStream(response)

    def push(self, desc: Descriptor, content: BinaryIO, reference: str | None = None) -> None:
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            data = content.read(MAX_MANIFEST_BYTES + 1)
            verify_bytes(data, desc.digest, desc.size, f"manifest {desc.digest}")
            self.put_manifest(desc, data, reference or desc.digest)
        else:
            self.upload_blob(desc, content)
            if reference is not None:
                raise RegistryError("only manifests can be tagged")

    def put_manifest(self, desc: Descriptor, data: bytes, reference: str) -> None:
        response = self.client.request(
            "PUT",
            self._path("manifests", reference),
            self.push_scope,
            headers={"Content-Type": desc.media_type},
            data=data,
        )
        with response:
            raise_for_status(response, f"pushing manifest {self.describe()}:{reference}")
        self._manifests[desc.digest] = data

    def tag(self, desc: Descriptor, reference: str) -> None:
        data = self._manifests.get(desc.digest)
        if data is None:
            _, data = self._get_manifest(desc.digest)
        self.put_manifest(desc, data, reference)

    # -- blob upload --------------------------------------------------------

    def start_upload(self, mount_from: str | None = None, digest: str | None = None) -> str | None:
        """POST an upload; returns its URL, or None when a mount made it unnecessary."""
        scopes = self.push_scope
        params: dict[str, str] = {}
        if mount_from and digest:
            scopes = (*scopes, f"repository:{mount_from}:pull")
            params = {"mount": digest, "from": mount_from}
        response = self.client.request(
            "POST", self._path("blobs", "uploads/"), scopes, params=params, data=b""
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
        return urljoin(self.client.transport.url(self._path("blobs", "uploads/")), location)

    def mount(self, desc: Descriptor, from_repository: str) -> bool:
        """Cross-repository mount; True if the registry linked the blob without upload."""
        location = self.start_upload(mount_from=from_repository, digest=desc.digest)
        if location is None:
            return True
        # Not mounted: cancel the session the registry opened instead.
        with contextlib.suppress(Exception):
            self.client.request("DELETE", location, self.push_scope).close()
        return False

    def upload_blob(self, desc: Descriptor, content: BinaryIO) -> None:
        location = self.start_upload()
        assert location is not None
        reader = VerifyingReader(content, desc.digest, desc.size, f"blob {desc.digest}")
        response = self.client.request(
            "PUT",
            location,
            self.push_scope,
            headers={"Content-Type": "application/octet-stream", "Content-Length": str(desc.size)},
            params={"digest": desc.digest},
            data=UploadBody(reader),
            replayable=False,
            retry=False,
        )
        with response:
            what = f"uploading blob {desc.digest} to {self.describe()}"
            if response.status_code == 401:
                self.client.auth.forget(self.push_scope)
                raise AuthorizationExpiredError(f"{what}: authorization expired during the upload")
            if response.status_code < 400 or reader.count == desc.size:
                reader.verify()  # our bytes were wrong (a source edited after build?)
            raise_for_status(response, what)
            if response.status_code not in (201, 204):
                raise RegistryError(f"{what}: unexpected HTTP {response.status_code}")
