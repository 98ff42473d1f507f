"""Advisory file locks that several processes on one node agree on.

``fcntl.flock`` rather than the ``filelock`` package because we need shared
(reader) locks as well as exclusive ones: builds and pulls hold a store
shared while ``prune`` needs it alone.  The kernel drops a flock when its
holder dies (even by SIGKILL), so a crashed process never leaves a stale lock.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | os.PathLike[str], *, shared: bool = False) -> Iterator[None]:
    """Hold a blocking flock on ``path`` (created if missing) for the ``with`` body."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock
