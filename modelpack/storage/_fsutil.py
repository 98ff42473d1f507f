"""Small filesystem primitives: atomic writes, zero-copy file placement, the
filesystem a path lives on."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import stat
import tempfile
from enum import StrEnum
from pathlib import Path

from ..errors import UsageError

FICLONE = 0x40049409  # linux/fs.h: _IOW(0x94, 9, int)


class Placement(StrEnum):
    """How a file's bytes got to their new path."""

    REFLINK = "reflink"  # copy-on-write clone: shares blocks, not the inode
    HARDLINK = "hardlink"  # same inode: zero bytes written, edits are shared
    COPY = "copy"


def atomic_write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """Write ``data`` so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    fsync_directory(path.parent)  # the rename itself survives a power cut


def fsync_directory(path: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems refuse O_RDONLY dir fsync
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_NO_REFLINK: set[int] = set()  # devices where FICLONE failed once: do not try again


def reflink(src: Path, dst: Path) -> bool:
    """Clone ``src`` to the new file ``dst`` copy-on-write; False where unsupported."""
    try:
        device = os.stat(src).st_dev
    except OSError:
        return False
    if device in _NO_REFLINK:
        return False
    try:
        with open(src, "rb") as fin, open(dst, "xb") as fout:
            try:
                fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
                return True
            except OSError:
                _NO_REFLINK.add(device)
        os.unlink(dst)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(dst)
    return False


def place_file(src: Path, dst: Path, *, allow_hardlink: bool) -> Placement:
    """Put ``src``'s bytes at the new path ``dst`` writing as little as possible.

    Reflink first (safe: later edits to either side stay separate), then a
    hardlink if the caller accepts shared edits, then a kernel-side copy.
    """
    if reflink(src, dst):
        return Placement.REFLINK
    if allow_hardlink:
        try:
            os.link(src, dst)
            return Placement.HARDLINK
        except OSError:
            pass
    shutil.copyfile(src, dst)
    return Placement.COPY


def default_dir_mode(where: Path) -> int:
    """The mode ``mkdir`` gives a new folder in ``where`` (0777 less the umask), read
    from a probe folder: changing the umask to read it would race other threads."""
    probe = Path(tempfile.mkdtemp(dir=where))  # mkdtemp is 0700 whatever the umask
    try:
        inner = probe / "mode"
        inner.mkdir()
        return stat.S_IMODE(inner.stat().st_mode)
    finally:
        remove_tree(probe)


def private_folder(path: Path) -> bool | None:
    """Whether ``path`` is a real folder (not a link) of this user with no group or other
    access, as we make staging folders (git makes none such); None if nothing is there."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return None
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and stat.S_IMODE(info.st_mode) & 0o077 == 0
    )


def remove_entry(path: Path) -> None:
    """Remove what is at ``path`` (a file, a link or a directory tree) without following a link."""
    if path.is_dir() and not path.is_symlink():
        remove_tree(path)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_tree(path: Path) -> None:
    """Remove a directory we created, including read-only files inside it.

    A link at ``path`` is removed itself; nothing is ever removed through a link.
    """
    if path.is_symlink():
        path.unlink()
        return

    def _make_writable(func, target, _exc):  # noqa: ANN001 - shutil's callback shape
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(target), 0o755)
            os.chmod(target, 0o644)
        func(target)

    if path.exists() or path.is_symlink():
        shutil.rmtree(path, onerror=_make_writable)


MOUNTINFO = Path("/proc/self/mountinfo")
# Filesystems whose flock and SQLite locking cannot be trusted between processes.
NETWORK_FILESYSTEMS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "afs", "ceph", "glusterfs", "lustre", "9p"}
    | {f"fuse.{name}" for name in ("sshfs", "s3fs", "gcsfuse", "rclone", "glusterfs", "ceph")}
)


def _unescape_mount_path(field: str) -> str:
    """mountinfo writes space, tab, newline and backslash as octal escapes."""
    for code in ("040", "011", "012", "134"):
        field = field.replace(f"\\{code}", chr(int(code, 8)))
    return field


def filesystem_type(path: Path, mountinfo: Path | None = None) -> str | None:
    """The type of the filesystem ``path`` (or its nearest existing parent) is on."""
    try:
        lines = (mountinfo or MOUNTINFO).read_text().splitlines()
    except OSError:
        return None
    target = os.path.realpath(path)
    best, fstype = "", None
    for line in lines:
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if not sep or len(fields) < 5 or not right.split():
            continue
        point = _unescape_mount_path(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the last of stacked mounts wins
            best, fstype = point, right.split()[0]
    return fstype


def require_local_disk(path: Path, what: str) -> None:
    """Refuse a node cache on a network filesystem, whose locks it cannot rely on."""
    fstype = filesystem_type(path)
    if fstype in NETWORK_FILESYSTEMS:
        raise UsageError(
            f"{what} {path} is on a network filesystem ({fstype}): the node cache's "
            "locks and SQLite index need a local disk",
            hint="set MODELPACK_HOME (or --home) to a directory on a local disk; "
            "`modelpack pull -o DIR` writes a model anywhere, shared storage included",
        )
