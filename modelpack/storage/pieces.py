"""Parallel ranged downloads of one big blob: the destination side.

The pieces (:mod:`modelpack.oci.pieces`) are written at their offsets into one
file of the blob's size (sparse until filled), and each finished piece is
recorded in a journal beside it (``PARTIAL.pieces``), so a pull killed even with
SIGKILL fetches only the pieces the journal lacks.  A hasher thread follows the
finished pieces in order (from the page cache), so the one digest of the blob
is checked moments after the last byte arrives, not after a second full read.
Nothing is handed back, and the partial file and journal are deleted, unless
the whole hashes to the digest.

A file with a journal is not a prefix: :func:`settle_to_prefix` turns it into
one (the pieces up to the first gap) before a single stream appends to it.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import BinaryIO

from ..errors import IntegrityError, RangeIgnoredError, TransferInterruptedError
from ..oci.digests import CHUNK_SIZE, new_hasher
from ..oci.pieces import PieceSource, piece_bounds
from ..oci.spec import Descriptor

BORROW_WAIT = 0.2  # seconds a helper waits for a free connection before it looks again
_datasync = getattr(os, "fdatasync", os.fsync)  # macOS has no fdatasync


def journal_path(partial: Path) -> Path:
    return partial.with_name(partial.name + ".pieces")


class PieceJournal:
    """Which pieces of ``partial`` hold their bytes: a header line, then one index a line.

    Appended as each piece finishes; a torn last line (a kill mid-write) is ignored,
    and a header for another blob or piece size voids the journal.
    """

    def __init__(self, partial: Path, desc: Descriptor, piece_size: int) -> None:
        self.path = journal_path(partial)
        self.header = json.dumps(
            {"digest": desc.digest, "size": desc.size, "piece": piece_size}, sort_keys=True
        )
        self._lock = threading.Lock()

    def load(self) -> set[int] | None:
        """The finished pieces, or None when there is no journal for this blob and size."""
        try:
            lines = self.path.read_text(encoding="ascii", errors="replace").split("\n")
        except FileNotFoundError:
            return None
        if lines[0] != self.header:
            return None
        return {int(line) for line in lines[1:-1] if line.isdigit()}  # the last is torn or ""

    def start(self, done: set[int]) -> None:
        text = self.header + "\n" + "".join(f"{i}\n" for i in sorted(done))
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(text, encoding="ascii")
        os.replace(tmp, self.path)

    def record(self, index: int) -> None:
        with self._lock, open(self.path, "a", encoding="ascii") as f:
            f.write(f"{index}\n")

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def settle_to_prefix(partial: Path) -> None:
    """Make a pieced partial file a plain prefix (the pieces before the first gap)."""
    journal = journal_path(partial)
    try:
        lines = journal.read_text(encoding="ascii", errors="replace").split("\n")
    except FileNotFoundError:
        return
    kept = 0
    try:
        header = json.loads(lines[0])
        piece, size = int(header["piece"]), int(header["size"])
        done = {int(line) for line in lines[1:-1] if line.isdigit()}
        while kept // piece in done and kept < size:
            kept = min(kept + piece, size)
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        kept = 0
    with contextlib.suppress(FileNotFoundError):
        os.truncate(partial, kept)
    journal.unlink()


class _Hasher(threading.Thread):
    """Hashes finished pieces in order, reading them back from the file."""

    def __init__(self, fd: int, desc: Descriptor, bounds: list[tuple[int, int]]) -> None:
        super().__init__(daemon=True, name="piece-hasher")
        self.fd, self.bounds = fd, bounds
        self.hasher = new_hasher(desc.digest)
        self.count = 0
        self.done: set[int] = set()
        self.stopped = False
        self.error: BaseException | None = None
        self.cond = threading.Condition()

    def finished(self, index: int) -> None:
        with self.cond:
            self.done.add(index)
            self.cond.notify()

    def stop(self) -> None:
        with self.cond:
            self.stopped = True
            self.cond.notify()

    def run(self) -> None:
        try:
            for index, (start, end) in enumerate(self.bounds):
                with self.cond:
                    while index not in self.done and not self.stopped:
                        self.cond.wait()
                    if index not in self.done:
                        return
                offset = start
                while offset < end:
                    data = os.pread(self.fd, min(CHUNK_SIZE, end - offset), offset)
                    if not data:
                        raise IntegrityError(f"piece at {offset} is shorter than recorded")
                    self.hasher.update(data)
                    offset += len(data)
                    self.count += len(data)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            self.error = exc


class _Download:
    """One ranged fill: the pieces still missing, taken by whichever thread is free."""

    def __init__(self, fd: int, source: PieceSource, journal: PieceJournal, hasher: _Hasher,
                 missing: list[int], bounds: list[tuple[int, int]], durable: bool) -> None:  # fmt: skip
        self.fd, self.source, self.journal, self.hasher = fd, source, journal, hasher
        self.bounds, self.durable = bounds, durable
        self.missing = list(reversed(missing))  # pop() takes the lowest first
        self.lock = threading.Lock()
        self.failed = threading.Event()
        self.errors: list[BaseException] = []

    def next_piece(self) -> int | None:
        with self.lock:
            if self.failed.is_set() or not self.missing:
                return None
            return self.missing.pop()

    def more(self) -> bool:
        with self.lock:
            return bool(self.missing) and not self.failed.is_set()

    def fetch(self, index: int, stream: BinaryIO | None = None) -> None:
        """Piece ``index`` into the file, from ``stream`` when it is open already."""
        start, end = self.bounds[index]
        with contextlib.ExitStack() as stack:
            if stream is None:
                stream = stack.enter_context(self.source.piece(start, end))
            offset = start
            while offset < end:
                if self.failed.is_set():
                    raise _Stopped
                data = stream.read(min(CHUNK_SIZE, end - offset))
                if not data:
                    raise TransferInterruptedError(
                        f"blob {self.source.desc.digest}: piece {start}-{end} ended at {offset}"
                    )
                offset += os.pwrite(self.fd, data, offset)
        if self.durable:
            _datasync(self.fd)  # the bytes first, then the record that they are there
        self.journal.record(index)
        self.hasher.finished(index)

    def run_one(self, index: int, stream: BinaryIO | None = None) -> bool:
        """Fetch one piece; False (the error kept, the others told) when it failed."""
        try:
            self.fetch(index, stream)
            return True
        except _Stopped:
            return False
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller
            with self.lock:
                self.errors.append(exc)
            self.failed.set()
            return False

    def work(self) -> None:
        """Fetch pieces until none are left or a thread failed."""
        while (index := self.next_piece()) is not None and self.run_one(index):
            pass

    def helper(self) -> None:
        """A second (third...) connection: only while the budget has one free."""
        while self.more():
            if not self.source.budget.borrow(BORROW_WAIT):
                continue
            try:
                index = self.next_piece()
                if index is None or not self.run_one(index):
                    return
            finally:
                self.source.budget.give_back()


def _run(
    download: _Download,
    source: PieceSource,
    bounds: list[tuple[int, int]],
    done: set[int],
    missing: list[int],
) -> bool:
    """Fetch the missing pieces; False when the first answer shows no Range support."""
    try:
        with contextlib.ExitStack() as first_piece:
            first = download.next_piece()
            if first is not None:  # its answer shows whether the server does ranges
                try:
                    stream = first_piece.enter_context(source.piece(*bounds[first]))
                except RangeIgnoredError:
                    download.failed.set()
                    return False
            already = sum(end - start for i, (start, end) in enumerate(bounds) if i in done)
            if already:
                source.on_resumed(already)  # there before: not this run's bytes
            helpers = [
                threading.Thread(target=download.helper, daemon=True, name=f"piece-{n}")
                for n in range(min(source.budget.slots - 1, len(missing) - 1))
            ]
            for thread in helpers:
                thread.start()
            if first is not None:
                download.run_one(first, stream)
        download.work()
        for thread in helpers:
            thread.join()
    except BaseException:
        download.failed.set()
        raise
    return True


class _Stopped(Exception):  # noqa: N818 - control flow between the threads
    pass


def fill_pieces(
    partial: Path, desc: Descriptor, source: PieceSource, what: str, *, durable: bool
) -> bool:
    """Complete ``partial`` from parallel pieces; False when the server ignores Range
    (the file is then a plain prefix again, for one stream to finish).

    The caller holds one connection of ``source.budget``; more are borrowed while free.
    """
    bounds = piece_bounds(desc.size, source.piece_size)
    journal = PieceJournal(partial, desc, source.piece_size)
    done = journal.load()
    if done is not None and not partial.exists():  # the journal outlived its file
        journal.remove()
        done = None
    if done is None:  # none, or another blob's: what the file holds is a prefix
        settle_to_prefix(partial)
        have = partial.stat().st_size if partial.exists() else 0
        if have > desc.size:
            have = 0
        done = {i for i, (_, end) in enumerate(bounds) if end <= have}
        journal.start(done)
    fd = os.open(partial, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if os.fstat(fd).st_size != desc.size:
            os.ftruncate(fd, desc.size)  # sparse: the space check counts blocks, not size
        missing = [i for i in range(len(bounds)) if i not in done]
        hasher = _Hasher(fd, desc, bounds)
        for index in done:
            hasher.finished(index)
        hasher.start()
        download = _Download(fd, source, journal, hasher, missing, bounds, durable)
        try:
            ranged = _run(download, source, bounds, done, missing)
        finally:
            if download.failed.is_set():
                hasher.stop()
            hasher.join()
        if download.errors and isinstance(download.errors[0], RangeIgnoredError):
            ranged = False  # only some answers were 206: one stream finishes it
        elif download.errors:
            raise download.errors[0]
        if not ranged:
            os.close(fd)
            fd = -1
            settle_to_prefix(partial)
            return False
        if hasher.error is not None:
            raise hasher.error
        if durable:
            os.fsync(fd)
    finally:
        if fd >= 0:
            os.close(fd)
    actual = f"{hasher.hasher.name}:{hasher.hasher.hexdigest()}"
    if hasher.count != desc.size or actual != desc.digest:
        partial.unlink()
        journal.remove()
        raise IntegrityError(
            f"{what}: digest mismatch (expected {desc.digest}, got {actual}) "
            f"after a download in {len(bounds)} pieces"
        )
    journal.remove()
    return True
