"""Blob uploads: one streamed PUT when small, PATCH chunks when large.

Chunks are for registries that cap request size (Quay refuses single
uploads over 20 GB; proxies often cap bodies) and for resuming: when a
connection drops mid-chunk and the source can seek, we ask the registry how
much it has (``GET`` on the upload URL, ``Range: 0-N``) and continue from
there instead of starting the blob again.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import AuthorizationExpiredError, RegistryError, TransferInterruptedError
from ..oci.digests import CHUNK_SIZE, VerifyingReader
from ..oci.spec import Descriptor
from .session import RepositoryAccess
from .transport import raise_for_status

MONOLITHIC_MAX = 4 * 1024**3  # above this, chunked by default
DEFAULT_CHUNK = 1024**3
RESUME_ATTEMPTS = 4


class UploadBody:
    """A request body that streams ``length`` bytes of a blob in large chunks.

    No ``read`` attribute on purpose: http.client then iterates us and sends
    our 1 MiB chunks instead of reading 8-16 KiB blocks.
    """

    def __init__(self, reader: VerifyingReader, length: int) -> None:
        self.reader = reader
        self.length = length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[bytes]:
        remaining = self.length
        while remaining > 0:
            chunk = self.reader.read(min(CHUNK_SIZE, remaining))
            if not chunk:
                return
            remaining -= len(chunk)
            yield chunk


def chunk_size_for(size: int, configured: int | None) -> int:
    """0 means one PUT.  ``configured`` None: automatic; 0: never chunk."""
    if configured is None:
        return DEFAULT_CHUNK if size > MONOLITHIC_MAX else 0
    return configured if 0 < configured < size else 0


def upload_blob(repo: RepositoryAccess, desc: Descriptor, content: BinaryIO, chunk: int) -> None:
    location = repo.start_upload()
    assert location is not None
    reader = VerifyingReader(content, desc.digest, desc.size, f"blob {desc.digest}")
    what = f"uploading blob {desc.digest} to {repo.describe()}"
    if chunk:
        location = _send_chunks(repo, desc, content, reader, location, chunk, what)
        body: UploadBody | bytes = b""
        length = 0
    else:
        body, length = UploadBody(reader, desc.size), desc.size
    response = repo.client.request(
        "PUT",
        location,
        repo.push_scope,
        headers={"Content-Type": "application/octet-stream", "Content-Length": str(length)},
        params={"digest": desc.digest},
        data=body,
        replayable=False,
        retry=False,
    )
    with response:
        _check_upload_response(repo, response, reader, desc, what)
        if response.status_code not in (201, 204):
            raise RegistryError(f"{what}: unexpected HTTP {response.status_code}")


def _check_upload_response(repo, response, reader, desc, what) -> None:  # noqa: ANN001
    if response.status_code == 401:
        repo.client.auth.forget(repo.push_scope)
        raise AuthorizationExpiredError(f"{what}: authorization expired during the upload")
    if response.status_code < 400 or reader.count == desc.size:
        reader.verify()  # our bytes were wrong (a source edited after build?)
    raise_for_status(response, what)


def _send_chunks(
    repo: RepositoryAccess,
    desc: Descriptor,
    content: BinaryIO,
    reader: VerifyingReader,
    location: str,
    chunk: int,
    what: str,
) -> str:
    """PATCH the whole blob in ``chunk``-sized pieces; returns the final upload URL."""
    offset = 0
    failures = 0
    while offset < desc.size:
        length = min(chunk, desc.size - offset)
        try:
            response = repo.client.request(
                "PATCH",
                location,
                repo.push_scope,
                headers={
                    "Content-Type": "application/octet-stream",
                    "Content-Range": f"{offset}-{offset + length - 1}",
                    "Content-Length": str(length),
                },
                data=UploadBody(reader, length),
                replayable=False,
                retry=False,
            )
        except TransferInterruptedError:
            failures += 1
            if failures >= RESUME_ATTEMPTS or not _seekable(content):
                raise
            offset = _upload_offset(repo, location)
            _rewind(content, reader, offset)
            continue
        with response:
            if response.status_code == 401:
                repo.client.auth.forget(repo.push_scope)
                if not _seekable(content):
                    raise AuthorizationExpiredError(f"{what}: authorization expired mid-upload")
                # A token that expired between chunks: fetch a new one, then carry on.
                repo.client.auth.answer(response, repo.push_scope)
                offset = _upload_offset(repo, location)
                _rewind(content, reader, offset)
                continue
            raise_for_status(response, what)
            if response.status_code != 202:
                raise RegistryError(f"{what}: PATCH answered HTTP {response.status_code}")
            location = repo.upload_url(response.headers.get("Location") or location)
        offset += length
    return location


def _seekable(content: BinaryIO) -> bool:
    try:
        return bool(content.seekable())
    except (AttributeError, io.UnsupportedOperation):
        return False


def _upload_offset(repo: RepositoryAccess, location: str) -> int:
    """How many bytes the registry holds for an upload in progress."""
    response = repo.client.request("GET", location, repo.push_scope)
    with response:
        raise_for_status(response, f"checking upload to {repo.describe()}")
        value = response.headers.get("Range", "")
    if "-" not in value:
        return 0
    return int(value.rsplit("-", 1)[1]) + 1


def _rewind(content: BinaryIO, reader: VerifyingReader, offset: int) -> None:
    """Reposition a seekable source at ``offset`` with the hash of bytes before it."""
    content.seek(0)
    reader.reset()
    remaining = offset
    while remaining > 0:
        data = content.read(min(CHUNK_SIZE, remaining))
        if not data:
            raise RegistryError("source blob ended before the registry's upload offset")
        reader.prime(data)
        remaining -= len(data)
