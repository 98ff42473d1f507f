"""The hub's commit payload (NDJSON), read as it arrives.

``huggingface_hub`` sends one JSON object per line: ``header`` (summary,
description, parentCommit), then ``file`` (a regular file, base64 inside the
line), ``lfsFile`` (path, sha256 oid, size), ``deletedFile``, ``deletedFolder``.
A ``file`` line can be as large as the file: its base64 is decoded straight
into a spool file under the node cache while being hashed, so the gateway never
holds a file in memory (the layout ``json.dumps`` gives the line, content
first, is read so; any other layout is parsed whole, up to ``line_max``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ...errors import DiskFullError
from ...storage.diskspace import require_space
from ..core.hub import HubError

FILE_PREFIX = b'{"key": "file", "value": {"content": "'
SMALL_LINE_MAX = 1 << 20  # header, lfsFile, deletions
READ_SIZE = 1 << 20
CONTENT_MAX = 10 << 20  # the default --inline-max: what preupload sends inline


@dataclass
class Spooled:
    """A regular file's bytes, on disk under the node cache."""

    path: Path
    size: int
    sha256: str


@dataclass
class Operation:
    key: str
    value: dict[str, Any]
    content: Spooled | None = None  # for "file"


class _Input:
    """``wsgi.input`` with a look-ahead buffer, never past Content-Length."""

    def __init__(self, stream: BinaryIO, length: int | None) -> None:
        self.stream = stream
        self.remaining = length
        self.buffer = b""
        self.ended = False

    def _fill(self) -> bool:
        if self.ended:
            return False
        want = READ_SIZE if self.remaining is None else min(READ_SIZE, self.remaining)
        data = self.stream.read(want) if want else b""
        if not data:
            if self.remaining:  # the connection dropped: a part of a commit is not the commit
                raise HubError(400, f"the commit payload ended {self.remaining} bytes short")
            self.ended = True
            return False
        if self.remaining is not None:
            self.remaining -= len(data)
        self.buffer += data
        return True

    def peek(self, count: int) -> bytes:
        while len(self.buffer) < count and self._fill():
            pass
        return self.buffer[:count]

    def skip(self, count: int) -> None:
        self.buffer = self.buffer[count:]

    def until(self, delimiter: bytes) -> Iterator[bytes]:
        """The bytes before ``delimiter``, in pieces; the delimiter is consumed."""
        while True:
            index = self.buffer.find(delimiter)
            if index >= 0:
                piece, self.buffer = self.buffer[:index], self.buffer[index + len(delimiter) :]
                if piece:
                    yield piece
                return
            if self.buffer:
                piece, self.buffer = self.buffer, b""
                yield piece
            if not self._fill():
                return

    def line(self, limit: int) -> bytes:
        parts, total = [], 0
        for piece in self.until(b"\n"):
            total += len(piece)
            if total > limit:
                raise HubError(413, f"a line of the commit payload is over {limit} bytes")
            parts.append(piece)
        return b"".join(parts)


def operations(
    stream: BinaryIO,
    length: int | None,
    spool: Path,
    line_max: int,
    content_max: int = CONTENT_MAX,
) -> Iterator[Operation]:
    """Each operation of the payload; a regular file's content already spooled.

    A regular file is at most ``content_max`` bytes (preupload sends anything larger
    through LFS or Xet): without the cap one ``file`` line, streamed for as long as
    the sender likes, would fill the node cache's disk before anything is checked."""
    body = _Input(stream, length)
    while body.peek(1):
        if body.peek(len(FILE_PREFIX)) == FILE_PREFIX:
            body.skip(len(FILE_PREFIX))
            content = _spool(_decoded(body.until(b'"')), spool, content_max)
            rest = body.line(SMALL_LINE_MAX)
            value = _json(b'{"content": ""' + rest.removesuffix(b"}"))
            if value.get("encoding", "base64") != "base64":
                raise HubError(400, "file content must be base64")
            yield Operation("file", value, content)
            continue
        line = body.line(line_max).strip()
        if not line:
            continue
        document = _json(line)
        key, value = document.get("key"), document.get("value")
        if not isinstance(key, str) or not isinstance(value, dict):
            raise HubError(400, "each line of the commit payload needs a key and a value")
        if key == "file":  # another layout: the whole line was read
            data = value.get("content", "")
            if not isinstance(data, str):
                raise HubError(400, "file content must be a string (base64)")
            encoding = value.get("encoding", "base64")
            raw = _b64(data.encode()) if encoding == "base64" else str(data).encode()
            yield Operation(key, value, _spool(iter([raw]), spool, content_max))
            continue
        yield Operation(key, value)


def _json(data: bytes) -> dict[str, Any]:
    try:
        document = json.loads(data)
    except (ValueError, RecursionError):
        raise HubError(400, "the commit payload is not NDJSON") from None
    if not isinstance(document, dict):
        raise HubError(400, "the commit payload is not NDJSON")
    return document


def _b64(data: bytes) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise HubError(400, "file content is not valid base64") from None


def _decoded(pieces: Iterator[bytes]) -> Iterator[bytes]:
    carry = b""
    for piece in pieces:
        carry += piece
        usable = len(carry) - len(carry) % 4
        if usable:
            yield _b64(carry[:usable])
            carry = carry[usable:]
    if carry:
        yield _b64(carry)


def _spool(chunks: Iterator[bytes], directory: Path, content_max: int) -> Spooled:
    directory.mkdir(parents=True, exist_ok=True)
    try:
        require_space(directory, content_max, "a file of a commit")
    except DiskFullError:
        raise HubError(507, "not enough space on the gateway for this commit") from None
    hasher = hashlib.sha256()
    size = 0
    with tempfile.NamedTemporaryFile(dir=directory, prefix="file-", delete=False) as out:
        for chunk in chunks:
            size += len(chunk)
            if size > content_max:
                raise HubError(
                    413,
                    f"a regular file of a commit is at most {content_max} bytes "
                    "(larger files go through LFS or Xet, as preupload says)",
                )
            hasher.update(chunk)
            out.write(chunk)
    return Spooled(Path(out.name), size, "sha256:" + hasher.hexdigest())
