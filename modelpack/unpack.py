"""Lay an artifact's files out in a directory: the Target a pull writes into.

Every layer media type of the spec is accepted (raw, tar, tar+gzip,
tar+zstd, for all five kinds, plus the legacy ``cnai`` names); a generic
OCI artifact layer with a title annotation (what ``oras push`` makes) is
written as a raw file.  Bytes are verified against the layer digest while
they are written.  Every path comes from an untrusted manifest or tar
header and is checked before use: no absolute paths, no ``..``, no links,
devices or FIFOs, no two layers writing the same file.  Files are written
into a staging directory beside the target and only moved into place once
every layer has arrived and verified, so a failed pull leaves nothing.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tarfile
import threading
import uuid
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from .digests import CHUNK_SIZE, VerifyingReader, verify_bytes
from .errors import IntegrityError, UnsafePathError, UsageError
from .fsutil import remove_tree
from .spec import (
    ANNOTATION_FILE_METADATA,
    ANNOTATION_TITLE,
    LEGACY_ANNOTATION_FILE_METADATA,
    MANIFEST_MEDIA_TYPES,
    MODEL_CONFIG_MEDIA_TYPES,
    Descriptor,
    FileMetadata,
    LayerFormat,
    parse_layer_media_type,
)
from .target import MAX_MANIFEST_BYTES

STAGING_PREFIX = ".modelpack-staging-"


def safe_relpath(path: str, what: str) -> PurePosixPath:
    """Validate an untrusted relative path; return it normalized."""
    if not path or "\x00" in path or "\\" in path:
        raise UnsafePathError(f"{what}: unusable path {path!r}")
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise UnsafePathError(f"{what}: absolute path {path!r} refused")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafePathError(f"{what}: path {path!r} escapes the target directory")
    return PurePosixPath(*parts)


def _file_mode(mode: int | None) -> int:
    if not mode:
        return 0o644
    return (mode & 0o755) | 0o600


def _layer_path(desc: Descriptor) -> str:
    path = desc.filepath or desc.annotations.get(ANNOTATION_TITLE)
    if not path:
        raise IntegrityError(
            f"layer {desc.digest} has no org.cncf.model.filepath or title annotation; "
            "cannot tell where its file goes"
        )
    return path


def _metadata(desc: Descriptor) -> FileMetadata | None:
    text = desc.annotations.get(ANNOTATION_FILE_METADATA) or desc.annotations.get(
        LEGACY_ANNOTATION_FILE_METADATA
    )
    if not text:
        return None
    try:
        return FileMetadata.from_json(text)
    except (ValueError, TypeError):
        return None


class DirectoryTarget:
    """Write-only Target that materializes an artifact into ``destination``.

    Use as a context manager: leaving the ``with`` block without error calls
    :meth:`commit`, an exception calls :meth:`abort`.
    """

    def __init__(self, destination: str | os.PathLike[str], *, link_from=None) -> None:  # noqa: ANN001
        self.destination = Path(destination)
        self.link_from = link_from  # a LayoutStore whose read-only blobs may be hardlinked
        self.manifest: bytes | None = None
        self.config: bytes | None = None
        self.files: list[str] = []
        self._claimed: set[PurePosixPath] = set()
        self._lock = threading.Lock()
        self.staging = self._make_staging()

    # -- staging ------------------------------------------------------------

    def _make_staging(self) -> Path:
        if self.destination.exists() and not self.destination.is_dir():
            raise UsageError(f"{self.destination} exists and is not a directory")
        if self.destination.is_dir():
            # An existing directory (maybe a mounted volume): stage inside it.
            staging = self.destination / f"{STAGING_PREFIX}{uuid.uuid4().hex[:12]}"
        else:
            self.destination.parent.mkdir(parents=True, exist_ok=True)
            staging = self.destination.parent / (
                f"{STAGING_PREFIX}{self.destination.name}-{uuid.uuid4().hex[:12]}"
            )
        staging.mkdir()
        return staging

    def commit(self) -> Path:
        """Move the complete, verified tree into place."""
        if self.destination.is_dir():
            for entry in sorted(self.staging.iterdir()):
                _move_into(entry, self.destination / entry.name)
            self.staging.rmdir()
        else:
            os.rename(self.staging, self.destination)
        return self.destination

    def abort(self) -> None:
        remove_tree(self.staging)

    def __enter__(self) -> DirectoryTarget:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def _claim(self, relpath: PurePosixPath, what: str) -> Path:
        with self._lock:
            for parent in relpath.parents:
                if parent in self._claimed:
                    raise UnsafePathError(f"{what}: {parent} is a file, cannot hold {relpath}")
            if relpath in self._claimed:
                raise UnsafePathError(f"{what}: {relpath} is written by two layers")
            self._claimed.add(relpath)
            self.files.append(str(relpath))
        target = self.staging.joinpath(*relpath.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    # -- Target -------------------------------------------------------------

    def describe(self) -> str:
        return f"directory {self.destination}"

    def resolve(self, reference: str) -> Descriptor:
        raise UsageError(f"cannot read artifacts from {self.describe()}")

    def exists(self, desc: Descriptor) -> bool:
        return False

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[BinaryIO]:
        raise UsageError(f"cannot read artifacts from {self.describe()}")
        yield  # pragma: no cover

    def tag(self, desc: Descriptor, reference: str) -> None:
        pass

    def push(self, desc: Descriptor, content: BinaryIO, reference: str | None = None) -> None:
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            self.manifest = _read_small(content, desc)
            return
        if desc.media_type in MODEL_CONFIG_MEDIA_TYPES or desc.media_type.endswith(
            "config.v1+json"
        ):
            self.config = _read_small(content, desc)
            return
        parsed = parse_layer_media_type(desc.media_type)
        layer_format = parsed[1] if parsed else LayerFormat.RAW
        if layer_format is LayerFormat.RAW:
            self._write_raw(desc, content)
        else:
            self._extract_tar(desc, content, layer_format)

    # -- layers -------------------------------------------------------------

    def _write_raw(self, desc: Descriptor, content: BinaryIO) -> None:
        what = f"layer {desc.digest}"
        relpath = safe_relpath(_layer_path(desc), what)
        target = self._claim(relpath, what)
        metadata = _metadata(desc)
        if self._try_link(desc, target):
            return
        reader = VerifyingReader(content, desc.digest, desc.size, f"{what} ({relpath})")
        with open(target, "xb") as out:
            for chunk in reader.chunks(CHUNK_SIZE):
                out.write(chunk)
        reader.verify()
        os.chmod(target, _file_mode(metadata.mode if metadata else None))

    def _try_link(self, desc: Descriptor, target: Path) -> bool:
        """Hardlink a verified, read-only store blob instead of copying it."""
        if self.link_from is None or not self.link_from.exists(desc):
            return False
        blob = self.link_from.blob_path(desc.digest)
        if blob.stat().st_mode & 0o222:  # writable: shared with a user's file, copy instead
            return False
        try:
            os.link(blob, target)
        except OSError:
            return False
        return True

    def _extract_tar(self, desc: Descriptor, content: BinaryIO, layer_format: LayerFormat) -> None:
        what = f"layer {desc.digest}"
        reader = VerifyingReader(content, desc.digest, desc.size, what)
        stream: BinaryIO
        if layer_format is LayerFormat.TAR_GZIP:
            stream = gzip.GzipFile(fileobj=reader, mode="rb")
        elif layer_format is LayerFormat.TAR_ZSTD:
            stream = zstandard.ZstdDecompressor().stream_reader(
                reader, read_across_frames=True, closefd=False
            )
        else:
            stream = reader
        try:
            with tarfile.open(fileobj=stream, mode="r|", bufsize=CHUNK_SIZE) as tar:
                for member in tar:
                    self._extract_member(tar, member, what)
        except (
            tarfile.TarError,
            EOFError,
            gzip.BadGzipFile,
            zlib.error,
            zstandard.ZstdError,
        ) as exc:
            raise IntegrityError(
                f"{what}: not a valid {layer_format.value} archive ({exc})"
            ) from exc
        reader.drain()
        reader.verify()

    def _extract_member(self, tar: tarfile.TarFile, member: tarfile.TarInfo, what: str) -> None:
        if member.isdir():
            relpath = safe_relpath(member.name, what)
            self.staging.joinpath(*relpath.parts).mkdir(parents=True, exist_ok=True)
            return
        if not member.isreg():
            kind = "link" if member.issym() or member.islnk() else "special file"
            raise UnsafePathError(f"{what}: tar entry {member.name!r} is a {kind}; refused")
        relpath = safe_relpath(member.name, what)
        target = self._claim(relpath, what)
        source = tar.extractfile(member)
        if source is None:
            raise IntegrityError(f"{what}: cannot read tar entry {member.name!r}")
        with open(target, "xb") as out:
            while chunk := source.read(CHUNK_SIZE):
                out.write(chunk)
        os.chmod(target, _file_mode(member.mode))


def _read_small(content: BinaryIO, desc: Descriptor) -> bytes:
    data = content.read(MAX_MANIFEST_BYTES + 1)
    if len(data) > MAX_MANIFEST_BYTES:
        raise IntegrityError(f"{desc.digest}: larger than {MAX_MANIFEST_BYTES} bytes")
    verify_bytes(data, desc.digest, desc.size, desc.digest)
    return data


def _move_into(source: Path, target: Path) -> None:
    """Move a staged entry into an existing tree, replacing files, merging folders."""
    if source.is_dir() and not source.is_symlink():
        if target.is_dir() and not target.is_symlink():
            for child in sorted(source.iterdir()):
                _move_into(child, target / child.name)
            source.rmdir()
            return
        if target.exists() or target.is_symlink():
            target.unlink()
        os.rename(source, target)
        return
    if target.is_dir() and not target.is_symlink():
        remove_tree(target)
    os.replace(source, target)
