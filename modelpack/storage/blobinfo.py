"""Where we have seen each blob: the memory that makes cross-repository mounts possible.

After a push to, or a pull from, ``registry/repository`` we note that its
blobs live there.  A later push of the same blobs to another repository of
that registry asks it to mount them instead of sending the bytes again (as
containers/image's blob info cache does for skopeo).  SQLite, because
several processes on a node write it at once.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterable
from pathlib import Path

from ._sqlite import connect

_SCHEMA = """
CREATE TABLE IF NOT EXISTS blob_locations (
    digest TEXT NOT NULL,
    registry TEXT NOT NULL,
    repository TEXT NOT NULL,
    seen REAL NOT NULL,
    PRIMARY KEY (digest, registry, repository)
)
"""
MAX_CANDIDATES = 3


class BlobLocations:
    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self):  # noqa: ANN202 - a context manager of sqlite3.Connection
        return connect(self.path, _SCHEMA)

    def record(self, registry: str, repository: str, digests: Iterable[str]) -> None:
        now = time.time()
        rows = [(d, registry, repository, now) for d in digests]
        with contextlib.suppress(sqlite3.Error), self._connect() as db:
            db.executemany("INSERT OR REPLACE INTO blob_locations VALUES (?, ?, ?, ?)", rows)

    def repositories(self, digest: str, registry: str, exclude: str) -> list[str]:
        """Repositories of ``registry`` known to hold ``digest``, most recent first."""
        try:
            with self._connect() as db:
                rows = db.execute(
                    "SELECT repository FROM blob_locations WHERE digest = ? AND registry = ? "
                    "AND repository != ? ORDER BY seen DESC LIMIT ?",
                    (digest, registry, exclude, MAX_CANDIDATES),
                ).fetchall()
        except sqlite3.Error:
            return []
        return [row[0] for row in rows]

    def forget(self, digest: str, registry: str, repository: str) -> None:
        with contextlib.suppress(sqlite3.Error), self._connect() as db:
            db.execute(
                "DELETE FROM blob_locations WHERE digest = ? AND registry = ? AND repository = ?",
                (digest, registry, repository),
            )
