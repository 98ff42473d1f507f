"""Lay an artifact's files out in a directory: the Target a pull writes into.

Every layer media type of the spec is accepted (raw, tar, tar+gzip,
tar+zstd, for all five kinds, plus the legacy ``cnai`` names); a generic
OCI artifact layer with a title annotation (what ``oras push`` makes) is
written as a raw file, and so is each file of a Docker Model Runner model
(its archives are unpacked as tar layers; ``oci/modelrunner.py`` names the
files of its older models that carry no path).  Bytes are verified against the layer digest while
they are written.  Every path comes from an untrusted manifest or tar
header and is checked before use (:func:`safe_relpath`): no absolute paths,
no ``..``, no ``.git`` folder, no names that are not UTF-8 or longer than a
file system allows, none of our own internal names; no links, devices or
FIFOs, no two layers writing the same file.  Files are written into a
staging directory beside the target and only moved into place once every
layer has arrived and verified, so a failed pull leaves nothing; a file of
the target with other bytes is replaced only when asked (``force``).  The
staging directory is never a link: anything else found under its name is
left alone and a fresh one is made.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import tarfile
import tempfile
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import zstandard

from ..errors import (
    DiskFullError,
    IntegrityError,
    InterruptedByUserError,
    RegistryUnavailableError,
    StoreError,
    UnsafePathError,
    UsageError,
)
from ..oci.digests import CHUNK_SIZE, VerifyingReader, parse_digest, verify_bytes
from ..oci.limits import MAX_MANIFEST_BYTES, max_unpacked_bytes
from ..oci.modelrunner import layer_path, unnamed_layer_names
from ..oci.spec import (
    ANNOTATION_FILE_METADATA,
    DOCKER_ARCHIVE_MEDIA_TYPES,
    DOCKER_MODEL_CONFIG_MEDIA_TYPES,
    LEGACY_ANNOTATION_FILE_METADATA,
    MANIFEST_MEDIA_TYPES,
    MODEL_CONFIG_MEDIA_TYPES,
    Descriptor,
    FileMetadata,
    LayerFormat,
    Manifest,
    layer_format_of,
)
from ..oci.target import Opener
from ._destination import STAGING_PREFIX, Planned, check_destination, sized, staged
from ._fsutil import default_dir_mode, private_folder, reflink, remove_entry, remove_tree
from ._locks import directory_lock
from .diskspace import disk_full_errors, held_bytes, missing_bytes, require_space
from .interrupted import InterruptedPulls
from .partial import fill_partial

PARTIAL_DIR = ".blobs"  # raw layer downloads by digest, kept across interrupted attempts
# Top-level names of our own in a pull directory, never an artifact's (compared casefolded):
# the partial downloads, and every name starting like a staging directory.
RESERVED_NAMES = (PARTIAL_DIR, STAGING_PREFIX.rstrip("-") + "*")
NAME_MAX = 255  # bytes in one path component (Linux, macOS, Windows alike)
# Code points HFS+ ignores in names (as git's is_hfs_dotgit does): ".g\u200cit" is ".git" there.
_HFS_IGNORED = dict.fromkeys(
    [*range(0x200C, 0x2010), *range(0x202A, 0x202F), *range(0x206A, 0x2070), 0xFEFF]
)


def safe_relpath(path: str, what: str) -> PurePosixPath:
    """Validate an untrusted relative path; return it normalized.

    Refused: empty, NUL or backslash, absolute, ``..``, not encodable as UTF-8
    (a lone surrogate such as ``"\\udcff"`` in JSON), a component over
    :data:`NAME_MAX` bytes, a ``.git`` component in any spelling a file system
    folds to it (see :func:`_is_git_folder`), and :data:`RESERVED_NAMES` at the top.
    """
    if not path or "\x00" in path or "\\" in path:
        raise UnsafePathError(f"{what}: unusable path {path!r}")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise UnsafePathError(f"{what}: path {path!r} is not valid UTF-8; refused") from None
    pure = PurePosixPath(path)
    if pure.is_absolute():
        raise UnsafePathError(f"{what}: absolute path {path!r} refused")
    parts = [p for p in pure.parts if p not in ("", ".")]
    if not parts or any(p == ".." for p in parts):
        raise UnsafePathError(f"{what}: path {path!r} escapes the target directory")
    for part in parts:
        _check_component(part, path, what)
    if _is_reserved(parts[0]):
        raise UnsafePathError(f"{what}: path {path!r} uses a name modelpack reserves; refused")
    return PurePosixPath(*parts)


def _check_component(part: str, path: str, what: str) -> None:
    if len(part.encode("utf-8")) > NAME_MAX:
        raise UnsafePathError(
            f"{what}: path {_shown(path)} has a name longer than {NAME_MAX} bytes; refused"
        )
    if _is_git_folder(part):
        raise UnsafePathError(
            f"{what}: path {path!r} writes into a .git folder (git would run its config "
            "and hooks); refused"
        )


def _shown(path: str) -> str:
    text = repr(path)
    return text if len(text) <= 80 else f"{text[:60]}...{text[-12:]}"


def _is_reserved(top: str) -> bool:
    folded = top.casefold()
    return folded == PARTIAL_DIR or folded.startswith(STAGING_PREFIX.rstrip("-"))


def _is_git_folder(part: str) -> bool:
    """``.git`` as case-insensitive file systems see it: any case, HFS+-ignored code points
    removed, trailing dots and spaces dropped (Windows), or the 8.3 short name ``git~1``."""
    folded = part.translate(_HFS_IGNORED).casefold().rstrip(". ")
    return folded in (".git", "git~1")


# Go's tar.TypeReg is '0' (48), which modctl writes as a number; ours write 0.
_REGULAR_TYPEFLAGS = (0, ord("0"))


def _declared_file_size(desc: Descriptor) -> int | None:
    """The size a tar layer's file metadata promises, when it describes one regular file."""
    metadata = _metadata(desc)
    if metadata is None or metadata.typeflag not in _REGULAR_TYPEFLAGS:
        return None
    return metadata.size


