"""The parts of ranged downloads that need no server: when they apply, the journal a
killed pull leaves, turning a pieced file back into a prefix, the space check."""

import os

from modelpack.oci.pieces import RangedPolicy, piece_bounds
from modelpack.oci.spec import Descriptor
from modelpack.storage.diskspace import missing_bytes
from modelpack.storage.pieces import PieceJournal, journal_path, settle_to_prefix

DESC = Descriptor("application/octet-stream", "sha256:" + "ab" * 32, 14)


def test_ranged_applies_to_big_blobs_with_a_second_connection():
    policy = RangedPolicy(min_size=10, piece_size=4)
    assert policy.applies(14, concurrency=2)
    assert not policy.applies(14, concurrency=1)  # no second connection to use
    assert not policy.applies(9, concurrency=4)  # below the threshold
    assert not RangedPolicy(1, 4).applies(4, concurrency=4)  # one piece: nothing to split
    assert not RangedPolicy(None, 4).applies(1 << 40, 8)
    assert piece_bounds(14, 4) == [(0, 4), (4, 8), (8, 12), (12, 14)]


def test_the_journal_ignores_a_torn_line_and_another_blobs_header(tmp_path):
    partial = tmp_path / "partial"
    journal = PieceJournal(partial, DESC, 4)
    assert journal.load() is None
    journal.start({0})
    journal.record(2)
    with open(journal_path(partial), "a") as f:
        f.write("3")  # killed mid-line
    assert journal.load() == {0, 2}
    assert PieceJournal(partial, DESC, 8).load() is None  # another piece size


def test_settle_to_prefix_keeps_the_pieces_before_the_first_gap(tmp_path):
    partial = tmp_path / "partial"
    partial.write_bytes(b"x" * 14)
    journal = PieceJournal(partial, DESC, 4)
    journal.start({0, 1, 3})
    settle_to_prefix(partial)
    assert partial.stat().st_size == 8
    assert not journal_path(partial).exists()
    settle_to_prefix(partial)  # no journal: a prefix already, left alone
    assert partial.stat().st_size == 8


def test_the_space_check_counts_a_sparse_file_by_its_blocks(tmp_path):
    partial = tmp_path / "partial"
    size = 64 * 1024 * 1024
    with open(partial, "wb") as f:
        f.truncate(size)  # as a ranged download preallocates it
        f.write(b"y" * 4096)
    desc = Descriptor("application/octet-stream", DESC.digest, size)
    assert partial.stat().st_size == size
    needed = missing_bytes([desc], lambda d: partial)
    assert size - 1024 * 1024 <= needed < size
    os.unlink(partial)
    assert missing_bytes([desc], lambda d: partial) == size
