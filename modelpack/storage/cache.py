"""The node cache: one copy of each model on a node, shared safely by every process.

Under MODELPACK_HOME:

    store/                  OCI layout: content-addressed blobs shared by all models,
                            manifests, refs (index.json), partial downloads (ingest/)
    models/sha256/<hex>/    a materialized model tree per manifest digest: raw layers
                            hardlinked to their verified, read-only blobs, tar layers
                            extracted; partial pulls get <hex>+<patterns-hash>
    models/.locks/          one flock per tree: held while it is made, shared by users
    cache.sqlite            last use of each tree and reference, for `cache ls` / LRU prune

A tree is built in a staging directory and renamed into place, so a reader
sees a complete model or none.  Concurrent pullers serialize on per-blob and
per-tree flocks, which the kernel releases when a holder dies (even by
SIGKILL): no stale lock outlives its process.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ..oci.copy import CopyOptions, copy_graph
from ..oci.spec import Descriptor
from ..oci.target import Target
from ..settings import Settings
from ._fsutil import remove_tree
from ._locks import file_lock
from ._sqlite import connect
from .store import LayoutStore
from .unpack import DirectoryTarget

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


class ManifestOverlay:
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

    def push(self, desc: Descriptor, content: BinaryIO, reference: str | None = None) -> None:
        raise NotImplementedError

    def tag(self, desc: Descriptor, reference: str) -> None:
        raise NotImplementedError


class NodeCache:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = LayoutStore(settings.store_dir)
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

    def tree_lock(self, name: str, *, shared: bool = False) -> AbstractContextManager[None]:
        """Held exclusively while a tree is made or removed; shared while it is in use."""
        return file_lock(self._lock_path(name), shared=shared)

    def _try_exclusive(self, name: str) -> int | None:
        """The tree's lock if nobody holds it (for prune), else None."""
        path = self._lock_path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

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
        """The model tree of ``root`` (its blobs already in the store), made once."""
        patterns = list(patterns)
        name = self.tree_name(root.digest, patterns)
        destination = self.tree_path(root.digest, patterns)
        with self.store.using(), self.tree_lock(name):
            if destination.is_dir():
                files = sorted(
                    p.relative_to(destination).as_posix()
                    for p in destination.rglob("*")
                    if p.is_file()
                )
            else:
                src: Target = self.store if source is None else ManifestOverlay(source, self.store)
                with DirectoryTarget(destination, link_from=self.store, durable=True) as directory:
                    copy_graph(
                        src,
                        root.digest,
                        directory,
                        None,
                        CopyOptions(
                            concurrency=self.settings.concurrency, layer_filter=layer_filter
                        ),
                    )
                files = directory.files
            self.record_use(name, root.digest, reference, destination)
        return destination, sorted(files)

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

    def _drop_tree(self, entry: CacheEntry) -> bool:
        name = entry.path.name
        fd = self._try_exclusive(name)
        if fd is None:
            return False  # being made or in use
        try:
            remove_tree(entry.path)
            with self._db() as db:
                db.execute("DELETE FROM trees WHERE name = ?", (name,))
        finally:
            os.close(fd)
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
                if self._drop_tree(entry):
                    removed.append(entry)
                digest = digest or entry.digest
        if digest:
            self._untag_digest(digest)
        self.store.prune()
        return removed

    def prune_untagged(self) -> tuple[int, int]:
        """Remove trees whose manifest no store tag names (and are not in use); (count, bytes)."""
        tagged = {r.descriptor.digest for r in self.store.refs()}
        removed = freed = 0
        for alg_dir in self.models_dir.glob("sha*"):
            for tree in alg_dir.iterdir():
                digest = f"{alg_dir.name}:{tree.name.split('+', 1)[0]}"
                if digest in tagged or not tree.is_dir():
                    continue
                size = _tree_size(tree)
                entry = CacheEntry("", digest, tree, size, 0.0, "+" in tree.name)
                if self._drop_tree(entry):
                    removed += 1
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
            if not self._drop_tree(entry):
                busy.append(entry)
                continue
            removed.append(entry)
            remaining = {e.digest for e in self.entries()}
            if entry.digest not in remaining:
                self._untag_digest(entry.digest)
            self.store.prune()
            current = self.size()
        return removed, busy, current


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
