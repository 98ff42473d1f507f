"""Bounds on what an untrusted artifact may make modelpack read, hold or write.

A registry or an artifact author chooses manifest sizes, layer counts and
how far a compressed layer expands; these limits keep a hostile choice from
exhausting memory or disk.  Each has an environment override for the rare
legitimate artifact beyond it (docs/security.md).  The disk-space side (checks
before a transfer, ENOSPC as one error) is ``modelpack.storage.diskspace``.
"""

from __future__ import annotations

import os

from ..errors import UsageError

# Manifests and configs are read whole into memory; anything larger is hostile.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
# One layer per file: 10,000 is far beyond any model repository (a 4 MiB manifest
# holds ~16,000 descriptors at most), and bounds threads, files and index size.
DEFAULT_MAX_LAYERS = 10_000
# A gzip/zstd tar layer may expand to this many times its compressed size when
# its file metadata does not declare the size (zeros compress ~1000x, models ~1.1x).
DEFAULT_MAX_EXPANSION = 100
EXPANSION_FLOOR = 64 * 1024 * 1024  # small layers (a few text files) never hit the ratio


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
