"""Parallel ranged downloads of one big blob: the source side.

Object stores behind registries (S3 or GCS presigned redirects, CDNs) cap what
one connection carries, so a big blob comes faster as several ``Range``
requests at once.  This module decides when that is done (:class:`RangedPolicy`),
bounds the connections a whole copy uses (:class:`ConnectionBudget`: the layers
and the pieces of a layer share ``--concurrency``, it is never squared), and
hands a destination a :class:`PieceSource`: an ordinary ``opener(offset)`` that
can also fetch pieces.  Writing pieces into a file, recording them for a resume
and verifying the whole is the destination's part
(:mod:`modelpack.storage.pieces`).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from ..progress import ReportingReader
from ..settings import Settings, default_piece_size, default_ranged_min
from .spec import Descriptor
from .target import Opener, PieceFetcher


@dataclass(frozen=True)
class RangedPolicy:
    """From which size a blob is split, and into pieces of how many bytes."""

    min_size: int | None  # None or 0: never
    piece_size: int

    def applies(self, size: int, concurrency: int) -> bool:
        """Worth it only with a second connection to use and more than one piece."""
        return (
            bool(self.min_size)
            and concurrency > 1
            and size >= (self.min_size or 0)
            and size > self.piece_size
        )

    @classmethod
    def of(cls, settings: Settings) -> RangedPolicy:
        return cls(settings.ranged_min, settings.piece_size)


def default_policy() -> RangedPolicy:
    """MODELPACK_RANGED_MIN and MODELPACK_RANGED_PIECE, for callers without Settings."""
    return RangedPolicy(default_ranged_min(), default_piece_size())


class ConnectionBudget:
    """At most ``slots`` blob connections open at once, across layers and pieces.

    Each blob transfer holds one slot; a ranged transfer borrows more while they are
    free, and gives each back after a piece so a waiting layer gets its turn.
    """

    def __init__(self, slots: int) -> None:
        self.slots = max(1, slots)
        self._free = threading.Semaphore(self.slots)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        self._free.acquire()
        try:
            yield
        finally:
            self._free.release()

    def borrow(self, timeout: float) -> bool:
        """Take a slot if one frees up within ``timeout`` seconds; :meth:`give_back` it."""
        return self._free.acquire(timeout=timeout)

    def give_back(self) -> None:
        self._free.release()


def piece_bounds(size: int, piece_size: int) -> list[tuple[int, int]]:
    """``[start, end)`` of each piece of a ``size``-byte blob."""
    return [(start, min(start + piece_size, size)) for start in range(0, size, piece_size)]


class PieceSource:
    """An ``opener(offset)`` (one stream, the fallback) that can also fetch pieces.

    ``on_bytes`` is told every byte that arrives (from any thread, serialised here),
    ``on_resumed`` the bytes already on disk from an earlier attempt.
    """

    def __init__(
        self,
        desc: Descriptor,
        source: PieceFetcher,
        opener: Opener,
        *,
        piece_size: int,
        budget: ConnectionBudget,
        on_bytes: Callable[[int], None],
        on_resumed: Callable[[int], None],
    ) -> None:
        self.desc = desc
        self.source = source
        self.opener = opener
        self.piece_size = piece_size
        self.budget = budget
        self.on_resumed = on_resumed
        self._on_bytes = on_bytes
        self._lock = threading.Lock()

    def __call__(self, offset: int) -> contextlib.AbstractContextManager[BinaryIO]:
        return self.opener(offset)

    def _report(self, n: int) -> None:
        with self._lock:
            self._on_bytes(n)

    @contextlib.contextmanager
    def piece(self, start: int, end: int) -> Iterator[BinaryIO]:
        """Bytes ``[start, end)``; RangeIgnoredError when the server sends the whole blob."""
        with self.source.fetch_range(self.desc, start, end) as stream:
            yield ReportingReader(stream, self._report)
