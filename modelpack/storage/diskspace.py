"""Disk space on this node: checked before a transfer starts, and a disk that fills
anyway becomes one :class:`~modelpack.errors.DiskFullError` instead of an ``OSError``
traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from ..errors import DiskFullError
from ..oci.spec import Descriptor

# Left free on a filesystem after a transfer, for the system to keep running:
# 5% of the filesystem, at most 64 MiB.
SPACE_RESERVE = 64 * 1024 * 1024

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _usage(path: Path):  # noqa: ANN202 - shutil's private named tuple
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return shutil.disk_usage(probe)


def _gb(n: int) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 10**8 else f"{n / 1e6:.1f} MB"


def require_space(path: Path, needed: int, what: str) -> None:
    """Fail before writing anything when ``needed`` bytes will not fit under ``path``."""
    if needed <= 0 or os.environ.get("MODELPACK_SKIP_SPACE_CHECK"):
        return
    usage = _usage(path)
    free = usage.free
    if needed + min(SPACE_RESERVE, usage.total // 20) > free:
        raise DiskFullError(
            f"not enough space for {what} in {path}: needs {_gb(needed)}, {_gb(free)} free",
            hint="free some space (`modelpack prune`, `modelpack cache prune`), "
            "pull fewer files with --include, or choose another directory",
        )


def held_bytes(path: Path) -> int:
    """The bytes a (partial) file holds: a ranged download's file is sparse, so its
    blocks, not its size, are what arrived.  0 when there is no such file; a link is
    not followed."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return 0
    return min(st.st_size, st.st_blocks * 512)


def missing_bytes(blobs: Iterable[Descriptor], partial_path: Callable[[Descriptor], Path]) -> int:
    """Bytes still to arrive for ``blobs``, less what earlier partial downloads hold."""
    needed = 0
    for desc in {b.digest: b for b in blobs}.values():
        needed += max(desc.size - held_bytes(partial_path(desc)), 0)
    return needed


@contextlib.contextmanager
def disk_full_errors(path: Path, what: str) -> Iterator[None]:
    """Turn ENOSPC/EDQUOT while writing under ``path`` into one clear error."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _NO_SPACE:
            raise
        raise DiskFullError(
            f"disk full while writing {what} under {path}",
            hint="free some space and run the command again; what arrived is kept and resumed",
        ) from exc
