"""Locks that NFS accepts, and a node cache refused on a network filesystem."""

import errno
import fcntl
import os

import pytest

import modelpack
from modelpack.errors import UsageError
from modelpack.settings import Settings
from modelpack.storage import _fsutil
from modelpack.storage._locks import directory_lock, file_lock
from modelpack.storage.cache import NodeCache

RAW = "application/vnd.cncf.model.weight.v1.raw"


@pytest.fixture
def nfs_flock(monkeypatch):
    """flock as NFS does it: a POSIX write lock, refused on a read-only descriptor."""
    real = fcntl.flock

    def flock(fd, operation):
        read_only = fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        if operation & fcntl.LOCK_EX and read_only:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", flock)


def test_directory_lock_works_where_flock_is_a_posix_lock(tmp_path, nfs_flock):
    staging = tmp_path / ".modelpack-staging-x"
    with directory_lock(staging):
        assert staging.is_dir()
        with file_lock(tmp_path / "other.lock", blocking=False) as held:
            assert held
    assert sorted(p.name for p in tmp_path.iterdir()) == [".modelpack-staging-x", "other.lock"]


def test_pull_into_a_directory_where_flock_is_a_posix_lock(tmp_path, nfs_flock):
    from support.helpers import make_artifact

    from modelpack.oci.copy import copy_graph
    from modelpack.oci.spec import ANNOTATION_FILEPATH
    from modelpack.storage.store import LayoutStore
    from modelpack.storage.unpack import DirectoryTarget

    store = LayoutStore(tmp_path / "store")
    make_artifact(store, "x", [(RAW, b"w", {ANNOTATION_FILEPATH: "w"})])
    with DirectoryTarget(tmp_path / "out") as directory:
        copy_graph(store, "x", directory, None)
    assert (tmp_path / "out" / "w").read_bytes() == b"w"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "store"]  # no lock left


MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /mnt/shared rw,relatime shared:20 - nfs4 filer:/export rw,vers=4.2
41 40 8:2 / /mnt/shared/local\\040disk rw shared:21 - xfs /dev/sdb1 rw
42 22 0:51 / /home/me/remote rw - fuse.sshfs me@host:/ rw
"""


@pytest.fixture
def fake_mounts(tmp_path, monkeypatch):
    path = tmp_path / "mountinfo"
    path.write_text(MOUNTINFO)
    monkeypatch.setattr(_fsutil, "MOUNTINFO", path)


@pytest.mark.parametrize(
    ("home", "fstype"),
    [
        ("/mnt/shared/modelpack", "nfs4"),
        ("/mnt/shared", "nfs4"),
        ("/mnt/shared/local disk/modelpack", "xfs"),
        ("/mnt/sharedx", "ext4"),
        ("/home/me/remote/x", "fuse.sshfs"),
    ],
)
def test_filesystem_type_is_the_longest_mount_prefix(fake_mounts, home, fstype):
    assert _fsutil.filesystem_type(home) == fstype


def test_a_node_cache_on_nfs_is_refused_with_the_fix(fake_mounts):
    settings = Settings(home="/mnt/shared/modelpack")
    with pytest.raises(UsageError) as caught:
        NodeCache(settings)
    assert caught.value.exit_code == 2
    assert "/mnt/shared/modelpack is on a network filesystem (nfs4)" in str(caught.value)
    assert "local disk" in caught.value.hint
    with pytest.raises(UsageError, match="network filesystem"):
        modelpack.cache_list(settings=Settings(home="/home/me/remote/mp"))
    assert not os.path.exists("/mnt/shared/modelpack")  # refused before anything is made


def test_the_cli_refuses_a_home_on_nfs_in_one_line(fake_mounts, monkeypatch, capsys):
    from modelpack_cli.main import main

    monkeypatch.setenv("MODELPACK_HOME", "/mnt/shared/modelpack")
    with pytest.raises(SystemExit) as caught:
        main(["cache", "ls"])
    assert caught.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "network filesystem (nfs4)" in err[0] and "local disk" in err[0]
