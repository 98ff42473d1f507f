"""A small SQLite file that several processes on a node read and write at once."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def connect(path: Path, schema: str) -> Iterator[sqlite3.Connection]:
    """A connection inside one transaction, with ``schema`` created if missing.

    The 60 s busy timeout lets concurrent writers queue instead of failing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    connection = sqlite3.connect(path, timeout=60)
    try:
        connection.execute(schema)
        with connection:
            yield connection
    finally:
        connection.close()
