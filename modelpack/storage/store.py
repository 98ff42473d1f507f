"""A local OCI image layout: the embedded default store, and any ``oci:DIR``.

Layout (image-spec image-layout.md): ``oci-layout``, ``index.json`` whose
manifest descriptors carry ``org.opencontainers.image.ref.name``, and
``blobs/<alg>/<hex>``.  skopeo, oras and crane read it as it is.

Safety: blobs are written under ``ingest/`` and renamed into place after
their digest is checked, so a blob path always holds the right bytes;
``index.json`` is replaced atomically under an exclusive lock, so a crash
leaves the previous index; ``prune`` takes the store exclusively while
builds and pulls hold it shared, so it never deletes a blob in flight.

A published blob is sealed (``_seals``: inode, size, mtime in ``.seals/``):
a blob whose seal no longer matches was written to through a hardlink (a
model tree, a built source file) and is neither reused nor served; a pull
fetches it again, a push names the changed file.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..errors import BlobNotFoundError, IntegrityError, ReferenceNotFoundError, StoreError
from ..oci.digests import VerifyingReader, new_hasher, parse_digest, sha256_file
from ..oci.limits import MAX_MANIFEST_BYTES
from ..oci.spec import (
    ANNOTATION_REF_NAME,
    MANIFEST_MEDIA_TYPES,
    MEDIA_TYPE_OCI_INDEX,
    Descriptor,
    canonical_json,
    manifest_successors,
    parse_document,
    referrer_artifact_type,
)
from ..oci.target import Opener, fetch_bytes
from ..settings import Settings
from ._fsutil import Placement, atomic_write_bytes, place_file, require_local_disk
from ._locks import file_lock
from ._seals import BlobSeal, Seal, changed_blob_error
from .diskspace import disk_full_errors, held_bytes, missing_bytes, require_space
from .partial import fill_partial

OCI_LAYOUT = {"imageLayoutVersion": "1.0.0"}
# On untagged index.json entries: the digest a referrer (signature, SBOM) is about.
ANNOTATION_SUBJECT = "io.modelpack.subject"


@dataclass(frozen=True)
class StoredRef:
    name: str
    descriptor: Descriptor


class BlobWriter:
    """Write a new blob while hashing it; ``commit`` verifies and publishes it."""

    def __init__(self, store: LayoutStore, algorithm: str = "sha256") -> None:
        self._store = store
        fd, tmp = tempfile.mkstemp(prefix="blob-", dir=store.ingest_dir)
        self._file = os.fdopen(fd, "wb")
        self._tmp = Path(tmp)
        self._hasher = new_hasher(f"{algorithm}:")
        self.size = 0

    def write(self, data: bytes) -> int:
        with disk_full_errors(self._store.root, "a blob"):
            self._file.write(data)
        self._hasher.update(data)
        self.size += len(data)
        return len(data)

    @property
    def digest(self) -> str:
        return f"{self._hasher.name}:{self._hasher.hexdigest()}"

    def commit(self, expected_digest: str | None = None) -> str:
        """Publish the blob under its digest and return that digest."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        digest = self.digest
        if expected_digest is not None and digest != expected_digest:
            self.discard()
            raise IntegrityError(f"blob digest mismatch: expected {expected_digest}, got {digest}")
        with self._store.blob_lock(digest):
            self._store._publish(self._tmp, digest)
        return digest

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._tmp.unlink()

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # noqa: ANN001
        if exc_type is not None or not self._file.closed:
            self.discard()


