"""Advisory file locks that several processes on one node agree on.

``fcntl.flock`` rather than the ``filelock`` package because we need shared
(reader) locks as well as exclusive ones: builds and pulls hold a store
shared while ``prune`` needs it alone.  The kernel drops a flock when its
holder dies (even by SIGKILL), so a crashed process never leaves a stale lock.

Every lock is a regular file opened read-write: NFS turns a flock into a POSIX
record lock, which refuses ``LOCK_EX`` on a descriptor opened read-only (so a
directory cannot be locked itself).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _open_lock_file(path: str | os.PathLike[str]) -> int:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)


@contextmanager
def file_lock(
    path: str | os.PathLike[str], *, shared: bool = False, blocking: bool = True
) -> Iterator[bool]:
    """Hold a flock on ``path`` (created if missing) for the ``with`` body.

    Yields True once held; with ``blocking=False`` yields False at once when
    another holder has it (the body then runs without the lock).
    """
    fd = _open_lock_file(path)
    flags = (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | (0 if blocking else fcntl.LOCK_NB)
    try:
        try:
            fcntl.flock(fd, flags)
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def same_file(fd: int, path: str | os.PathLike[str], *, follow: bool = True) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a lock file someone removed
    or replaced meanwhile does not); ``follow=False`` looks at a link itself."""
    try:
        current = os.stat(path) if follow else os.lstat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (current.st_dev, current.st_ino) == (held.st_dev, held.st_ino)


@contextmanager
def directory_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Create (if needed, mode 0700) the directory ``path`` and hold it exclusively.

    The lock is the file ``<path>.lock`` beside it (a directory cannot be locked
    itself on NFS), removed on release.  After waiting, the lock file is checked to
    still be the one we locked: a previous holder unlinks it on its way out, and a
    waiter holding the old inode must not believe it holds the new one.  A link is
    never followed, neither at ``path`` nor at the lock file.
    """
    lock = Path(f"{os.fspath(path)}.lock")
    while True:
        fd = _open_lock_file(lock)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if same_file(fd, lock):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise NotADirectoryError(
                errno.ENOTDIR, "not a directory (a link is never followed)", os.fspath(path)
            )
        yield
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(lock)  # still held: no one can have locked this inode since
        os.close(fd)


def held_elsewhere(path: str | os.PathLike[str]) -> bool:
    """Whether some process holds the lock file ``path`` now; looks without creating it."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NOFOLLOW)
    except (FileNotFoundError, OSError):
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases the lock we may just have taken
    return False
