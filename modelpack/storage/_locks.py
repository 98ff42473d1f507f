"""Advisory file locks that several processes on one node agree on.

``fcntl.flock`` rather than the ``filelock`` package because we need shared
(reader) locks as well as exclusive ones: builds and pulls hold a store
shared while ``prune`` needs it alone.  The kernel drops a flock when its
holder dies (even by SIGKILL), so a crashed process never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
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


@contextmanager
def directory_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Create (if needed, mode 0700) and exclusively lock the directory ``path`` itself.

    No lock file is left behind.  A link at ``path`` is never followed (the
    open fails).  After waiting, the path is checked to still be the directory
    we locked: a previous holder may have renamed it away (a finished pull
    moves its staging directory into place).
    """
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    while True:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.lstat(path)
            except FileNotFoundError:
                current = None
            locked = os.fstat(fd)
            if current is not None and (current.st_dev, current.st_ino) == (
                locked.st_dev,
                locked.st_ino,
            ):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        yield
    finally:
        os.close(fd)
