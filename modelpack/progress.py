"""Progress hooks: the library reports, the CLI renders (rich bars or log lines).

Implementations must be thread-safe: transfers report from worker threads.
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    def start(self, key: str, label: str, total: int) -> None:
        """A unit of work (one layer) begins; ``total`` bytes are expected."""
        ...

    def advance(self, key: str, amount: int) -> None: ...

    def finish(self, key: str, *, note: str = "") -> None:
        """The unit is done; ``note`` says how ("exists", "mounted", "linked"...)."""
        ...


class NullProgress:
    """Reports nowhere; the default for library calls."""

    def start(self, key: str, label: str, total: int) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        pass

    def finish(self, key: str, *, note: str = "") -> None:
        pass
