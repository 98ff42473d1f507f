"""What a pull may replace in the directory it writes into: the one check, made twice.

Before the first byte, with the files the manifest names (raw layers: a file
of another size is certainly replaced), and again at commit, with every file
and folder that was staged (tar members too), compared byte for byte.  A file
already holding exactly the artifact's bytes is not an overwrite, so pulling
the same artifact again into the same directory keeps working.  A link, or a
file where the artifact needs a folder, is in the way and is never followed.
An existing directory must also hold nothing but the artifact's own names
(a user's ``notes.txt`` would otherwise end up mixed into the model), except
``lost+found`` (a fresh volume) and our own staging entries; ``force`` merges.
"""

from __future__ import annotations

import filecmp
import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DestinationConflictError


@dataclass(frozen=True)
class Planned:
    """A path a pull will write: ``same(existing)`` says whether a regular file already there
    holds (or may hold, before the pull) the same bytes; ``same`` None means a folder."""

    relpath: PurePosixPath
    same: Callable[[Path], bool] | None = None


def sized(relpath: PurePosixPath, size: int) -> Planned:
    """Before the pull: only a file of another size is certainly different."""
    return Planned(relpath, lambda existing: existing.stat().st_size == size)


def staged(relpath: PurePosixPath, source: Path) -> Planned:
    """At commit: the staged file against the one in place, byte for byte."""
    return Planned(relpath, lambda existing: filecmp.cmp(source, existing, shallow=False))


def check_destination(destination: Path, planned: Iterable[Planned], *, force: bool) -> None:
    """Refuse, before anything is moved, a pull that would replace something in ``destination``."""
    if force or not destination.is_dir():
        return
    planned = list(planned)
    clashes = [path for item in planned if (path := _in_the_way(destination, item)) is not None]
    if clashes:
        more = f" and {len(clashes) - 1} more" if len(clashes) > 1 else ""
        raise DestinationConflictError(
            f"refusing to overwrite {clashes[0]}{more}: the artifact has other content there",
            hint="pass --force (force=True) to replace it, or pull into an empty directory",
        )
    foreign = _foreign_entries(destination, {item.relpath.parts[0] for item in planned})
    if foreign:
        more = f" and {len(foreign) - 1} more" if len(foreign) > 1 else ""
        raise DestinationConflictError(
            f"{destination} is not empty: it holds {foreign[0]}{more}, which the artifact "
            "does not have",
            hint="pull into an empty or new directory, or pass --force to merge into this one",
        )


# Entries an existing directory may hold besides the artifact: a fresh filesystem's
# lost+found, and our own staging folder and its lock while a pull runs.
_ALLOWED = ("lost+found",)
# Where a pull stages its files (``.modelpack-staging-NAME`` beside, or
# ``.modelpack-staging`` inside, the destination); shared with unpack and the cache.
STAGING_PREFIX = ".modelpack-staging-"


def _foreign_entries(destination: Path, names: set[str]) -> list[str]:
    return sorted(
        entry.name
        for entry in os.scandir(destination)
        if entry.name not in names
        and entry.name not in _ALLOWED
        and not entry.name.startswith(STAGING_PREFIX.rstrip("-"))
    )


def _in_the_way(destination: Path, item: Planned) -> Path | None:
    """What writing ``item`` would replace in ``destination``, or None."""
    parts = item.relpath.parts
    folders = parts if item.same is None else parts[:-1]
    current = destination
    for part in folders:
        current = current / part
        mode = _lmode(current)
        if mode is None:
            return None  # nothing there: the rest of the path is new too
        if not stat.S_ISDIR(mode):
            return current  # a file or a link where a folder goes
    if item.same is None:
        return None
    target = current / parts[-1]
    mode = _lmode(target)
    if mode is None or (stat.S_ISREG(mode) and item.same(target)):
        return None
    return target


def _lmode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except FileNotFoundError:
        return None
