"""Progress hooks: the library reports, the CLI renders (rich bars or log lines).

Implementations must be thread-safe: transfers report from worker threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import BinaryIO, Protocol, runtime_checkable


class Progress(Protocol):
    def start(self, key: str, label: str, total: int) -> None:
        """A unit of work (one layer) begins; ``total`` bytes are expected."""
        ...

    def advance(self, key: str, amount: int) -> None: ...

    def finish(self, key: str, *, note: str = "") -> None:
        """The unit is done; ``note`` says how ("exists", "mounted", "linked"...)."""
        ...


@runtime_checkable
class PlannedProgress(Protocol):
    """Optional: told up front what a copy will move, so the first frame shows the whole
    size, and which bytes a resumed transfer already had, so rates stay honest."""

    def expect(self, units: list[tuple[str, int]]) -> None:
        """``(key, total)`` of every unit about to start, before the first one does."""
        ...

    def resumed(self, key: str, already: int) -> None:
        """``already`` bytes of ``key`` were there from an earlier attempt: not transferred."""
        ...


class ProgressDisplay(Progress, Protocol):
    """A Progress that draws while it is entered (``with display:``): bars or log lines."""

    def __enter__(self) -> ProgressDisplay: ...

    def __exit__(self, *exc: object) -> None: ...


class NullProgress:
    """Reports nowhere; the default for library calls."""

    def start(self, key: str, label: str, total: int) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        pass

    def finish(self, key: str, *, note: str = "") -> None:
        pass


class ReportingReader:
    """Wraps a byte stream and reports how many bytes each read returned."""

    def __init__(self, stream: BinaryIO, on_bytes: Callable[[int], None]) -> None:
        self._stream = stream
        self._on_bytes = on_bytes

    def read(self, n: int = -1) -> bytes:
        data = self._stream.read(n)
        if data:
            self._on_bytes(len(data))
        return data

    def readable(self) -> bool:
        return True