def planned_files(layers: list[Descriptor], names: dict[str, str] | None = None) -> list[Planned]:
    """What the layers will write, every path checked: call before the first byte is fetched.

    A raw layer is one file of known size (``names``: digest -> path for the layers of a
    Docker-format model that name none); two raw layers of other bytes at one path are
    refused here.  A tar layer's files are known only when it is read, so only its path
    is checked here (the commit checks what it held); Model Runner's archives name none.
    """
    planned = []
    claimed: dict[PurePosixPath, str] = {}
    for desc in layers:
        if desc.media_type in DOCKER_ARCHIVE_MEDIA_TYPES:
            continue  # unpacked into the model folder: each entry is checked as it is read
        what = f"layer {desc.digest}"
        relpath = safe_relpath(_layer_path(desc, names), what)
        if layer_format_of(desc.media_type) is LayerFormat.RAW:
            if claimed.setdefault(relpath, desc.digest) != desc.digest:
                raise UnsafePathError(f"{what}: {relpath} is written twice (by two layers)")
            planned.append(sized(relpath, desc.size))
    return planned


def _file_mode(mode: int | None) -> int:
    if not mode:
        return 0o644
    return (mode & 0o755) | 0o600


def _layer_path(desc: Descriptor, names: dict[str, str] | None = None) -> str:
    path = layer_path(desc, names or {})
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
    except IntegrityError:
        return None  # informational only: a bad annotation costs the file its mode


def interrupted(kept: int, where: Path) -> InterruptedByUserError:
    """What Ctrl-C left behind, and that running the same command again resumes."""
    if not kept:
        return InterruptedByUserError("interrupted: nothing was written")
    return InterruptedByUserError(
        f"interrupted: {kept / 1e6:.1f} MB of downloads kept in {where}",
        hint="run the same command again to resume from there; `modelpack prune` removes "
        "what an abandoned pull left",
    )


