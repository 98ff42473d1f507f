"""Stat seals: notice that a file changed after its bytes were verified.

A blob of the store, and every file of a node-cache tree, may share its inode
with files we do not control: a model tree hardlinks the store's blobs, ``build``
hardlinks the user's source files into the store, ``--hf-cache`` links tree files
again.  Mode bits do not stop root, so a write through any of those names would
silently change the bytes behind a digest.  When a file is published we record
its inode, size and mtime (nanoseconds); before it is reused (linked, skipped as
present, pushed, served) the same ``lstat`` must match, or the file is treated
as changed.  ctime is not compared: making or removing a hardlink (every tree
built or pruned) changes it.  A write always moves mtime; only a deliberate
``touch`` back to the old time would hide one.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from ..errors import IntegrityError
from ._fsutil import atomic_write_bytes


@dataclass(frozen=True)
class Seal:
    """What a verified file looked like: a later write changes at least one field."""

    ino: int
    size: int
    mtime_ns: int

    @classmethod
    def from_stat(cls, st: os.stat_result) -> Seal:
        return cls(st.st_ino, st.st_size, st.st_mtime_ns)

    @classmethod
    def of(cls, path: Path) -> Seal:
        return cls.from_stat(os.lstat(path))

    def matches(self, path: Path) -> bool:
        try:
            return Seal.of(path) == self
        except OSError:
            return False

    def to_list(self) -> list[int]:
        return [self.ino, self.size, self.mtime_ns]

    @classmethod
    def from_list(cls, value: object) -> Seal | None:
        if isinstance(value, list) and len(value) == 3 and all(type(v) is int for v in value):
            return cls(*value)
        return None


@dataclass(frozen=True)
class BlobSeal:
    """A store blob's seal, and the user's file it was linked from at build (if any)."""

    seal: Seal
    origin: str | None = None

    def write(self, path: Path) -> None:
        record = {"seal": self.seal.to_list(), "origin": self.origin}
        atomic_write_bytes(path, json.dumps(record).encode())

    @classmethod
    def read(cls, path: Path) -> BlobSeal | None:
        """The seal at ``path``; None when there is none (or it is unreadable)."""
        try:
            record = json.loads(path.read_bytes())
        except (OSError, ValueError):
            return None
        if not isinstance(record, dict):
            return None
        seal = Seal.from_list(record.get("seal"))
        origin = record.get("origin")
        if seal is None or not isinstance(origin, str | None):
            return None
        return cls(seal, origin)


def changed_blob_error(digest: str, blob: Path, origin: str | None) -> IntegrityError:
    """The one error for a blob whose bytes changed after they were verified."""
    if origin is not None:
        return IntegrityError(
            f"{origin} changed after `modelpack build` stored it as blob {digest} "
            f"(the store's {blob} is the same file)",
            hint="run `modelpack build` again to store the new content, or restore the file",
        )
    return IntegrityError(
        f"blob {digest} in the local store ({blob}) changed after it was verified: "
        "a file linked to it (a model tree under models/, an HF cache blob) was written to",
        hint="pull the model again: the blob is fetched anew and the trees that link it are "
        "rebuilt; write to a copy (`modelpack pull -o DIR`), never into the node cache",
    )
