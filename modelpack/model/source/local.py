"""Walk a local model directory into the list of files to package.

Subfolders are kept (``1_Pooling/config.json``); VCS and OS litter is
skipped; symlinks are followed and packaged as the files they point to (an
HF cache snapshot is all symlinks into ``blobs/``); Git LFS pointer files
are refused, because packaging a pointer as weights ships a broken model.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ...errors import FileNotFoundInSourceError, SourceError
from .classify import is_skipped

LFS_POINTER_PREFIX = b"version https://git-lfs.github.com/spec/v1"
LFS_POINTER_MAX_SIZE = 1024


@dataclass(frozen=True)
class SourceFile:
    """One regular file of the model, as it will be packaged."""

    relpath: str  # POSIX, relative to the model root; becomes org.cncf.model.filepath
    path: Path  # where to read the bytes (symlinks resolved)
    size: int
    mode: int  # permission bits only
    mtime: float


def _matches_any(relpath: str, name: str, patterns: Iterable[str]) -> bool:
    """True if ``relpath`` or its base ``name`` matches one of ``patterns``."""
    return any(fnmatch.fnmatchcase(relpath, p) or fnmatch.fnmatchcase(name, p) for p in patterns)


def is_lfs_pointer(path: Path, size: int) -> bool:
    if size > LFS_POINTER_MAX_SIZE:
        return False
    with open(path, "rb") as f:
        return f.read(len(LFS_POINTER_PREFIX)) == LFS_POINTER_PREFIX


def scan_directory(
    root: str | os.PathLike[str], exclude: Iterable[str] = (), include: Iterable[str] = ()
) -> list[SourceFile]:
    """All packageable files below ``root``, sorted by relative path; with
    ``include`` globs, only files matching one of them."""
    root_path = Path(root)
    if not root_path.exists():
        raise FileNotFoundInSourceError(f"model directory {root_path} does not exist")
    if not root_path.is_dir():
        raise SourceError(f"{root_path} is not a directory", hint="pass the model's folder")
    patterns = tuple(exclude)
    wanted = tuple(include)
    files: list[SourceFile] = []
    visited_dirs: set[tuple[int, int]] = set()

    def walk(directory: Path, prefix: str) -> None:
        st_dir = directory.stat()
        key = (st_dir.st_dev, st_dir.st_ino)
        if key in visited_dirs:  # a symlink loop; each real folder is walked once
            return
        visited_dirs.add(key)
        for entry in sorted(os.scandir(directory), key=lambda e: e.name):
            relpath = f"{prefix}{entry.name}"
            if is_skipped(entry.name) or _matches_any(relpath, entry.name, patterns):
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except FileNotFoundError:
                raise SourceError(
                    f"{relpath} is a broken symlink",
                    hint="fetch the file it points to, or --exclude it",
                ) from None
            if stat.S_ISDIR(st.st_mode):
                walk(Path(entry.path), f"{relpath}/")
            elif stat.S_ISREG(st.st_mode):
                if wanted and not _matches_any(relpath, entry.name, wanted):
                    continue  # (_excluded is "matches any glob")
                path = Path(os.path.realpath(entry.path))
                files.append(
                    SourceFile(
                        relpath=relpath,
                        path=path,
                        size=st.st_size,
                        mode=stat.S_IMODE(st.st_mode),
                        mtime=st.st_mtime,
                    )
                )
            else:
                raise SourceError(
                    f"{relpath} is not a regular file (device, socket or FIFO)",
                    hint="remove it or --exclude it",
                )

    walk(root_path, "")
    pointers = [f.relpath for f in files if is_lfs_pointer(f.path, f.size)]
    if pointers:
        shown = ", ".join(pointers[:3]) + (
            f" and {len(pointers) - 3} more" if len(pointers) > 3 else ""
        )
        raise SourceError(
            f"{root_path}: {len(pointers)} file(s) are Git LFS pointers, not content: {shown}",
            hint="run `git lfs pull` in the repository first",
        )
    if not files:
        raise SourceError(
            f"{root_path} has no files to package", hint="check --exclude / --include"
        )
    return files