class DirectoryTarget:
    """Write-only Target that materializes an artifact into ``destination``.

    Use as a context manager: leaving the ``with`` block without error calls
    :meth:`commit`; a network interruption keeps the staging directory (raw
    layers downloaded so far are resumed by the next pull into the same
    place); any other error calls :meth:`abort`.  A file already in ``destination``
    is replaced only with ``force`` or when it holds the same bytes.
    """

    def __init__(
        self,
        destination: str | os.PathLike[str],
        *,
        link_from=None,  # noqa: ANN001
        durable: bool = False,
        force: bool = False,
        journal: InterruptedPulls | None = None,
    ) -> None:
        self.destination = Path(destination)
        self.journal = journal  # where prune and doctor find staging an interruption left
        self.force = force  # replace files of the destination that have other bytes
        self.link_from = link_from  # a LayoutStore whose read-only blobs may be hardlinked
        self.durable = durable  # fsync copied files (the node cache), not for a user's -o DIR
        self.manifest: bytes | None = None
        self.config: bytes | None = None
        self.files: list[str] = []
        self._names: dict[str, str] = {}  # digest -> path of a Model Runner layer naming none
        self._claimed: dict[PurePosixPath, str] = {}  # path -> digest of the layer writing it
        self._directories: set[PurePosixPath] = set()  # every directory a claimed path needs
        self._lock = threading.Lock()
        self._partial_locks: dict[str, threading.Lock] = {}
        self._exit = contextlib.ExitStack()
        self._resumable = True  # False in a one-off staging dir (our usual name was taken)
        self.staging = self._open_staging()

    # -- staging ------------------------------------------------------------

    def _open_staging(self) -> Path:
        if self.destination.exists() and not self.destination.is_dir():
            raise UsageError(f"{self.destination} exists and is not a directory")
        if self.destination.is_dir():
            # An existing directory (maybe a mounted volume): stage inside it.
            base, name = self.destination, STAGING_PREFIX.rstrip("-")
        else:
            self.destination.parent.mkdir(parents=True, exist_ok=True)
            base, name = self.destination.parent, f"{STAGING_PREFIX}{self.destination.name}"
        staging = base / name
        if not _free_or_ours(staging):
            # A link (a cloned repo can ship one), a file, someone else's folder: never
            # touched.  A fresh, unique folder instead; nothing to resume from there.
            staging = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=base))
            self._resumable = False
        # One pull at a time into one place; the lock dies with its process.
        self._exit.enter_context(directory_lock(staging))
        if self.journal is not None:
            self.journal.record(staging, self.destination)  # forgotten on commit or abort
        # Left by an interrupted pull: keep the raw downloads (verified or partial).
        for entry in os.scandir(staging):
            if entry.name != PARTIAL_DIR or not entry.is_dir(follow_symlinks=False):
                remove_entry(Path(entry.path))
        staging.joinpath(PARTIAL_DIR).mkdir(exist_ok=True)
        self._staging_id = _file_id(staging)
        return staging

    def _check_staging(self) -> None:
        """Refuse to publish a staging directory someone removed (and a layer's
        ``mkdir`` then made again, holding only the layers written since)."""
        if _file_id(self.staging) != self._staging_id:
            remove_tree(self.staging)  # whatever was made again holds only some layers
            raise StoreError(
                f"{self.staging} was removed while the pull was writing it",
                hint="pull again; do not delete .modelpack-staging-* directories of a running pull",
            )

    def plan(self, manifest: Manifest) -> None:
        """Learn the manifest before its layers (the copy tells it): where each goes."""
        self._names = unnamed_layer_names(manifest)

    def check_planned(self, layers: list[Descriptor]) -> None:
        """Before the first byte: every path usable, nothing in the destination replaced."""
        check_destination(self.destination, planned_files(layers, self._names), force=self.force)

    def commit(self) -> Path:
        """Move the complete, verified tree into place (nothing moves if a file is in the way)."""
        try:
            check_destination(self.destination, self._staged(), force=self.force)
        except BaseException:
            self.abort()
            raise
        try:
            self._check_staging()
            remove_tree(self.staging / PARTIAL_DIR)
            if self.destination.is_dir():
                for entry in sorted(self.staging.iterdir()):
                    _move_into(entry, self.destination / entry.name)
                self.staging.rmdir()
            else:
                # Staged private (0700); the model folder gets the mode mkdir would give it.
                os.chmod(self.staging, default_dir_mode(self.staging))
                os.rename(self.staging, self.destination)
            self._forget()
        finally:
            self._release()
        return self.destination

    def _staged(self) -> list[Planned]:
        files = [staged(rel, self.staging.joinpath(*rel.parts)) for rel in self._claimed]
        return files + [Planned(rel) for rel in self._directories if rel.parts]

    def abort(self) -> None:
        try:
            remove_tree(self.staging)
            self._forget()
        finally:
            self._release()

    def _forget(self) -> None:
        if self.journal is not None:
            self.journal.forget(self.staging)

    def suspend(self) -> int:
        """Keep the partial downloads for the next attempt (if any arrived); their bytes."""
        partials = self.staging / PARTIAL_DIR
        held = [held_bytes(p) for p in partials.iterdir()] if partials.is_dir() else []
        if not any(held) or not self._resumable:
            self.abort()  # nothing to resume: leave no trace
            return 0
        self._release()
        return sum(held)

    def _release(self) -> None:
        self._exit.close()

    def __enter__(self) -> DirectoryTarget:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is None:
            self.commit()
        elif issubclass(exc_type, KeyboardInterrupt):
            kept = self.suspend()
            raise interrupted(kept, self.staging) from exc
        elif issubclass(exc_type, (RegistryUnavailableError, DiskFullError)):
            self.suspend()  # what arrived is resumed by the next pull into the same place
        else:
            self.abort()

    def _claim(self, relpath: PurePosixPath, what: str, digest: str) -> Path:
        """Reserve ``relpath`` for the layer ``digest`` (again, on a retry of that layer)."""
        with self._lock:
            # Decided here, under the lock, not by looking at the disk: layers are written
            # in parallel, so "a/b" and "a/b/c" from two layers must not race to make a/b.
            if relpath in self._directories:
                raise UnsafePathError(f"{what}: {relpath} is a directory, cannot be a file")
            self._reserve_parents(relpath, what)
            if relpath in self._claimed and self._claimed[relpath] != digest:
                raise UnsafePathError(
                    f"{what}: {relpath} is written twice (by two layers or two tar entries)"
                )
            if relpath not in self._claimed:
                self._claimed[relpath] = digest
                self.files.append(str(relpath))
        target = self.staging.joinpath(*relpath.parts)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UnsafePathError(f"{what}: a file is in the way of {relpath}") from None
        return target

    def _reserve_parents(self, relpath: PurePosixPath, what: str) -> None:
        """Under ``self._lock``: ``relpath``'s parents are directories from now on."""
        for parent in relpath.parents:
            if parent in self._claimed:
                raise UnsafePathError(f"{what}: {parent} is a file, cannot hold {relpath}")
        self._directories.update(relpath.parents)

    def _claim_directory(self, relpath: PurePosixPath, what: str) -> None:
        with self._lock:
            if relpath in self._claimed:
                raise UnsafePathError(f"{what}: {relpath} is a file, cannot be a directory")
            self._reserve_parents(relpath, what)
            self._directories.add(relpath)
        try:
            self.staging.joinpath(*relpath.parts).mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UnsafePathError(f"{what}: a file is in the way of {relpath}/") from None

    def _unclaim(self, relpaths: list[PurePosixPath]) -> None:
        with self._lock:
            for relpath in relpaths:
                self._claimed.pop(relpath, None)
                with contextlib.suppress(ValueError):
                    self.files.remove(str(relpath))
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    self.staging.joinpath(*relpath.parts).unlink()

    def add_file(self, relpath: str, data: bytes) -> None:
        """A file of our own beside the artifact's (a model.sig), placed with them."""
        target = self._claim(safe_relpath(relpath, "extra file"), "extra file", "local")
        with open(target, "xb") as out:
            out.write(data)

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
        @contextlib.contextmanager
        def once(offset: int) -> Iterator[BinaryIO]:
            if offset:
                raise UsageError("this source cannot resume")  # pragma: no cover
            yield content

        self.push_resumable(desc, once)

    def push_resumable(self, desc: Descriptor, opener: Opener) -> None:
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            with opener(0) as content:
                self.manifest = _read_small(content, desc)
            return
        if (
            desc.media_type in MODEL_CONFIG_MEDIA_TYPES
            or desc.media_type in DOCKER_MODEL_CONFIG_MEDIA_TYPES
            or desc.media_type.endswith("config.v1+json")
        ):
            with opener(0) as content:
                self.config = _read_small(content, desc)
            return
        layer_format = layer_format_of(desc.media_type)
        if layer_format is LayerFormat.RAW:
            self._write_raw(desc, opener)
        else:
            self._extract_tar(desc, opener, layer_format)

    # -- layers -------------------------------------------------------------

    def _write_raw(self, desc: Descriptor, opener) -> None:  # noqa: ANN001
        what = f"layer {desc.digest}"
        relpath = safe_relpath(_layer_path(desc, self._names), what)
        target = self._claim(relpath, what, desc.digest)
        metadata = _metadata(desc)
        if target.is_dir() and not target.is_symlink():
            raise UnsafePathError(f"{what}: a directory is in the way of {relpath}")
        with contextlib.suppress(FileNotFoundError):
            target.unlink()  # a retry of this layer
        if self._try_link(desc, target):
            return
        partial = self._partial_path(desc)
        with self._partial_lock(partial):
            with disk_full_errors(self.staging, f"{relpath}"):
                fill_partial(partial, desc, opener, f"{what} ({relpath})", durable=self.durable)
            os.chmod(partial, _file_mode(metadata.mode if metadata else None))
            os.link(partial, target)

    def _partial_path(self, desc: Descriptor) -> Path:
        alg, hexpart = parse_digest(desc.digest)
        return self.staging / PARTIAL_DIR / f"{alg}-{hexpart}"

    def require_space(self, blobs: list[Descriptor]) -> None:
        """Refuse a pull that cannot fit before a byte is written (GraphCopier asks)."""
        if self.link_from is not None:  # hardlinked from the store: no new bytes
            blobs = [b for b in blobs if not self.link_from.exists(b)]
        needed = missing_bytes(blobs, self._partial_path)
        require_space(self.staging, needed, f"{len(blobs)} files")

    @contextlib.contextmanager
    def _partial_lock(self, partial: Path) -> Iterator[None]:
        # Two paths with the same content are one download; threads take turns.
        with self._lock:
            lock = self._partial_locks.setdefault(partial.name, threading.Lock())
        with lock:
            yield

    def _try_link(self, desc: Descriptor, target: Path) -> bool:
        """Clone (reflink) or hardlink an unchanged store blob instead of copying it.

        A clone is a file of its own; a hardlink is the blob itself, so a write to
        it changes the blob, which the blob's seal then shows (and the tree's own)."""
        if self.link_from is None or (blob := self.link_from.intact_path(desc)) is None:
            return False
        if reflink(blob, target):
            os.chmod(target, 0o444)
            return True
        if blob.stat().st_mode & 0o222:  # writable: shared with a user's file, copy instead
            return False
        try:
            os.link(blob, target)
        except OSError:
            return False
        return True

    def _extract_tar(self, desc: Descriptor, opener, layer_format: LayerFormat) -> None:  # noqa: ANN001
        """Stream-extract a tar layer.  Not resumable: an interrupted attempt's
        files are removed and the next attempt starts the layer again."""
        what = f"layer {desc.digest}"
        written: list[PurePosixPath] = []
        budget = _UnpackBudget(
            desc.size
            if layer_format is LayerFormat.TAR
            else max_unpacked_bytes(desc.size, _declared_file_size(desc)),
            what,
        )
        try:
            with opener(0) as content, disk_full_errors(self.staging, what):
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
                            self._extract_member(tar, member, what, budget, written)
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
        except BaseException:
            self._unclaim(written)
            raise

    def _extract_member(
        self,
        tar: tarfile.TarFile,
        member: tarfile.TarInfo,
        what: str,
        budget: _UnpackBudget,
        written: list[PurePosixPath],
    ) -> None:
        """Write one entry; ``written`` gets its path as soon as it is claimed, so an
        interrupted attempt is undone completely before the layer is tried again."""
        if member.isdir():
            self._claim_directory(safe_relpath(member.name, what), what)
            return
        if not member.isreg() or member.issparse():
            raise UnsafePathError(
                f"{what}: tar entry {member.name!r} is a {_entry_kind(member)}; refused"
            )
        relpath = safe_relpath(member.name, what)
        # Each entry claims its path for itself: a second entry with the same name
        # (which would overwrite the first) is refused like a second layer would be.
        target = self._claim(relpath, what, f"{what}@{member.offset}")
        written.append(relpath)
        budget.spend(member.size)
        source = tar.extractfile(member)
        if source is None:
            raise IntegrityError(f"{what}: cannot read tar entry {member.name!r}")
        try:
            out = open(target, "xb")  # noqa: SIM115 - closed below
        except (FileExistsError, IsADirectoryError):
            raise UnsafePathError(f"{what}: a directory is in the way of {relpath}") from None
        with out:
            while chunk := source.read(CHUNK_SIZE):
                out.write(chunk)
        os.chmod(target, _file_mode(member.mode))


def _file_id(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def _entry_kind(member: tarfile.TarInfo) -> str:
    if member.issym() or member.islnk():
        return "link"
    return "sparse file" if member.issparse() else "special file"


class _UnpackBudget:
    """File bytes one tar layer may still produce (a decompression bomb stops here)."""

    def __init__(self, limit: int, what: str) -> None:
        self.left = limit
        self.limit = limit
        self.what = what

    def spend(self, size: int) -> None:
        self.left -= size
        if self.left < 0:
            raise IntegrityError(
                f"{self.what}: unpacks to more than {self.limit} bytes "
                "(its declared file size, or the expansion limit); refused",
                hint="raise MODELPACK_MAX_EXPANSION if this artifact is legitimate",
            )


def _free_or_ours(path: Path) -> bool:
    """Nothing at ``path``, or a real folder we made (see ``private_folder``)."""
    return private_folder(path) is not False


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