class LayoutStore:
    """An OCI image layout directory implementing :class:`~modelpack.oci.target.Target`."""

    def __init__(self, root: str | os.PathLike[str], *, create: bool = True) -> None:
        self.root = Path(root)
        self._device: int | None = None
        # Seal blobs we write, and hash (then seal) unsealed ones before reusing them;
        # a layout opened only to read from is left as it is (its reader verifies).
        self._sealing = create
        if create:
            self._initialise()
        elif not (self.root / "oci-layout").is_file():
            raise ReferenceNotFoundError(
                f"{self.root} is not an OCI image layout (no oci-layout file)"
            )

    # -- layout files -------------------------------------------------------

    @property
    def blobs_dir(self) -> Path:
        return self.root / "blobs"

    @property
    def ingest_dir(self) -> Path:
        return self.root / "ingest"

    @property
    def index_path(self) -> Path:
        return self.root / "index.json"

    def _initialise(self) -> None:
        try:
            self.blobs_dir.joinpath("sha256").mkdir(parents=True, exist_ok=True)
            self.ingest_dir.mkdir(parents=True, exist_ok=True)
            if not (self.root / "oci-layout").exists():
                atomic_write_bytes(self.root / "oci-layout", canonical_json(OCI_LAYOUT))
            if not self.index_path.exists():
                with file_lock(self.root / ".index.lock"):
                    if not self.index_path.exists():
                        self._write_index([])
        except PermissionError as exc:
            raise StoreError(
                f"cannot write the local store at {self.root}: permission denied",
                hint="set MODELPACK_HOME or --home to a writable directory",
            ) from exc

    def blob_path(self, digest: str) -> Path:
        alg, hexpart = parse_digest(digest)
        return self.blobs_dir / alg / hexpart

    @property
    def seals_dir(self) -> Path:
        return self.root / ".seals"

    def _seal_path(self, digest: str) -> Path:
        alg, hexpart = parse_digest(digest)
        return self.seals_dir / alg / hexpart

    def _unchanged(self, digest: str, st: os.stat_result) -> bool:
        """Whether the blob file ``st`` describes still holds what was verified."""
        record = BlobSeal.read(self._seal_path(digest))
        if record is not None:
            return record.seal == Seal.from_stat(st)
        if not self._sealing:
            return True
        # Stored before seals existed (or by another tool): hash it once, then seal it.
        path = self.blob_path(digest)
        if not digest.startswith("sha256:") or sha256_file(str(path))[0] != digest:
            return False
        if Seal.of(path) == Seal.from_stat(st):
            with contextlib.suppress(OSError):  # a store we may read but not write
                BlobSeal(Seal.from_stat(st)).write(self._seal_path(digest))
        return True

    def _changed_error(self, digest: str) -> IntegrityError:
        record = BlobSeal.read(self._seal_path(digest))
        return changed_blob_error(digest, self.blob_path(digest), record and record.origin)

    def partial_bytes(self) -> int:
        """Bytes of interrupted downloads waiting in ``ingest/`` to be resumed."""
        total = 0
        for path in self.ingest_dir.glob("partial-*"):
            with contextlib.suppress(OSError):
                total += held_bytes(path)
        return total

    def changed_blobs(self) -> list[IntegrityError]:
        """Every sealed blob whose file no longer matches its seal, as the error a reuse
        would raise (it names the edited source file where build linked one).  Read-only."""
        changed = []
        for seal_file in sorted(self.seals_dir.glob("*/*")):
            digest = f"{seal_file.parent.name}:{seal_file.name}"
            record = BlobSeal.read(seal_file)
            try:
                st = os.lstat(self.blob_path(digest))
            except (OSError, ValueError):
                continue  # pruned, or not a digest: nothing to reuse
            if record is not None and record.seal != Seal.from_stat(st):
                changed.append(self._changed_error(digest))
        return changed

    def intact_path(self, desc: Descriptor) -> Path | None:
        """The blob's path if it is present and unchanged since it was verified."""
        return self.blob_path(desc.digest) if self._intact(desc) else None

    # -- locks --------------------------------------------------------------

    def using(self) -> contextlib.AbstractContextManager[None]:
        """Hold while writing blobs that are not yet referenced by the index."""
        return file_lock(self.root / ".gc.lock", shared=True)

    def exclusively(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(self.root / ".gc.lock", shared=False)

    # -- index --------------------------------------------------------------

    def _read_index(self) -> list[dict]:
        try:
            document = parse_document(self.index_path.read_bytes(), str(self.index_path))
            manifests = document.get("manifests") or []
            if not isinstance(manifests, list) or not all(isinstance(m, dict) for m in manifests):
                raise IntegrityError(f"{self.index_path}: 'manifests' is not a list of objects")
        except FileNotFoundError:
            return []
        except (OSError, IntegrityError) as exc:
            raise StoreError(
                f"{self.index_path} is unreadable: {exc}",
                hint="restore it, or remove the store directory and pull again",
            ) from exc
        return manifests

    def _write_index(self, manifests: list[dict]) -> None:
        document = {"schemaVersion": 2, "mediaType": MEDIA_TYPE_OCI_INDEX, "manifests": manifests}
        atomic_write_bytes(self.index_path, json.dumps(document, indent=2).encode() + b"\n")

    def refs(self) -> list[StoredRef]:
        out = []
        for entry in self._read_index():
            desc = Descriptor.from_dict(entry)
            if name := desc.annotations.get(ANNOTATION_REF_NAME):
                out.append(StoredRef(name=name, descriptor=desc))
        return sorted(out, key=lambda r: r.name)

    # -- Target -------------------------------------------------------------

    def describe(self) -> str:
        return f"local store {self.root}"

    def resolve(self, reference: str) -> Descriptor:
        for entry in self._read_index():
            desc = Descriptor.from_dict(entry)
            if reference in (desc.annotations.get(ANNOTATION_REF_NAME), desc.digest):
                return _strip_ref_name(desc)
        if reference.startswith("sha256:") and self.blob_path(reference).is_file():
            return self._describe_manifest_blob(reference)
        raise ReferenceNotFoundError(
            f"{reference} is not in the {self.describe()}",
            hint="`modelpack ls` lists what is there; build or pull it first",
        )

    def _describe_manifest_blob(self, digest: str) -> Descriptor:
        path = self.blob_path(digest)
        size = path.stat().st_size
        if size > MAX_MANIFEST_BYTES:
            raise IntegrityError(f"{digest} in {self.describe()} is too large to be a manifest")
        media_type = parse_document(path.read_bytes(), f"{digest} in {self.describe()}").get(
            "mediaType"
        )
        if not isinstance(media_type, str) or media_type not in MANIFEST_MEDIA_TYPES:
            raise IntegrityError(f"{digest} in {self.describe()} is not a manifest")
        return Descriptor(media_type=media_type, digest=digest, size=size)

    def exists(self, desc: Descriptor) -> bool:
        """Present, of the right size, and unchanged since verified (a changed blob
        is absent for a copy, which fetches it again).  A copy skips what is below a
        manifest it finds, so a manifest exists only while every blob below it does."""
        if not self._intact(desc):
            return False
        if desc.media_type not in MANIFEST_MEDIA_TYPES:
            return True
        return all(self.exists(child) for child in self._successors(desc))

    def _intact(self, desc: Descriptor) -> bool:
        try:
            st = self.blob_path(desc.digest).stat()
        except FileNotFoundError:
            return False
        return st.st_size == desc.size and self._unchanged(desc.digest, st)

    def _successors(self, desc: Descriptor) -> list[Descriptor]:
        what = f"manifest {desc.digest} in {self.describe()}"
        return manifest_successors(
            desc.media_type, parse_document(fetch_bytes(self, desc), what), what
        )

    @contextlib.contextmanager
    def fetch(self, desc: Descriptor) -> Iterator[BinaryIO]:
        try:
            f = open(self.blob_path(desc.digest), "rb")  # noqa: SIM115 - yielded
        except FileNotFoundError:
            raise BlobNotFoundError(
                f"blob {desc.digest} is missing from the {self.describe()}"
            ) from None
        with f:
            if not self._unchanged(desc.digest, os.fstat(f.fileno())):
                raise self._changed_error(desc.digest)
            yield f

    @contextlib.contextmanager
    def fetch_from(self, desc: Descriptor, offset: int) -> Iterator[BinaryIO]:
        with self.fetch(desc) as f:
            f.seek(offset)
            yield f

    def push(self, desc: Descriptor, content: BinaryIO, reference: str | None = None) -> None:
        if not self.exists(desc):
            reader = VerifyingReader(content, desc.digest, desc.size, f"blob {desc.digest}")
            with self.writer(desc.digest.split(":", 1)[0]) as writer:
                for chunk in reader.chunks():
                    writer.write(chunk)
                reader.verify()
                writer.commit(desc.digest)
        if desc.media_type in MANIFEST_MEDIA_TYPES:
            self._index_if_referrer(desc)
        if reference is not None:
            self.tag(desc, reference)

    def push_resumable(self, desc: Descriptor, opener: Opener) -> None:
        """Download a blob into ``ingest/``, continuing a partial file left by an
        interrupted attempt (this process or an earlier one).  One process at a
        time per blob: the others wait, then find it present."""
        with self.blob_lock(desc.digest):
            if self.exists(desc):
                return
            with disk_full_errors(self.root, f"blob {desc.digest}"):
                fill_partial(self._partial_path(desc), desc, opener, f"blob {desc.digest}")
            self._publish(self._partial_path(desc), desc.digest)

    def _partial_path(self, desc: Descriptor) -> Path:
        alg, hexpart = parse_digest(desc.digest)
        return self.ingest_dir / f"partial-{alg}-{hexpart}"

    def partial_path(self, desc: Descriptor) -> Path:
        """Where a download of ``desc`` in progress (or interrupted) keeps its bytes;
        readers may follow it, but only ``blob_path`` holds verified content."""
        return self._partial_path(desc)

    def require_space(self, blobs: list[Descriptor]) -> None:
        """Refuse a pull that cannot fit before a byte is written (GraphCopier asks)."""
        needed = missing_bytes(blobs, self._partial_path)
        require_space(self.root, needed, f"{len(blobs)} blobs")

    def tag(self, desc: Descriptor, reference: str) -> None:
        if desc.media_type not in MANIFEST_MEDIA_TYPES:
            raise StoreError(f"cannot tag {desc.digest}: {desc.media_type!r} is not a manifest")
        if not self.exists(desc):
            raise BlobNotFoundError(f"cannot tag {desc.digest}: not in the {self.describe()}")
        entry = Descriptor(
            media_type=desc.media_type,
            digest=desc.digest,
            size=desc.size,
            artifact_type=desc.artifact_type,
            annotations={**desc.annotations, ANNOTATION_REF_NAME: reference},
        ).to_dict()
        with file_lock(self.root / ".index.lock"):
            manifests = [
                m
                for m in self._read_index()
                if (m.get("annotations") or {}).get(ANNOTATION_REF_NAME) != reference
            ]
            manifests.append(entry)
            self._write_index(manifests)

    # -- referrers ----------------------------------------------------------

    def _index_if_referrer(self, desc: Descriptor) -> None:
        """Keep a manifest that names a ``subject`` in index.json (untagged), so it
        is found by :meth:`referrers` and survives prune while its subject lives."""
        what = f"manifest {desc.digest}"
        document = parse_document(fetch_bytes(self, desc), what)
        if not document.get("subject"):
            return
        subject = Descriptor.from_dict(document["subject"], what)
        annotations = document.get("annotations")
        entry = Descriptor(
            media_type=desc.media_type,
            digest=desc.digest,
            size=desc.size,
            artifact_type=referrer_artifact_type(document),
            annotations={
                **(
                    {str(k): str(v) for k, v in annotations.items()}
                    if isinstance(annotations, dict)
                    else {}
                ),
                ANNOTATION_SUBJECT: subject.digest,
            },
        ).to_dict()
        with file_lock(self.root / ".index.lock"):
            manifests = self._read_index()
            if any(m.get("digest") == desc.digest and not _ref_name(m) for m in manifests):
                return
            manifests.append(entry)
            self._write_index(manifests)

    def referrers(self, subject: Descriptor, artifact_type: str | None = None) -> list[Descriptor]:
        found = []
        for entry in self._read_index():
            annotations = entry.get("annotations") or {}
            if annotations.get(ANNOTATION_SUBJECT) != subject.digest or _ref_name(entry):
                continue
            desc = Descriptor.from_dict(entry)
            desc = Descriptor(
                media_type=desc.media_type,
                digest=desc.digest,
                size=desc.size,
                artifact_type=desc.artifact_type,
                annotations={k: v for k, v in desc.annotations.items() if k != ANNOTATION_SUBJECT},
            )
            if artifact_type is None or desc.artifact_type == artifact_type:
                found.append(desc)
        return found

    # -- writing blobs ------------------------------------------------------

    def writer(self, algorithm: str = "sha256") -> BlobWriter:
        self.ingest_dir.mkdir(parents=True, exist_ok=True)
        return BlobWriter(self, algorithm)

    def blob_lock(self, digest: str) -> contextlib.AbstractContextManager[bool]:
        """Held while one blob is downloaded or published: one writer per blob."""
        alg, hexpart = parse_digest(digest)
        return file_lock(self.ingest_dir / f"{alg}-{hexpart}.lock")

    def _publish(
        self, tmp: Path, digest: str, *, origin: str | None = None, read_only: bool = True
    ) -> None:
        """Under :meth:`blob_lock`: move a verified ``tmp`` to its digest, sealed."""
        final = self.blob_path(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        if read_only:
            os.chmod(tmp, 0o444)  # blobs are immutable; read-only marks them as ours
        with contextlib.suppress(FileNotFoundError):
            if self._unchanged(digest, final.stat()):
                tmp.unlink()  # published meanwhile: keep the inode trees already link
                return
        # The seal first, then the rename (which keeps inode and mtime): a reader never
        # finds the new blob under an old seal.
        BlobSeal(Seal.of(tmp), origin).write(self._seal_path(digest))
        os.replace(tmp, final)

    def ingest_file(self, path: Path, digest: str, size: int) -> Placement | None:
        """Place an already-hashed source file as a blob without rewriting its bytes.

        Returns None when the blob was already present.  A hardlink shares the
        inode with the user's file: its seal names that file, so an edit to it
        later is refused by name before the blob is pushed or linked.
        """
        with self.blob_lock(digest):
            if self.exists(Descriptor(media_type="", digest=digest, size=size)):
                return None
            tmp = self.ingest_dir / f"link-{uuid.uuid4().hex}"
            placement = place_file(path, tmp, allow_hardlink=True)
            shared = placement is Placement.HARDLINK
            self._publish(
                tmp, digest, origin=str(path.resolve()) if shared else None, read_only=not shared
            )
        return placement

    def shares_filesystem_with(self, path: Path) -> bool:
        if self._device is None:
            self._device = os.stat(self.blobs_dir).st_dev
        try:
            return os.stat(path).st_dev == self._device
        except OSError:
            return False

    # -- removal ------------------------------------------------------------

    def untag(self, reference: str) -> Descriptor:
        with file_lock(self.root / ".index.lock"):
            manifests = self._read_index()
            kept = [
                m
                for m in manifests
                if (m.get("annotations") or {}).get(ANNOTATION_REF_NAME) != reference
            ]
            if len(kept) == len(manifests):
                raise ReferenceNotFoundError(f"{reference} is not in the {self.describe()}")
            removed = next(m for m in manifests if m not in kept)
            self._write_index(kept)
        return _strip_ref_name(Descriptor.from_dict(removed))

    def _walk(self, roots: list[Descriptor], seen: set[str]) -> None:
        pending = list(roots)
        while pending:
            desc = pending.pop()
            if desc.digest in seen or not self._intact(desc):
                continue  # a changed blob is not kept: a pull fetches it again
            seen.add(desc.digest)
            if desc.media_type in MANIFEST_MEDIA_TYPES:
                pending.extend(self._successors(desc))

    def _live_entries(self, manifests: list[dict]) -> tuple[list[dict], set[str]]:
        """Index entries still wanted and every digest they reach: tagged
        manifests, and referrers (recursively) of anything reached."""
        seen: set[str] = set()
        live = [m for m in manifests if _ref_name(m)]
        self._walk([Descriptor.from_dict(m) for m in live], seen)
        referrers = [m for m in manifests if not _ref_name(m)]
        changed = True
        while changed:
            changed = False
            for entry in list(referrers):
                if (entry.get("annotations") or {}).get(ANNOTATION_SUBJECT) in seen:
                    referrers.remove(entry)
                    live.append(entry)
                    self._walk([Descriptor.from_dict(entry)], seen)
                    changed = True
        return live, seen

    def reachable(self) -> set[str]:
        """Digests of every blob a tag (or a referrer of what a tag reaches) needs."""
        return self._live_entries(self._read_index())[1]

    def prune(self) -> tuple[int, int]:
        """Delete unreferenced blobs and abandoned ingest files; (count, bytes) freed."""
        removed = freed = 0
        with self.exclusively():
            with file_lock(self.root / ".index.lock"):
                manifests = self._read_index()
                live, keep = self._live_entries(manifests)
                if len(live) != len(manifests):  # referrers whose subject is gone
                    self._write_index(live)
                # Left by writers killed mid-write (they hold this lock while writing).
                for stale in self.root.glob(f".{self.index_path.name}.*.tmp"):
                    stale.unlink()
            for alg_dir in self.blobs_dir.iterdir():
                for blob in alg_dir.iterdir():
                    if f"{alg_dir.name}:{blob.name}" in keep:
                        continue
                    freed += blob.stat().st_size
                    blob.unlink()
                    removed += 1
            for seal in self.seals_dir.glob("*/*"):
                if f"{seal.parent.name}:{seal.name}" not in keep:
                    seal.unlink()
            for leftover in self.ingest_dir.iterdir():
                freed += leftover.stat().st_size
                leftover.unlink()
                removed += 1
        return removed, freed


def node_store(settings: Settings) -> LayoutStore:
    """This node's store (MODELPACK_HOME/store); refused on a network filesystem."""
    require_local_disk(settings.home, "MODELPACK_HOME")
    return LayoutStore(settings.store_dir)


def _ref_name(entry: dict) -> str | None:
    return (entry.get("annotations") or {}).get(ANNOTATION_REF_NAME)


def _strip_ref_name(desc: Descriptor) -> Descriptor:
    annotations = {k: v for k, v in desc.annotations.items() if k != ANNOTATION_REF_NAME}
    return Descriptor(
        media_type=desc.media_type,
        digest=desc.digest,
        size=desc.size,
        annotations=annotations,
        artifact_type=desc.artifact_type,
    )
