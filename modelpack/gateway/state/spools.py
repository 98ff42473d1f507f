"""Work folders a request fills under the node cache while it runs (a commit's spool
and staging), and the sweep that removes what a killed process left behind.

A folder in use is *claimed*: its process holds a flock on ``NAME.lock`` beside the
folder ``NAME``.  The kernel drops a flock when its holder dies, even by SIGKILL, so a
folder whose lock anyone can take belongs to no running request, and :func:`sweep`
removes it whatever its age: no guess at how long an upload may take.  Entries of
the directory that were never claimed (the spools of code that does not claim: Xet's
``xet/spool`` files, upstream's ``import-*`` folders) are removed once older than
``max_age``.  Each gateway worker sweeps ``uploads/`` when it starts
(``uploads.Uploads``); other modules may call :func:`sweep` on their own directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ...storage._locks import same_file

log = logging.getLogger("modelpack.gateway")
LOCK_SUFFIX = ".lock"
STALE_AFTER = 24 * 3600.0  # seconds: unclaimed entries older than a day are left-overs


@contextlib.contextmanager
def claimed_folder(parent: Path, prefix: str) -> Iterator[Path]:
    """A new folder ``parent/PREFIX...`` held for the ``with`` body, removed after it."""
    parent.mkdir(parents=True, exist_ok=True)
    fd, folder = _claim(parent, prefix)
    try:
        yield folder
    finally:
        with contextlib.suppress(OSError):  # the folder first: then the lock says it is done
            _remove(folder)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{folder}{LOCK_SUFFIX}")
        os.close(fd)


def _claim(parent: Path, prefix: str) -> tuple[int, Path]:
    while True:
        fd, lock = tempfile.mkstemp(prefix=prefix, suffix=LOCK_SUFFIX, dir=parent)
        fcntl.flock(fd, fcntl.LOCK_EX)  # a sweep may hold it for an instant
        folder = Path(lock.removesuffix(LOCK_SUFFIX))
        if same_file(fd, lock, follow=False):  # else a sweep took the new lock file for a left-over
            try:
                os.mkdir(folder, 0o700)
                return fd, folder
            except FileExistsError:  # an unclaimed left-over by that name: another name
                os.unlink(lock)
        os.close(fd)


def sweep(directory: Path, max_age: float = STALE_AFTER) -> list[str]:
    """Remove what no running process holds from ``directory``: claimed folders whose
    lock is free, and unclaimed entries older than ``max_age`` seconds.  The names removed."""
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as exc:  # never fatal: a worker starts anyway
        log.warning("could not look for left-overs in %s: %s", directory, exc)
        return []
    removed, now = [], time.time()
    for name in names:
        path = directory / name
        try:
            if name.endswith(LOCK_SUFFIX):
                if _sweep_claimed(path):
                    removed.append(name.removesuffix(LOCK_SUFFIX))
            elif _unclaimed(path) and now - os.lstat(path).st_mtime > max_age:
                _remove(path)
                removed.append(name)
        except OSError as exc:  # never fatal: the next sweep tries again
            log.warning("could not remove the left-over %s: %s", path, exc)
    if removed:
        log.info("removed %d left-over work folders from %s", len(removed), directory)
    return removed


def _unclaimed(path: Path) -> bool:
    return not os.path.lexists(f"{path}{LOCK_SUFFIX}")


def _sweep_claimed(lock: Path) -> bool:
    try:
        fd = os.open(lock, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False  # its request is running
        if not same_file(fd, lock, follow=False):
            return False  # its owner finished meanwhile
        _remove(Path(str(lock).removesuffix(LOCK_SUFFIX)))
        os.unlink(lock)
        return True
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    """Remove a file, link or folder tree at ``path``, never following a link."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
