"""Content digests: parse them, compute them in one pass, refuse bytes that differ.

Every byte modelpack accepts from outside passes through a
:class:`VerifyingReader` or :func:`verify_bytes` before it becomes visible.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from typing import BinaryIO

from ..errors import IntegrityError

CHUNK_SIZE = 1 << 20  # 1 MiB: large enough that per-chunk overhead is noise

_ALGORITHMS = {"sha256": 64, "sha512": 128}
_DIGEST_RE = re.compile(r"^(?P<alg>[a-z0-9]+(?:[.+_-][a-z0-9]+)*):(?P<hex>[a-zA-Z0-9=_-]+)\Z")


def parse_digest(digest: str) -> tuple[str, str]:
    """Split ``alg:hex`` and check it is a digest we can verify."""
    match = _DIGEST_RE.match(digest or "")
    if not match:
        raise IntegrityError(f"malformed digest {digest!r}")
    alg, hexpart = match.group("alg"), match.group("hex")
    if alg not in _ALGORITHMS:
        raise IntegrityError(f"unsupported digest algorithm in {digest!r}")
    if len(hexpart) != _ALGORITHMS[alg] or not re.fullmatch(r"[0-9a-f]+", hexpart):
        raise IntegrityError(f"malformed {alg} digest {digest!r}")
    return alg, hexpart


def is_digest(value: str) -> bool:
    try:
        parse_digest(value)
    except IntegrityError:
        return False
    return True


def new_hasher(digest: str = "sha256:"):  # noqa: ANN201 - hashlib has no public type
    alg = digest.split(":", 1)[0] or "sha256"
    return hashlib.new(alg)


def sha256_bytes(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def sha256_file(path: str, chunk_size: int = CHUNK_SIZE) -> tuple[str, int]:
    """Digest and size of a file, read once in large chunks."""
    hasher = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while chunk := f.read(chunk_size):
            hasher.update(chunk)
            size += len(chunk)
    return "sha256:" + hasher.hexdigest(), size


def verify_bytes(data: bytes, digest: str, size: int | None, what: str) -> None:
    """Raise :class:`IntegrityError` unless ``data`` is exactly the described content."""
    if size is not None and len(data) != size:
        raise IntegrityError(f"{what}: expected {size} bytes, got {len(data)}")
    parse_digest(digest)
    hasher = new_hasher(digest)
    hasher.update(data)
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if actual != digest:
        raise IntegrityError(f"{what}: digest mismatch (expected {digest}, got {actual})")


class VerifyingReader:
    """Wraps a byte stream; hashes and counts what passes; checks it at the end.

    Reading more than ``size`` bytes raises at once (a server that sends too
    much is stopped, not buffered).  :meth:`verify` must be called once the
    consumer is done; it drains nothing, so the caller decides what "done" is.
    """

    def __init__(self, stream: BinaryIO, digest: str, size: int, what: str):
        parse_digest(digest)
        self._stream = stream
        self.digest = digest
        self.size = size
        self.what = what
        self.hasher = new_hasher(digest)
        self.count = 0

    def prime(self, data: bytes) -> None:
        """Account for bytes that arrived earlier (a resumed transfer) without reading them."""
        self.count += len(data)
        if self.count > self.size:
            raise IntegrityError(f"{self.what}: more than the expected {self.size} bytes")
        self.hasher.update(data)

    def reset(self) -> None:
        self.hasher = new_hasher(self.digest)
        self.count = 0

    def switch(self, stream: BinaryIO) -> None:
        """Continue from another stream (a new connection after a resume)."""
        self._stream = stream

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = max(self.size - self.count, 0) + 1
        data = self._stream.read(n)
        if data:
            self.count += len(data)
            if self.count > self.size:
                raise IntegrityError(f"{self.what}: more than the expected {self.size} bytes")
            self.hasher.update(data)
        return data

    def readinto(self, buffer) -> int:  # noqa: ANN001 - memoryview/bytearray
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def readable(self) -> bool:
        return True

    def chunks(self, chunk_size: int = CHUNK_SIZE) -> Iterator[bytes]:
        while chunk := self.read(chunk_size):
            yield chunk

    def drain(self) -> None:
        while self.read(CHUNK_SIZE):
            pass

    def verify(self) -> None:
        if self.count != self.size:
            raise IntegrityError(f"{self.what}: expected {self.size} bytes, got {self.count}")
        actual = f"{self.hasher.name}:{self.hasher.hexdigest()}"
        if actual != self.digest:
            raise IntegrityError(
                f"{self.what}: digest mismatch (expected {self.digest}, got {actual})"
            )
