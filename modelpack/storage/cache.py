"""The node cache: one copy of each model on a node, shared safely by every process.

Under MODELPACK_HOME:

    store/                  OCI layout: content-addressed blobs shared by all models,
                            manifests, refs (index.json), partial downloads (ingest/)
    models/sha256/<hex>/    a materialized model tree per manifest digest: raw layers
                            hardlinked to their verified, read-only blobs, tar layers
                            extracted; partial pulls get <hex>+<patterns-hash>
    models/.locks/          one flock per tree: held while it (or its staging) is made or
                            removed, shared by users
    models/.complete/       one marker per tree, written last: its files and their seals
    cache.sqlite            last use of each tree and reference, for `cache ls` / LRU prune

A tree is built in a staging directory, renamed into place, then marked
complete; it is reused only while its marker lists exactly its files and each
still matches its seal (``_seals``), else it is rebuilt.  So a tree half
built, half removed, or written to after the pull is never handed out.
Removal (prune, ``cache rm``) takes the tree's lock without waiting, drops
the marker first, then the tree and any staging left by a dead puller.
Concurrent pullers serialize on per-blob and per-tree flocks, which the
kernel releases when a holder dies (even by SIGKILL): no stale lock outlives
its process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..oci.copy import CopyOptions, copy_graph
from ..oci.pieces import RangedPolicy
from ..oci.spec import Descriptor
from ..oci.target import ReadOnlyTarget, Target
from ..settings import Settings
from ._fsutil import atomic_write_bytes, remove_tree
from ._locks import file_lock
from ._seals import Seal
from ._sqlite import connect
from .store import LayoutStore, node_store
from .unpack import STAGING_PREFIX, DirectoryTarget

_SCHEMA = """
CREATE TABLE IF NOT EXISTS trees (
    name TEXT PRIMARY KEY,       -- directory under models/<alg>/
    digest TEXT NOT NULL,
    reference TEXT NOT NULL,
    size INTEGER NOT NULL,
    last_used REAL NOT NULL
)
"""


def include_key(patterns: Iterable[str]) -> str:
    """A stable short name for a set of --include patterns."""
    joined = "\n".join(sorted(set(patterns)))
    return hashlib.sha256(joined.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class CacheEntry:
    """One model tree in the node cache: its path, size and last use; ``partial`` when only
    some of its files were pulled (``include`` globs)."""

    reference: str
    digest: str
    path: Path
    size: int
    last_used: float
    partial: bool

    def to_dict(self) -> dict[str, object]:
        return {
            "reference": self.reference,
            "digest": self.digest,
            "path": str(self.path),
            "size": self.size,
            "lastUsed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_used)),
            "partial": self.partial,
        }


class ManifestOverlay(ReadOnlyTarget):
    """Manifests from one target (already fetched), blobs from another: lets a
    partial pull materialize from the store without the store holding an
    incomplete manifest."""

    def __init__(self, manifests: Target, blobs: LayoutStore) -> None:
        self.manifests, self.blobs = manifests, blobs

    def describe(self) -> str:
        return self.blobs.describe()

    def resolve(self, reference: str) -> Descriptor:
        return self.manifests.resolve(reference)

    def exists(self, desc: Descriptor) -> bool:
        return self.blobs.exists(desc) or self.manifests.exists(desc)

    def fetch(self, desc: Descriptor) -> AbstractContextManager[BinaryIO]:
        return self.blobs.fetch(desc) if self.blobs.exists(desc) else self.manifests.fetch(desc)


class NodeCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = node_store(settings)
        self.models_dir = settings.models_dir
        self.db_path = settings.home / "cache.sqlite"

    # -- paths and locks ----------------------------------------------------

    def tree_name(self, digest: str, patterns: Iterable[str] = ()) -> str:
        patterns = list(patterns)
        hexpart = digest.split(":", 1)[1]
        return f"{hexpart}+{include_key(patterns)}" if patterns else hexpart

    def tree_path(self, digest: str, patterns: Iterable[str] = ()) -> Path:
        return self.models_dir / digest.split(":", 1)[0] / self.tree_name(digest, patterns)

    def _lock_path(self, name: str) -> Path:
        return self.models_dir / ".locks" / f"{name}.lock"

    def tree_lock(
        self, name: str, *, shared: bool = False, blocking: bool = True
    ) -> AbstractContextManager[bool]:
        """Held exclusively while a tree (or its staging) is made or removed; shared
        while it is in use."""
        return file_lock(self._lock_path(name), shared=shared, blocking=blocking)

    def _marker_path(self, name: str) -> Path:
        return self.models_dir / ".complete" / f"{name}.json"

    # -- completeness -------------------------------------------------------

    def _intact_files(self, name: str, tree: Path) -> list[str] | None:
        """The tree's files if it was completed and none changed since; else None."""
        seals = self._intact_seals(name, tree)
        return None if seals is None else sorted(seals)

    def _intact_seals(self, name: str, tree: Path) -> dict[str, Seal] | None:
        """Each file of the tree and its seal, if it was completed and none changed since."""
        try:
            record = json.loads(self._marker_path(name).read_bytes())["files"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(record, dict) or set(_regular_files(tree)) != set(record):
            return None
        seals = {}
        for relpath, value in record.items():
            seal = Seal.from_list(value)
            if seal is None or not seal.matches(tree / relpath):
                return None
            seals[relpath] = seal
        return seals

    def _mark_complete(self, name: str, tree: Path, files: list[str]) -> None:
        seals = {relpath: Seal.of(tree / relpath).to_list() for relpath in files}
        atomic_write_bytes(self._marker_path(name), json.dumps({"files": seals}).encode())

    def ready(self, digest: str, patterns: Iterable[str] = ()) -> Path | None:
        """The tree of ``digest`` if it is complete and unchanged, else None."""
        patterns = list(patterns)
        tree = self.tree_path(digest, patterns)
        return tree if self._intact_files(self.tree_name(digest, patterns), tree) else None

    def ready_seals(self, digest: str) -> tuple[Path, dict[str, Seal]] | None:
        """``ready``'s whole tree of ``digest`` with each file's seal: a reader that keeps
        them checks the one file it reads (``Seal.matches``, one lstat) instead of the
        whole tree every time."""
        tree = self.tree_path(digest)
        seals = self._intact_seals(self.tree_name(digest), tree)
        return None if seals is None else (tree, seals)

    def _discard(self, name: str, tree: Path) -> None:
        """Under the tree's exclusive lock: the marker first, then the tree and any
        staging (its owner held this lock, so it is gone)."""
        with contextlib.suppress(FileNotFoundError):
            self._marker_path(name).unlink()
        remove_tree(tree)
        self._discard_staging(tree)

    def _discard_staging(self, tree: Path) -> None:
        staging = tree.with_name(f"{STAGING_PREFIX}{tree.name}")
        remove_tree(staging)
        with contextlib.suppress(FileNotFoundError):
            staging.with_name(f"{staging.name}.lock").unlink()

    # -- usage index --------------------------------------------------------

    def _db(self):  # noqa: ANN202 - a context manager of sqlite3.Connection
        return connect(self.db_path, _SCHEMA)

    def record_use(self, name: str, digest: str, reference: str, tree: Path) -> None:
        size = _tree_size(tree)
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO trees VALUES (?, ?, ?, ?, ?)",
                (name, digest, reference, size, time.time()),
            )

    # -- materialize --------------------------------------------------------

    def materialize(
        self,
        root: Descriptor,
        reference: str,
        *,
        source: Target | None = None,
        patterns: Iterable[str] = (),
        layer_filter=None,  # noqa: ANN001 - Callable[[Descriptor], bool] | None
    ) -> tuple[Path, list[str]]:
        """The model tree of ``root`` (its blobs already in the store), made once and
        made again when it is incomplete or was changed."""
        patterns = list(patterns)
        name = self.tree_name(root.digest, patterns)
        destination = self.tree_path(root.digest, patterns)
        with self.store.using():
            with self.tree_lock(name, shared=True):
                files = self._intact_files(name, destination)
            if files is None:
                with self.tree_lock(name):
                    files = self._intact_files(name, destination)
                    if files is None:
                        self._discard(name, destination)
                        src = self.store if source is None else ManifestOverlay(source, self.store)
                        files = self._build(src, root, destination, layer_filter)
                        self._mark_complete(name, destination, files)
            self.record_use(name, root.digest, reference, destination)
        return destination, files

    def _build(
        self,
        src: Target,
        root: Descriptor,
        destination: Path,
        layer_filter,  # noqa: ANN001 - Callable[[Descriptor], bool] | None
    ) -> list[str]:
        with DirectoryTarget(destination, link_from=self.store, durable=True) as directory:
            options = CopyOptions(
                concurrency=self.settings.concurrency,
                layer_filter=layer_filter,
                ranged=RangedPolicy.of(self.settings),
            )
            copy_graph(src, root.digest, directory, None, options)
        return sorted(directory.files)

    @contextlib.contextmanager
    def use(self, digest: str, patterns: Iterable[str] = ()) -> Iterator[Path]:
        """Hold a tree in use (prune skips it) for the ``with`` body."""
        name = self.tree_name(digest, patterns)
        with self.tree_lock(name, shared=True):
            yield self.tree_path(digest, patterns)

    # -- management ---------------------------------------------------------

    def entries(self) -> list[CacheEntry]:
        with self._db() as db:
            rows = db.execute(
                "SELECT name, digest, reference, size, last_used FROM trees ORDER BY last_used DESC"
            ).fetchall()
        out = []
        for name, digest, reference, size, last_used in rows:
            path = self.models_dir / digest.split(":", 1)[0] / name
            if path.is_dir():
                out.append(CacheEntry(reference, digest, path, size, last_used, "+" in name))
        return out

    def _drop_tree(self, tree: Path, *, staging_only: bool = False) -> bool:
        """Remove ``tree`` (or only a staging left by a dead puller) unless its lock
        is held: being made or in use."""
        name = tree.name
        with self.tree_lock(name, blocking=False) as held:
            if not held:
                return False
            if staging_only:
                self._discard_staging(tree)
                return True
            self._discard(name, tree)
            with self._db() as db:
                db.execute("DELETE FROM trees WHERE name = ?", (name,))
        return True

    def _untag_digest(self, digest: str) -> None:
        for stored in self.store.refs():
            if stored.descriptor.digest == digest:
                with contextlib.suppress(Exception):
                    self.store.untag(stored.name)

    def remove(self, reference: str) -> list[CacheEntry]:
        """Forget ``reference``: its tree(s) and store tag; blobs nobody else needs go."""
        removed = []
        digest = None
        with contextlib.suppress(Exception):
            digest = self.store.resolve(reference).digest
        for entry in self.entries():
            if entry.reference == reference or (digest and entry.digest == digest):
                if self._drop_tree(entry.path):
                    removed.append(entry)
                digest = digest or entry.digest
        if digest:
            self._untag_digest(digest)
        self.store.prune()
        return removed

    def prune_untagged(self) -> tuple[int, int]:
        """Remove trees whose manifest no store tag names, and staging left by dead
        pullers; never what a live process holds (made or in use).  (trees, bytes)."""
        tagged = {r.descriptor.digest for r in self.store.refs()}
        removed = freed = 0
        for alg_dir in self.models_dir.glob("sha*"):
            for name in sorted({_owning_tree(entry.name) for entry in alg_dir.iterdir()}):
                tree = alg_dir / name
                keep = f"{alg_dir.name}:{name.split('+', 1)[0]}" in tagged
                staging = tree.with_name(f"{STAGING_PREFIX}{name}")
                size = _unique_size([staging] if keep else [tree, staging])
                existed = tree.is_dir()
                if self._drop_tree(tree, staging_only=keep) and not keep:
                    removed += int(existed)
                    freed += size
        return removed, freed

    def size(self) -> int:
        """Bytes on disk: store blobs, partial downloads and trees, hardlinks counted once."""
        return _unique_size([self.store.root, self.models_dir])

    def prune(self, max_size: int) -> tuple[list[CacheEntry], list[CacheEntry], int]:
        """Evict least recently used trees until the cache fits ``max_size`` bytes.

        Returns (removed, kept because in use, size after).  A tree whose lock is
        held (being made, or held with :meth:`use`) is never removed.
        """
        removed: list[CacheEntry] = []
        busy: list[CacheEntry] = []
        current = self.size()
        for entry in sorted(self.entries(), key=lambda e: e.last_used):
            if current <= max_size:
                break
            if not self._drop_tree(entry.path):
                busy.append(entry)
                continue
            removed.append(entry)
            remaining = {e.digest for e in self.entries()}
            if entry.digest not in remaining:
                self._untag_digest(entry.digest)
            self.store.prune()
            current = self.size()
        return removed, busy, current


def _owning_tree(entry_name: str) -> str:
    """The tree an entry of models/<alg>/ belongs to: itself, or its staging (and lock)."""
    return entry_name.removeprefix(STAGING_PREFIX).removesuffix(".lock")


def _regular_files(tree: Path) -> list[str]:
    """Every entry but a directory (a file or link someone added counts too)."""
    return [
        Path(dirpath, filename).relative_to(tree).as_posix()
        for dirpath, _dirnames, filenames in os.walk(tree)
        for filename in filenames
    ]


def _tree_size(tree: Path) -> int:
    return _unique_size([tree])


def _unique_size(roots: list[Path]) -> int:
    seen: set[tuple[int, int]] = set()
    total = 0
    for root in roots:
        if not root.exists():
            continue
        for dirpath, _dirnames, filenames in os.walk(root):
            for filename in filenames:
                try:
                    st = os.lstat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue
                key = (st.st_dev, st.st_ino)
                if key not in seen:
                    seen.add(key)
                    total += st.st_size
    return total
