"""Bounds on what an untrusted artifact may make modelpack read, hold or write.

A registry or an artifact author chooses manifest sizes, layer counts and
how far a compressed layer expands; these limits keep a hostile choice from
exhausting memory or disk.  Each has an environment override for the rare
legitimate artifact beyond it (docs/security.md).  Disk space is checked
before a transfer starts, and a disk that fills anyway becomes one
:class:`~modelpack.errors.DiskFullError` instead of an ``OSError`` traceback.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import DiskFullError, UsageError

if TYPE_CHECKING:  # spec imports this module
    from .spec import Descriptor

# Manifests and configs are read whole into memory; anything larger is hostile.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# One layer per file: 10,000 is far beyond any model repository (a 4 MiB manifest
# holds ~16,000 descriptors at most), and bounds threads, files and index size.
DEFAULT_MAX_LAYERS = 10_000
# A gzip/zstd tar layer may expand to this many times its compressed size when
# its file metadata does not declare the size (zeros compress ~1000x, models ~1.1x).
DEFAULT_MAX_EXPANSION = 100
EXPANSION_FLOOR = 64 * 1024 * 1024  # small layers (a few text files) never hit the ratio
# Left free on a filesystem after a transfer, for the system to keep running:
# 5% of the filesystem, at most 64 MiB.
SPACE_RESERVE = 64 * 1024 * 1024

_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise UsageError(f"{name}={value!r} is not a whole number") from None
    if number < 1:
        raise UsageError(f"{name} must be at least 1")
    return number


def max_layers() -> int:
    return _env_int("MODELPACK_MAX_LAYERS", DEFAULT_MAX_LAYERS)


def max_unpacked_bytes(compressed_size: int, declared_size: int | None) -> int:
    """How many file bytes one compressed tar layer may produce."""
    if declared_size is not None:
        return declared_size
    ratio = _env_int("MODELPACK_MAX_EXPANSION", DEFAULT_MAX_EXPANSION)
    return max(compressed_size * ratio, EXPANSION_FLOOR)


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


def missing_bytes(blobs: Iterable[Descriptor], partial_path: Callable[[Descriptor], Path]) -> int:
    """Bytes still to arrive for ``blobs``, less what earlier partial downloads hold."""
    needed = 0
    for desc in {b.digest: b for b in blobs}.values():
        try:
            have = partial_path(desc).stat().st_size
        except FileNotFoundError:
            have = 0
        needed += max(desc.size - have, 0)
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
